"""The README's accuracy x speed tables: `s3f-edge matrix` on the bundled model and on brisc2025 at 256x256.

    python benchmarks/accuracy_speed.py [--out benchmarks/results] [--duration 5] [--render] [--bundled-only]

1. The bundled brain MRI model, scored on the whole brain MRI test set ($S3F_EDGE_DATA/brain_tumor_mri),
   INT8 calibrated on its training images.
2. brisc2025 at 256x256 with random (input-sensitive) weights: speed only.
Then the figures the performance page discusses, read off those two tables and results.json (the spectral
block's share): writes matrix_bundled.md, matrix_brisc256.md (and .json) and speed_summary.md. With
--bundled-only, only the first (for a new bundled model), the summary taken with the brisc2025 table already in
--out; with --render, only speed_summary.md, from the JSON files in --out (nothing is timed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s3f_edge.testing import require_data  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SAMPLES = ROOT / "samples" / "brain_mri"

from s3f_edge.bench.matrix import TIMED_ONLY  # noqa: E402


def best_cpu(rows: list[dict], batch: str) -> dict:
    # A speed-only matrix (random weights) also times files whose top-1 parity gate failed (status "timed only").
    candidates = [r for r in rows if r["backend"] != "keras" and r["status"] in ("ok", TIMED_ONLY)
                  and batch in r["speedup_vs_keras"]]
    return max(candidates, key=lambda r: r["speedup_vs_keras"][batch])


def speed_summary(bundled: dict, brisc: dict, share: dict | None) -> str:
    """The figures the performance page discusses, read off the two matrices and results.json: the fastest CPU
    artefact's speed-up over Keras per model and batch size (with its accuracy against Keras for the bundled
    model), the spectral block's share of FP32 latency at 256×256, and each artefact's achieved rate against the
    machine's GEMM rate (how much faster the same work could run at all)."""
    lines = ["| measurement | value |", "|---|---|"]
    keras_accuracy = bundled["rows"][0]["accuracy"]
    for label, result in (("bundled model (64×64)", bundled), ("brisc2025 256×256", brisc)):
        for batch in ("1", "32"):
            best = best_cpu(result["rows"], batch)
            caveat = " (timed only: its parity gate failed on random weights)" if best["status"] == TIMED_ONLY else ""
            value = f"{best['artefact']}{caveat}: {best['speedup_vs_keras'][batch]}×"
            if result is bundled and keras_accuracy is not None:
                loss = (keras_accuracy - best["accuracy"]) * 100
                value += f"; accuracy {best['accuracy']:.2%} vs Keras {keras_accuracy:.2%} ({-loss:+.2f} points)"
            lines.append(f"| {label}: fastest CPU artefact over Keras, batch {batch} | {value} |")
    if share:
        entries = {k: v for k, v in share.items() if k.startswith("H factored, W dense")}
        worst = max(entries.values(), key=lambda e: e["share"])
        lines.append(f"| spectral block's share of ONNX Runtime FP32 latency at 256×256 (the larger of batch 1 and 32) "
                     f"| {worst['share']:.0%} |")
    fp32_rate = max(v for k, v in brisc["gemm_ops_per_second"].items() if k.startswith("fp32") and v)
    int8_rate = brisc["gemm_ops_per_second"].get("int8 onnxruntime")
    flops = brisc["flops_per_image"]["total_fft"]
    for row in brisc["rows"]:
        rate = row["images_per_second"].get("32") if row["status"] in ("ok", TIMED_ONLY) else None
        if not rate:
            continue
        yardstick = int8_rate if "INT8" in row["artefact"] and int8_rate else fp32_rate
        lines.append(f"| brisc2025 256×256, {row['artefact']} ({row['backend']}), batch 32: achieved vs "
                     f"{'INT8' if yardstick is int8_rate else 'FP32'} GEMM | {rate * flops / 1e9:.0f} G/s of "
                     f"{yardstick / 1e9:.0f} G/s ({rate * flops / yardstick:.0%}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite speed_summary.md from the JSON files in --out")
    parser.add_argument("--bundled-only", action="store_true", help="measure only the bundled model's matrix")
    args = parser.parse_args()
    if args.render:
        bundled, brisc = (json.loads((args.out / f"matrix_{name}.json").read_text())
                          for name in ("bundled", "brisc256"))
        write_summary(args.out, bundled, brisc)
        return

    from s3f_edge.bench.matrix import accuracy_speed_matrix
    from s3f_edge.testing import saved_model  # noqa: E402

    brain = require_data("brain_tumor_mri")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data, calib = brain / "test", brain / "train"
        bundled = accuracy_speed_matrix(ROOT / "s3f_edge/assets/default_model/model.keras", scratch / "bundled", data,
                                        calib, (1, 32), args.duration)
        if args.bundled_only:
            brisc = json.loads((args.out / "matrix_brisc256.json").read_text())
            measured = (("matrix_bundled", bundled),)
        else:
            brisc_model = saved_model(scratch / "brisc2025-256.keras", "brisc2025", (256, 256, 1))
            brisc = accuracy_speed_matrix(brisc_model, scratch / "brisc", None, SAMPLES / "train", (1, 32),
                                          args.duration)
            measured = (("matrix_bundled", bundled), ("matrix_brisc256", brisc))
        for name, result in measured:
            shutil.copy(scratch / name.removeprefix("matrix_").replace("brisc256", "brisc") / "matrix.md",
                        args.out / f"{name}.md")
            (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_summary(args.out, bundled, brisc)


def write_summary(out: Path, bundled: dict, brisc: dict) -> None:
    share_path = out / "results.json"
    share = json.loads(share_path.read_text()).get("spectral_share") if share_path.exists() else None
    (out / "speed_summary.md").write_text(speed_summary(bundled, brisc, share))
    print((out / "speed_summary.md").read_text())


if __name__ == "__main__":
    main()
