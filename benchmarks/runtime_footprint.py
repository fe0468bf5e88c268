"""What a deployment costs: start-up time, peak memory and install size of `s3f-edge infer`.

    python benchmarks/runtime_footprint.py [--out benchmarks/results] [--repeat 5]

`s3f-edge infer` with the bundled ONNX model on 1 image and on the 24 sample test images, from
process start to exit (the output file written), in two installations: the runtime only
(`pip install .[cpu]`, built here in .venv-runtime/) and the full one (.venv, with TensorFlow).
Beside them, the floor: a minimal hand-written script that decodes the same images with OpenCV and
runs the same ONNX file with ONNX Runtime. Peak memory is each process's own VmHWM. Medians of
--repeat runs. Writes runtime_footprint.json and .md; --render rewrites the .md from the .json in --out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_files import write_results  # benchmarks/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
RUNTIME_VENV = REPO / ".venv-runtime"
MODEL = REPO / "s3f_edge" / "assets" / "default_model" / "model.onnx"
SAMPLES = REPO / "samples" / "brain_mri" / "test"

# Runs the CLI in-process, then reports this process's own peak memory (VmHWM survives nothing of the parent).
CLI_PROBE = """
import sys
from s3f_edge.cli import main
try:
    main(sys.argv[1:], prog_name="s3f-edge")
except SystemExit as stop:
    code = stop.code or 0
    if code:
        raise
print("VmHWM", [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
"""

MINIMAL = """
import csv, sys
import cv2, numpy as np, onnxruntime as ort
from pathlib import Path
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
files = sorted(p for p in Path(sys.argv[2]).rglob("*.jpg"))[: int(sys.argv[4])]
def pixels(path):
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / 255.0
probabilities = session.run(None, {"image": np.stack([pixels(p) for p in files])})[0]
with open(sys.argv[3], "w", newline="") as handle:
    csv.writer(handle).writerows([str(p), int(row.argmax())] + row.tolist() for p, row in zip(files, probabilities))
print("VmHWM", [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
"""


def _digest(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _pip(python: Path, *arguments: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    if done.returncode:
        raise RuntimeError(f"pip install {' '.join(arguments)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def ensure_runtime_venv(venv: Path = RUNTIME_VENV) -> Path:
    """A venv with `s3f-edge[cpu]` from this checkout (not editable): rebuilt when pyproject.toml changes,
    the package reinstalled when its files change. Returns its python."""
    python = venv / "bin" / "python"
    dependencies = _digest([REPO / "pyproject.toml"])
    package = _digest([p for p in (REPO / "s3f_edge").rglob("*") if p.is_file() and "__pycache__" not in p.parts])
    stamp = venv / "stamp.json"
    state = json.loads(stamp.read_text()) if stamp.exists() else {}
    if state.get("dependencies") != dependencies or not python.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(python, ".[cpu]")
    elif state.get("package") != package:
        _pip(python, "--no-deps", "--force-reinstall", ".")
    stamp.write_text(json.dumps({"dependencies": dependencies, "package": package}))
    return python


def _folder_of(count: int, scratch: Path) -> Path:
    folder = scratch / f"images-{count}"
    if not folder.exists():
        folder.mkdir()
        for path in sorted(SAMPLES.rglob("*.jpg"))[:count]:
            shutil.copy(path, folder / path.name)
    return folder


def run_once(command: list[str], output: Path) -> tuple[float, float]:
    """(seconds from process start to exit, peak RSS in MB) of one cold run."""
    output.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=output.parent)
    seconds = time.perf_counter() - started
    if done.returncode or not output.exists():
        raise RuntimeError(f"{' '.join(command[:3])} failed: {done.stderr[-2000:]}")
    kilobytes = int(done.stdout.split("VmHWM")[-1].split()[0])
    return seconds, kilobytes / 1024


def measure(label: str, command_for, count: int, scratch: Path, repeat: int) -> dict:
    folder = _folder_of(count, scratch)
    output = scratch / f"out-{label.replace(' ', '_')}-{count}.csv"
    run_once(command_for(folder, output), output)  # page cache warm, as on a machine that just ran it
    runs = [run_once(command_for(folder, output), output) for _ in range(repeat)]
    return {"installation": label, "images": count, "seconds": round(statistics.median(r[0] for r in runs), 3),
            "peak_rss_mb": round(statistics.median(r[1] for r in runs), 1), "runs": repeat}


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6, 1)


def render(result: dict) -> list[str]:
    """The Markdown table of a result (each row the median of its runs), and the installed sizes."""
    repeat = result["rows"][0]["runs"]
    lines = [f"`s3f-edge infer` with the bundled ONNX model, process start to exit, median of {repeat} runs "
             f"({result['date']}, {result['cpus']} CPUs).", "",
             "| installation | images | wall s | peak RSS MB | × minimal (time) | × minimal (RSS) |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['installation']} | {row['images']} | {row['seconds']} | {row['peak_rss_mb']} | "
                     f"{row.get('time_vs_minimal', '-')} | {row.get('rss_vs_minimal', '-')} |")
    return lines + ["", "Installed size: " + "; ".join(f"{k} {v} MB" for k, v in result["install_mb"].items()) + "."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json in --out")
    args = parser.parse_args()
    if args.render:
        result = json.loads((args.out / "runtime_footprint.json").read_text())
        write_results(args.out, "runtime_footprint", result, render(result))
        return

    runtime_python = ensure_runtime_venv()
    full_python = REPO / ".venv" / "bin" / "python"
    installations = {
        "runtime only ([cpu])": lambda folder, out: [str(runtime_python), "-c", CLI_PROBE, "infer", str(folder),
                                                     "--out", str(out), "--quiet"],
        "full ([train,cpu,...])": lambda folder, out: [str(full_python), "-c", CLI_PROBE, "infer", str(folder), "--out",
                                                       str(out), "--quiet"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for count in (1, 24):
            minimal = measure("minimal ONNX Runtime script", lambda folder, out, count=count: [
                str(runtime_python), "-c", MINIMAL, str(MODEL), str(folder), str(out), str(count)], count, scratch,
                args.repeat)
            rows.append(minimal)
            for label, command in installations.items():
                row = measure(label, command, count, scratch, args.repeat)
                row["time_vs_minimal"] = round(row["seconds"] / minimal["seconds"], 2)
                row["rss_vs_minimal"] = round(row["peak_rss_mb"] / minimal["peak_rss_mb"], 2)
                rows.append(row)
                print(row, flush=True)
    install = {"runtime only ([cpu])": size_mb(RUNTIME_VENV), "full ([train,cpu,...])": size_mb(REPO / ".venv")}
    result = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "model": str(MODEL.relative_to(REPO)),
              "rows": rows, "install_mb": install}
    write_results(args.out, "runtime_footprint", result, render(result))


if __name__ == "__main__":
    main()
