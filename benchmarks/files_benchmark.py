"""A large folder for a benchmark at no disk cost: hard links to the sample images, cycling through them."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def link_samples(folder: Path, files: int) -> None:
    """Fill ``folder`` with ``files`` hard links to the 72 sample images (brain MRI, then ultrasound), in turn."""
    samples = sorted((ROOT / "samples" / "brain_mri").rglob("*.jpg"))
    samples += sorted((ROOT / "samples" / "ultrasound" / "images").glob("*.png"))
    for index in range(files):
        source = samples[index % len(samples)]
        os.link(source, folder / f"{index:05d}-{source.name}")
