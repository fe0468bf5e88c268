"""Which ONNX Runtime session settings to ship: each candidate timed on the same models in one run.

    python benchmarks/ort_session_options.py [--out benchmarks/results]

Models: the bundled brain MRI model (64x64) and brisc2025 at 256x256 (random weights), FP32 ONNX as
`s3f-edge export` writes them. Candidates: ONNX Runtime's defaults (threads = physical cores, all graph
optimisations, sequential execution, memory arena on), then one change at a time: one thread, basic or
extended graph optimisation, parallel execution, no memory arena. p50 latency at batch 1 and 32, the
candidates timed in turns (three rounds each, the fastest kept).
The runtime's defaults (s3f_edge/runtime/onnx_backend.py: session_options) follow this table.
Writes ort_session_options.json and .md.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def candidates(ort) -> dict:
    level = ort.GraphOptimizationLevel
    return {
        "ONNX Runtime defaults": {},
        "intra-op threads = 1": {"intra_op_num_threads": 1},
        "graph optimisation: basic": {"graph_optimization_level": level.ORT_ENABLE_BASIC},
        "graph optimisation: extended": {"graph_optimization_level": level.ORT_ENABLE_EXTENDED},
        "parallel execution (2 inter-op threads)": {"execution_mode": ort.ExecutionMode.ORT_PARALLEL,
                                                    "inter_op_num_threads": 2},
        "memory arena off": {"enable_cpu_mem_arena": False},
    }


def session(ort, path: Path, settings: dict):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for name, value in settings.items():
        setattr(options, name, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def p50_ms_in_turns(runs: dict, data: np.ndarray, seconds: float) -> dict:
    """p50 of every candidate, timed in turns so that all of them meet the same machine state."""
    from s3f_edge.bench.runner import measure_in_turns

    latencies, errors = measure_in_turns(runs, data, seconds / 4, seconds)
    if errors:
        raise RuntimeError(f"a session failed while timed: {errors}")
    return {name: round(float(np.median(values)) * 1e3, 3) for name, values in latencies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    import onnxruntime as ort

    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.testing import saved_model  # noqa: E402

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = {
            "bundled model, 64x64": export_model(ROOT / "s3f_edge/assets/default_model/model.keras",
                                                 ExportOptions(out_dir=scratch / "bundled")).onnx_path,
            "brisc2025, 256x256": export_model(saved_model(scratch / "brisc.keras", "brisc2025", (256, 256, 1)),
                                               ExportOptions(out_dir=scratch / "brisc")).onnx_path,
        }
        for model_name, path in models.items():
            size = 64 if "64" in model_name else 256
            for batch in (1, 32):
                data = np.random.default_rng(batch).random((batch, size, size, 1), dtype=np.float32)
                sessions = {name: session(ort, path, settings) for name, settings in candidates(ort).items()}
                runs = {name: (lambda x, s=s: s.run(None, {"image": x})) for name, s in sessions.items()}
                for name, milliseconds in p50_ms_in_turns(runs, data, args.seconds).items():
                    rows.append({"model": model_name, "batch": batch, "settings": name, "p50_ms": milliseconds})
                    print(rows[-1], flush=True)
    for row in rows:
        default = next(r for r in rows if r["model"] == row["model"] and r["batch"] == row["batch"]
                       and r["settings"] == "ONNX Runtime defaults")
        row["vs_defaults"] = round(default["p50_ms"] / row["p50_ms"], 3)
    result = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "onnxruntime": ort.__version__, "rows": rows}
    lines = [f"ONNX Runtime {ort.__version__} session settings, FP32 ONNX on the CPU ({result['date']}, "
             f"{os.cpu_count()} CPUs; p50 of the fastest of 3 rounds taken in turns, {args.seconds:g} s each; "
             "speed-up > 1 is faster than the defaults).", "",
             "| model | batch | settings | p50 ms | speed-up vs defaults |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['settings']} | {r['p50_ms']} | {r['vs_defaults']} |" for r in rows]
    write_results(args.out, "ort_session_options", result, lines)


if __name__ == "__main__":
    main()
