"""One run, the README's speed figures other than the accuracy x speed matrix, as ratios side by side:
the spectral block's share of the model in each of its forms, `infer`'s pipeline and memory (training speed:
benchmarks/training_speed.py).

    python benchmarks/ratios.py --out benchmarks/results      (part of `make bench`)

Writes results.json and results.md. Each section times its contenders back to back in this
process, so ratios stay meaningful on a shared, noisy machine; absolute numbers are labelled
with the machine they came from.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from s3f_edge.bench.runner import measure  # noqa: E402
from s3f_edge.export.onnx_export import ExportOptions, export_model  # noqa: E402
from s3f_edge.runtime import infer_folder, load_predictor  # noqa: E402
from s3f_edge.testing import saved_model  # noqa: E402

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
SAMPLES = ROOT / "samples" / "brain_mri"


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"processor": model, "cores": os.cpu_count(), "python": platform.python_version()}


def p50(predictor, batch: np.ndarray, duration: float) -> float:
    predictor.predict(batch)
    return float(np.median(measure(predictor.predict, batch, warmup_s=duration / 5, duration_s=duration)))


SPECTRAL_FORMS = {  # (fft lowering, factor H, factor W): the forms the matmul lowering has had, and ONNX DFT
    "dense DFT matrices (first form)": ("matmul", False, False),
    "H factored, W dense (the default)": ("matmul", True, False),
    "H and W factored": ("matmul", True, True),
    "ONNX DFT nodes": ("dft", True, True),
}


def _with_plan(model, factor_height: bool, factor_width: bool):
    """Give every SpectralFilter of ``model`` the DFT-as-matmul constants of one form (same function)."""
    from s3f_edge.model import spectral_filters
    from s3f_edge.model.dft import dft_plan

    for layer in spectral_filters(model):
        layer._dft = dft_plan(layer.height, layer.width, "float32", factor_height, factor_width)
    return model


def spectral_share(work: Path, duration: float) -> dict:
    """brisc2025 at 256x256: its SpectralFilter alone and the whole model in ONNX Runtime, per form of the
    spectral block, timed back to back; the share is the block's p50 over the model's."""
    import keras
    import onnx

    from s3f_edge import SpectralFilter
    from s3f_edge.bench.flops import spectral_filter_flops
    from s3f_edge.export.onnx_export import keras_to_onnx
    from s3f_edge.model import load_model
    from s3f_edge.runtime.onnx_backend import create_session

    keras_path = saved_model(work / "brisc-256.keras", "brisc2025", (256, 256, 1), class_names=CLASSES)
    inputs = keras.Input((256, 256, 1))
    alone = keras.Model(inputs, SpectralFilter(32)(inputs))
    dense_w = spectral_filter_flops(256, 256, 1, 32)
    factored_w = spectral_filter_flops(256, 256, 1, 32, factor_width=True)
    result = {"flops_per_image": {"fft": dense_w["fft"], "matmul, W dense (default)": dense_w["matmul"],
                                  "matmul, W factored": factored_w["matmul"]}}
    for form, (fft, factor_height, factor_width) in SPECTRAL_FORMS.items():
        sessions = {}
        for part, model in (("block", _with_plan(alone, factor_height, factor_width)),
                            ("model", _with_plan(load_model(keras_path), factor_height, factor_width))):
            path = work / f"{part}-{len(result)}.onnx"
            onnx.save(keras_to_onnx(model, fft), path)
            sessions[part] = create_session(str(path), ["CPUExecutionProvider"])
        for batch in (1, 32):
            data = np.random.default_rng(batch).random((batch, 256, 256, 1), dtype=np.float32)
            times = {}
            for part, session in sessions.items():
                run = lambda d, s=session: s.run(None, {s.get_inputs()[0].name: d})  # noqa: E731
                run(data)
                times[part] = float(np.median(measure(run, data, duration / 5, duration)))
            result[f"{form}, batch {batch}"] = {"spectral_ms": round(times["block"] * 1e3, 2),
                                                 "model_ms": round(times["model"] * 1e3, 2),
                                                 "share": round(times["block"] / times["model"], 3)}
            print(form, batch, result[f"{form}, batch {batch}"], flush=True)
    return result


def _fill_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SAMPLES.rglob("*.jpg"))
    for index in range(count):
        source = sources[index % len(sources)]
        os.link(source, folder / f"{index:06d}_{source.name}") if source.stat().st_dev == folder.stat().st_dev \
            else shutil.copy(source, folder / f"{index:06d}_{source.name}")
    return folder


def pipeline(work: Path, duration: float) -> dict:
    """`infer` end to end against compute-only, same ONNX model and batch 32; then peak memory vs folder size."""
    for size in (256, 128):
        keras_path = saved_model(work / f"pipeline-{size}.keras", "brisc2025", (size, size, 1), class_names=CLASSES)
        export_model(keras_path, ExportOptions(out_dir=work / f"{size}-matmul"))
    predictor = load_predictor(work / "256-matmul" / "model.onnx")
    folder = _fill_folder(work / "images-1000", 1000)
    data = np.random.default_rng(0).random((32, 256, 256, 1), dtype=np.float32)
    compute = 32 / p50(predictor, data, duration)
    summary = infer_folder(folder, predictor, work / "e2e.csv", batch_size=32, progress=False)
    end_to_end = summary.succeeded / summary.seconds
    memory = {}
    for count in (1000, 10000):
        images = _fill_folder(work / f"mem-{count}", count)
        # VmHWM is this process's own peak; getrusage's ru_maxrss would include the parent's (kept across exec).
        script = ("import sys\nfrom s3f_edge.runtime import infer_folder, load_predictor\n"
                  "p = load_predictor(sys.argv[1])\n"
                  "s = infer_folder(sys.argv[2], p, sys.argv[3], batch_size=32, progress=False)\n"
                  "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
                  "print(s.succeeded, hwm)\n")
        out = subprocess.run([sys.executable, "-c", script, str(work / "128-matmul" / "model.onnx"), str(images),
                              str(work / f"mem-{count}.csv")],
                             capture_output=True, text=True, check=True).stdout.split()
        memory[count] = {"images": int(out[-2]), "peak_rss_mb": round(int(out[-1]) / 1024, 1)}
    return {"compute_only_images_per_second": round(compute, 1), "end_to_end_images_per_second": round(end_to_end, 1),
            "end_to_end_fraction": round(end_to_end / compute, 3), "peak_memory": memory}


def markdown(results: dict) -> str:
    lines = [f"{results['machine']['processor']}, {results['machine']['cores']} cores, {results['date']}.", ""]
    if "spectral_share" in results:
        share = results["spectral_share"]
        flops = share["flops_per_image"]
        lines += ["brisc2025's SpectralFilter (256×256, 1 → 32 filters) in ONNX Runtime, GFLOP per image: "
                  + ", ".join(f"{name} {value / 1e9:.3f}" for name, value in flops.items()) + ".", "",
                  "| form of the spectral block | batch | block p50 ms | whole model p50 ms | share of the model |",
                  "|---|---|---|---|---|"]
        for key, entry in share.items():
            if key == "flops_per_image":
                continue
            form, batch = key.rsplit(", batch ", 1)
            lines.append(f"| {form} | {batch} | {entry['spectral_ms']} | {entry['model_ms']} | {entry['share']:.0%} |")
        lines.append("")
    if "pipeline" in results:
        pipe = results["pipeline"]
        memory = pipe["peak_memory"]
        lines += ["| measurement | result |", "|---|---|",
                  f"| `infer` end to end vs compute only (ONNX, 256×256, batch 32, 1,000 images) | "
                  f"{pipe['end_to_end_images_per_second']} vs {pipe['compute_only_images_per_second']} images/s "
                  f"({pipe['end_to_end_fraction']:.0%}) |",
                  f"| peak memory of `infer`, 1,000 → 10,000 images (128×128 model) | "
                  f"{memory['1000']['peak_rss_mb'] if '1000' in memory else memory[1000]['peak_rss_mb']} MB → "
                  f"{memory['10000']['peak_rss_mb'] if '10000' in memory else memory[10000]['peak_rss_mb']} MB |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--duration", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: spectral,pipeline")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if "spectral" not in skip:
            results["spectral_share"] = spectral_share(work, args.duration)
        if "pipeline" not in skip:
            results["pipeline"] = pipeline(work, args.duration)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown(results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
