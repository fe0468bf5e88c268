"""Numerical parity between two backends of the same model, on real images and fresh random inputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from s3f_edge.data.preprocess import IMAGE_SUFFIXES, Preprocessing, load_image

PARITY_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "parity"
FP32_MAX_ABS_DIFF = 1e-4
REDUCED_MIN_TOP1 = 0.99


@dataclass
class ParityResult:
    inputs: str  # "real images" or "random"
    count: int
    max_abs_diff: float
    top1_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)


def image_files(folder: str | Path | None, limit: int | None = None) -> list[Path]:
    folder = Path(folder) if folder else PARITY_ASSETS
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def real_batch(contract: Preprocessing, folder: str | Path | None = None, limit: int = 64) -> np.ndarray:
    """Preprocessed real images (the packaged parity set by default), skipping unreadable files."""
    images = []
    for path in image_files(folder, limit):
        try:
            images.append(load_image(path, contract))
        except ValueError:
            continue
    if not images:
        raise ValueError(f"no readable images for the parity check in {folder or PARITY_ASSETS}")
    return np.stack(images)


def random_batch(contract: Preprocessing, count: int = 8, seed: int | None = None) -> np.ndarray:
    """Fresh uniform [0, 1) inputs: never zeros, a new draw each call unless seeded."""
    return np.random.default_rng(seed).random((count, *contract.input_shape), dtype=np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray, inputs: str) -> ParityResult:
    from s3f_edge.train.metrics import class_probabilities

    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"outputs differ in shape: {reference.shape} vs {candidate.shape}")
    agreement = float((class_probabilities(reference).argmax(1) == class_probabilities(candidate).argmax(1)).mean())
    return ParityResult(inputs, len(reference), float(np.abs(reference - candidate).max()), agreement)


def parity_failures(results: list[ParityResult], precision: str) -> list[str]:
    """fp32: max |p - p_ref| <= 1e-4 on every input set; fp16/int8: top-1 agreement >= 99% on real images."""
    failures = []
    for result in results:
        if precision == "fp32" and result.max_abs_diff > FP32_MAX_ABS_DIFF:
            failures.append(f"{result.inputs}: max |difference| {result.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF:.0e}")
        if precision != "fp32" and result.inputs == "real images" and result.top1_agreement < REDUCED_MIN_TOP1:
            failures.append(f"{result.inputs}: top-1 agreement {result.top1_agreement:.1%} < {REDUCED_MIN_TOP1:.0%}")
    return failures
