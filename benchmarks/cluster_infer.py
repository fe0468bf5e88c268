"""What Ray costs and gives on one machine: `infer` of 10,000 files alone, then with `--ray` and 1 and 2 actors.

The files are hard links to the sample images (copies on disk, cycling through the 72 samples). Each run is
the real command in its own process, one after the other in one run of this script; a sampler reads the
driver's memory (VmRSS, and its peak VmHWM) from /proc and the rows journaled so far, every 0.1 s. Reported
per run: images/s over the whole command (start-up included) and over the middle 80 % of the rows (steady
state), the driver's peak memory (the final sorted write included) and its growth from 10 % to 90 % of the
rows, while they arrive (flat means it does not hold them), the memory of every process of the run (Ray's
own included), and the ratio to `infer` alone.

    .venv/bin/python benchmarks/cluster_infer.py --out benchmarks/results
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from files_benchmark import link_samples, run_files_benchmark  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402

RUNS = {"infer (one machine)": [], "infer --ray, 1 actor": ["--ray", "--ray-actors", "1"],
        "infer --ray, 2 actors": ["--ray", "--ray-actors", "2"]}


def status_kb(pid: int) -> dict[str, int]:
    """The memory fields (kB) of /proc/PID/status, read once; none for a process that has just ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (local Ray's servers and actors are the driver's descendants)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def run(folder: Path, out: Path, extra: list[str], files: int) -> dict:
    """One `infer` command, sampled until it ends."""
    journal = out.with_name(f".{out.name}.partial.jsonl")
    command = [str(Path(sys.executable).parent / "s3f-edge"), "infer", str(folder), "--model",
               str(DEFAULT_MODEL_DIR / "model.onnx"), "--out", str(out), "--quiet", *extra]
    samples = []  # (seconds, rows journaled, driver VmRSS kB, driver VmHWM kB, whole tree VmRSS kB)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    while process.poll() is None:
        try:
            rows = journal.read_bytes().count(b"\n") if journal.exists() else 0
            tree = sum(status_kb(pid).get("VmRSS", 0) for pid in process_tree(process.pid))
            driver = status_kb(process.pid)
            samples.append((time.perf_counter() - started, rows, driver.get("VmRSS", 0), driver.get("VmHWM", 0), tree))
        except (OSError, ValueError):
            pass  # the process ended between two reads
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {stderr.strip()}")
    answered = sum(1 for _ in open(out, encoding="utf-8")) - 1
    if answered != files:
        raise SystemExit(f"{answered} rows for {files} files: {' '.join(command)}")

    def first(fraction: float) -> tuple:
        return next(sample for sample in samples if sample[1] >= fraction * files)

    early, late = first(0.1), first(0.9)  # while rows arrive: before the final sorted write
    return {
        "seconds": seconds, "images_per_second": files / seconds,
        "steady_images_per_second": (late[1] - early[1]) / (late[0] - early[0]),
        "driver_peak_mb": max(sample[3] for sample in samples) / 1024,
        "driver_rss_at_10_percent_mb": early[2] / 1024, "driver_rss_at_90_percent_mb": late[2] / 1024,
        "all_processes_peak_mb": max(sample[4] for sample in samples) / 1024, "samples": len(samples),
    }


def measure(files: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "batch"
        folder.mkdir()
        link_samples(folder, files)
        results = {}
        for index, (name, extra) in enumerate(RUNS.items()):
            results[name] = run(folder, scratch / f"results-{index}.csv", extra, files)
            print(f"{name}: {results[name]['images_per_second']:.0f} images/s", file=sys.stderr)
    alone = results["infer (one machine)"]
    for result in results.values():
        result["over_one_machine"] = result["images_per_second"] / alone["images_per_second"]
        result["steady_over_one_machine"] = result["steady_images_per_second"] / alone["steady_images_per_second"]
    return {"files": files, "cpus": os.cpu_count(), "runs": results}


def table(result: dict) -> list[str]:
    lines = [
        f"{result['files']:,} files, bundled model (ONNX, 64×64); each run the whole command.",
        "",
        "| run | images/s (whole command) | × one machine | images/s (10–90 % of rows) | × one machine "
        "| driver peak memory | driver memory at 10 % → 90 % of rows | all its processes, peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run_result in result["runs"].items():
        lines.append(
            f"| {name} | {run_result['images_per_second']:.0f} | {run_result['over_one_machine']:.2f}× "
            f"| {run_result['steady_images_per_second']:.0f} | {run_result['steady_over_one_machine']:.2f}× "
            f"| {run_result['driver_peak_mb']:.0f} MB | {run_result['driver_rss_at_10_percent_mb']:.0f} → "
            f"{run_result['driver_rss_at_90_percent_mb']:.0f} MB | {run_result['all_processes_peak_mb']:.0f} MB |")
    return lines


def main() -> None:
    run_files_benchmark(__doc__.splitlines()[0], "cluster_infer", measure, table)


if __name__ == "__main__":
    main()
