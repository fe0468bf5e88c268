"""What the out-of-distribution score costs at inference: the bundled model exported with and without it.

Both ONNX files come from the same trained weights (the calibrated model, and `uncalibrated` of it) and are
timed in turns in one process on the same real images (`measure_in_turns`), so the ratio is this machine's
and not its noise. The batch-32 ratio is the cost a throughput-bound deployment pays.

    .venv/bin/python benchmarks/ood_latency.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_files import write_results  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402

BATCHES = (1, 32)


def measure(seconds: float, repeats: int) -> dict:
    from s3f_edge.bench.runner import measure_in_turns
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import is_calibrated, uncalibrated
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.runtime import load_predictor
    from s3f_edge.runtime.parity import real_batch

    bundled = DEFAULT_MODEL_DIR / "model.keras"
    model = load_model(bundled)
    if not is_calibrated(model):
        raise SystemExit(f"{bundled} is not calibrated: nothing to compare")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        metadata = {k: v for k, v in read_metadata(bundled).items() if k != "calibration"}
        save_model_atomically(uncalibrated(model), scratch / "plain.keras", metadata)
        files = {"with ood_score": export_model(bundled, ExportOptions(out_dir=scratch / "scored")).onnx_path,
                 "without": export_model(scratch / "plain.keras", ExportOptions(out_dir=scratch / "plain")).onnx_path}
        predictors = {name: load_predictor(path, backend="onnx-cpu") for name, path in files.items()}
        pool = real_batch(predictors["without"].contract, None)
        rows = []
        for batch in BATCHES:
            data = np.ascontiguousarray(np.resize(pool, (batch, *pool.shape[1:])), np.float32)
            for repeat in range(repeats):
                latencies, errors = measure_in_turns({n: p.predict_scored for n, p in predictors.items()}, data, 0.5,
                                                     seconds)
                if errors:
                    raise SystemExit(f"a file failed while timed: {errors}")
                p50 = {name: float(np.median(values)) * 1e3 for name, values in latencies.items()}
                rows.append({"batch": batch, "repeat": repeat + 1, "without_ms": round(p50["without"], 3),
                             "with_ms": round(p50["with ood_score"], 3),
                             "ratio": round(p50["with ood_score"] / p50["without"], 4)})
    return {"date": time.strftime("%Y-%m-%d"), "model": "bundled default model (64x64)", "rows": rows}


def markdown(result: dict) -> str:
    lines = ["| Batch | p50 without ood_score (ms) | p50 with (ms) | with / without (median of repeats) |",
             "|---|---|---|---|"]
    for batch in BATCHES:
        rows = [r for r in result["rows"] if r["batch"] == batch]
        ratio = float(np.median([r["ratio"] for r in rows]))
        lines.append(f"| {batch} | {np.median([r['without_ms'] for r in rows]):.3f} | "
                     f"{np.median([r['with_ms'] for r in rows]):.3f} | {ratio:.3f} (range "
                     f"{min(r['ratio'] for r in rows):.3f}-{max(r['ratio'] for r in rows):.3f}) |")
    return "\n".join(lines) + (f"\n\n{result['model']}, ONNX Runtime on the CPU, both files timed in turns in one "
                               f"process, {len(result['rows']) // len(BATCHES)} repeats per batch "
                               f"({result['date']}).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per file, batch and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.seconds, args.repeats)
    write_results(args.out, "ood_latency", result, markdown(result).rstrip("\n").split("\n"))


if __name__ == "__main__":
    main()
