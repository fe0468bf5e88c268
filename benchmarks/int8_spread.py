"""How stable INT8's speed-up is on this machine: FP32 against the default INT8 file, timed again and again.

    python benchmarks/int8_spread.py [--model s3f_edge/assets/default_model/model.keras]
        [--calib $S3F_EDGE_DATA/brain_tumor_mri/train] [--repeats 8] [--out benchmarks/results]

One matrix run gives one ratio per batch size; on a shared CPU the int8 kernels' latency moves more
than FP32's between minutes. This script exports the model to FP32 and INT8 with `s3f-edge export`'s
own function, then takes ``--repeats`` measurements, each the two
files timed in turns (runner.measure_in_turns), at batch 1 and 32, and reports every repeat's p50 and
the spread of the INT8 speed-up (lowest, median, highest). Writes int8_spread.json and .md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_files import write_results  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.testing import require_data  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "s3f_edge/assets/default_model/model.keras")
    parser.add_argument("--calib", type=Path, help="default: $S3F_EDGE_DATA/brain_tumor_mri/train")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per file and repeat")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.calib = args.calib or require_data("brain_tumor_mri/train", "--calib")

    from s3f_edge.bench.runner import measure_in_turns
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.export.precision import calibration_images
    from s3f_edge.runtime import load_predictor

    # The export itself (calibration sample, float nodes, parity gate), so the INT8 file is the one users get.
    scratch = Path(tempfile.mkdtemp(prefix="int8-spread-"))
    options = ExportOptions(out_dir=scratch, precision="int8", calib=args.calib, copy_calibration=True)  # timing only
    fp32_path = export_model(args.model, options).onnx_path
    fp32 = load_predictor(fp32_path, backend="onnx-cpu")
    int8 = load_predictor(scratch / "model.int8.onnx", backend="onnx-cpu")
    sample = calibration_images(args.calib, fp32.contract, 64, seed=1)  # timing input: real images

    rows = []
    for batch in (1, 32):
        data = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))
        for repeat in range(args.repeats):
            latencies, errors = measure_in_turns({"fp32": fp32.predict, "int8": int8.predict}, data, 0.5, args.seconds)
            if errors:
                raise SystemExit(f"a file failed while timed: {errors}")
            p50 = {name: float(np.median(values)) * 1e3 for name, values in latencies.items()}
            rows.append({"batch": batch, "repeat": repeat + 1, "fp32_p50_ms": round(p50["fp32"], 3),
                         "int8_p50_ms": round(p50["int8"], 3), "int8_speedup": round(p50["fp32"] / p50["int8"], 3)})
            print(rows[-1], flush=True)

    summary = {}
    for batch in (1, 32):
        ratios = [r["int8_speedup"] for r in rows if r["batch"] == batch]
        summary[str(batch)] = {"lowest": min(ratios), "median": float(np.median(ratios)), "highest": max(ratios)}
    result = {"date": time.strftime("%Y-%m-%d"), "model": args.model.name, "cpus": os.cpu_count(),
              "repeats": args.repeats, "rows": rows, "int8_speedup": summary}
    lines = [f"INT8 (export default) against FP32, {args.model.name}, ONNX Runtime CPU ({result['date']}, "
             f"{os.cpu_count()} CPUs): {args.repeats} repeats, each the two files timed in turns "
             f"(fastest of 3 rounds, {args.seconds:g} s per file).", "",
             "| batch | INT8 speed-up over FP32: lowest | median | highest | FP32 p50 ms, range | INT8 p50 ms, range |",
             "|---|---|---|---|---|---|"]
    for batch in (1, 32):
        mine = [r for r in rows if r["batch"] == batch]
        spread = summary[str(batch)]
        fp32_range = f"{min(r['fp32_p50_ms'] for r in mine):.1f}–{max(r['fp32_p50_ms'] for r in mine):.1f}"
        int8_range = f"{min(r['int8_p50_ms'] for r in mine):.1f}–{max(r['int8_p50_ms'] for r in mine):.1f}"
        lines.append(f"| {batch} | {spread['lowest']:.2f}× | {spread['median']:.2f}× | {spread['highest']:.2f}× | "
                     f"{fp32_range} | {int8_range} |")
    write_results(args.out, "int8_spread", result, lines)


if __name__ == "__main__":
    main()
