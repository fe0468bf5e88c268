"""What the benchmarks over a large folder share: the folder (hard links to the sample images, at no disk cost)
and their command line (`--files N --out DIR`), the results written with the machine and date below the table."""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from results_files import write_results

ROOT = Path(__file__).resolve().parent.parent


def link_samples(folder: Path, files: int) -> None:
    """Fill ``folder`` with ``files`` hard links to the 72 sample images (brain MRI, then ultrasound), in turn."""
    samples = sorted((ROOT / "samples" / "brain_mri").rglob("*.jpg"))
    samples += sorted((ROOT / "samples" / "ultrasound" / "images").glob("*.png"))
    for index in range(files):
        source = samples[index % len(samples)]
        os.link(source, folder / f"{index:05d}-{source.name}")


def run_files_benchmark(description: str, stem: str, measure: Callable[[int], dict],
                        table: Callable[[dict], list[str]]) -> None:
    """The command line of such a benchmark: measure ``--files`` files, write STEM.json and STEM.md to ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    result = measure(args.files)
    lines = [*table(result), "",
             f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; `python benchmarks/{stem}.py`."]
    write_results(args.out, stem, result, lines)
