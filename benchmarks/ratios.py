"""One run, every speed figure the README quotes, as ratios measured side by side.

    python benchmarks/ratios.py --out benchmarks/results      (what `make bench` runs)

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
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import saved_model  # noqa: E402

from s3f_edge.bench.flops import model_flops  # noqa: E402
from s3f_edge.bench.gemm import gemm_rates  # noqa: E402
from s3f_edge.bench.runner import measure  # noqa: E402
from s3f_edge.export.onnx_export import ExportOptions, export_model  # noqa: E402
from s3f_edge.runtime import Predictor, infer_folder  # noqa: E402

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


def inference(work: Path, duration: float) -> dict:
    out = {}
    for size in (256, 128):
        keras_path = saved_model(work / f"brisc-{size}.keras", "brisc2025", (size, size, 1), class_names=CLASSES)
        paths = {"keras": keras_path}
        for fft in ("matmul", "dft"):
            export_model(keras_path, ExportOptions(out_dir=work / f"{size}-{fft}", fft=fft))
            paths[f"onnx-{fft}"] = work / f"{size}-{fft}" / "model.onnx"
        predictors = {name: Predictor.load(path) for name, path in paths.items()}
        flops = model_flops(predictors["keras"].model)
        for batch in (1, 32):
            data = np.random.default_rng(batch).random((batch, size, size, 1), dtype=np.float32)
            times = {name: p50(p, data, duration) for name, p in predictors.items()}
            out[f"{size}x{size} batch {batch}"] = {
                "p50_ms": {k: round(v * 1e3, 2) for k, v in times.items()},
                "images_per_second": {k: round(batch / v, 1) for k, v in times.items()},
                "speedup_vs_keras": {k: round(times["keras"] / v, 2) for k, v in times.items()},
                "gflops_per_second_fft_count": {k: round(batch * flops["total_fft"] / v / 1e9, 1) for k, v in times.items()},
            }
        out[f"{size}x{size} flops_per_image"] = flops
    return out


def spectral_share(work: Path, duration: float) -> dict:
    """Latency of brisc2025's first SpectralFilter alone against the whole model, per lowering."""
    import keras

    from s3f_edge import SpectralFilter
    from s3f_edge.export.onnx_export import keras_to_onnx

    import onnx

    result = {}
    inputs = keras.Input((256, 256, 1))
    alone = keras.Model(inputs, SpectralFilter(32)(inputs))
    for fft in ("matmul", "dft"):
        path = work / f"sf-{fft}.onnx"
        onnx.save(keras_to_onnx(alone, fft), path)
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        full = Predictor.load(work / f"256-{fft}" / "model.onnx")
        for batch in (1, 32):
            data = np.random.default_rng(batch).random((batch, 256, 256, 1), dtype=np.float32)
            run = lambda d: session.run(None, {session.get_inputs()[0].name: d})  # noqa: E731
            run(data)
            block = float(np.median(measure(run, data, duration / 5, duration)))
            whole = p50(full, data, duration)
            result[f"{fft} batch {batch}"] = {"spectral_ms": round(block * 1e3, 2), "model_ms": round(whole * 1e3, 2),
                                              "share": round(block / whole, 3)}
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
    predictor = Predictor.load(work / "256-matmul" / "model.onnx")
    folder = _fill_folder(work / "images-1000", 1000)
    data = np.random.default_rng(0).random((32, 256, 256, 1), dtype=np.float32)
    compute = 32 / p50(predictor, data, duration)
    summary = infer_folder(folder, predictor, work / "e2e.csv", batch_size=32, progress=False)
    end_to_end = summary.succeeded / summary.seconds
    memory = {}
    for count in (1000, 10000):
        images = _fill_folder(work / f"mem-{count}", count)
        # VmHWM is this process's own peak; getrusage's ru_maxrss would include the parent's (kept across exec).
        script = ("import sys\nfrom s3f_edge.runtime import Predictor, infer_folder\n"
                  "p = Predictor.load(sys.argv[1])\n"
                  "s = infer_folder(sys.argv[2], p, sys.argv[3], batch_size=32, progress=False)\n"
                  "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
                  "print(s.succeeded, hwm)\n")
        out = subprocess.run([sys.executable, "-c", script, str(work / "128-matmul" / "model.onnx"), str(images),
                              str(work / f"mem-{count}.csv")], capture_output=True, text=True, check=True).stdout.split()
        memory[count] = {"images": int(out[-2]), "peak_rss_mb": round(int(out[-1]) / 1024, 1)}
    return {"compute_only_images_per_second": round(compute, 1), "end_to_end_images_per_second": round(end_to_end, 1),
            "end_to_end_fraction": round(end_to_end / compute, 3), "peak_memory": memory}


def training(work: Path, images: int = 480) -> dict:
    """Training images/s at 128x128 (brisc2025 S3F-Net): s3f-edge's tf.data pipeline vs fit on numpy arrays."""
    import keras

    from s3f_edge import build_model
    from s3f_edge.data.folders import discover, load_split
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.train.pipeline import input_pipeline

    data_root = ROOT.parent / "shared" / "data" / "brain_tumor_mri"
    source = data_root if data_root.is_dir() else SAMPLES
    split = discover(source).train
    pick = np.random.default_rng(0).permutation(len(split))[:images]
    x, y, _ = load_split(split.subset(np.sort(pick)), Preprocessing(height=128, width=128, channels=1))
    weights = {i: 1.0 for i in range(4)}

    def rate(fit) -> float:
        keras.utils.set_random_seed(0)
        model = build_model("brisc2025", input_shape=(128, 128, 1))
        model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        fit(model, 1)  # trace and warm up
        started = time.perf_counter()
        fit(model, 2)
        return len(y) * 2 / (time.perf_counter() - started)

    ours = rate(lambda m, e: m.fit(input_pipeline(x, y, batch_size=16, seed=0), epochs=e,
                                   class_weight=weights, verbose=0, shuffle=False))
    plain = rate(lambda m, e: m.fit(x, y, batch_size=16, epochs=e, class_weight=weights, verbose=0, shuffle=True))
    return {"images": len(y), "source": str(source.name), "s3f_edge_images_per_second": round(ours, 1),
            "numpy_fit_images_per_second": round(plain, 1), "ratio": round(ours / plain, 3)}


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']['processor']}, {results['machine']['cores']} cores; "
             f"float32 GEMM 2048²: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in results["gemm"].items()), "",
             "| brisc2025 | backend | p50 ms | images/s | × Keras | GFLOP/s (FFT count) |", "|---|---|---|---|---|---|"]
    for key, entry in results["inference"].items():
        if "p50_ms" not in entry:
            continue
        for backend in entry["p50_ms"]:
            lines.append(f"| {key} | {backend} | {entry['p50_ms'][backend]} | {entry['images_per_second'][backend]} | "
                         f"{entry['speedup_vs_keras'][backend]} | {entry['gflops_per_second_fft_count'][backend]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--duration", type=float, default=5.0, help="timed seconds per measurement")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: spectral,pipeline,training")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        results["gemm"] = gemm_rates()
        results["inference"] = inference(work, args.duration)
        if "spectral" not in skip:
            results["spectral_share"] = spectral_share(work, args.duration)
        if "pipeline" not in skip:
            results["pipeline"] = pipeline(work, args.duration)
        if "training" not in skip:
            results["training"] = training(work)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown(results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
