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
    reference_accuracy: float | None = None  # on labelled real images only
    candidate_accuracy: float | None = None

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


def image_labels(folder: str | Path | None, class_names: list[str], limit: int = 64) -> np.ndarray | None:
    """Class index of each image of ``real_batch``: its folder's name or its '<class>_' file-name prefix.

    None unless every image can be labelled (then accuracy, not only agreement, can be reported).
    """
    labels = []
    for path in image_files(folder, limit):
        if path.parent.name in class_names:
            labels.append(class_names.index(path.parent.name))
            continue
        prefix = next((i for i, name in enumerate(class_names) if path.name.startswith(f"{name}_")), None)
        if prefix is None:
            return None
        labels.append(prefix)
    return np.asarray(labels)


def random_batch(contract: Preprocessing, count: int = 8, seed: int | None = None) -> np.ndarray:
    """Fresh uniform [0, 1) inputs: never zeros, a new draw each call unless seeded."""
    return np.random.default_rng(seed).random((count, *contract.input_shape), dtype=np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray, inputs: str, labels: np.ndarray | None = None) -> ParityResult:
    from s3f_edge.train.metrics import class_probabilities

    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"outputs differ in shape: {reference.shape} vs {candidate.shape}")
    ref_top1, cand_top1 = class_probabilities(reference).argmax(1), class_probabilities(candidate).argmax(1)
    result = ParityResult(inputs, len(reference), float(np.abs(reference - candidate).max()), float((ref_top1 == cand_top1).mean()))
    if labels is not None and len(labels) == len(reference):
        result.reference_accuracy = float((ref_top1 == labels).mean())
        result.candidate_accuracy = float((cand_top1 == labels).mean())
    return result


def parity_failures(results: list[ParityResult], precision: str) -> list[str]:
    """fp32: max |p - p_ref| <= 1e-4 on every input set; fp16/int8: top-1 agreement >= 99% on real images."""
    failures = []
    for result in results:
        if precision == "fp32" and result.max_abs_diff > FP32_MAX_ABS_DIFF:
            failures.append(f"{result.inputs}: max |difference| {result.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF:.0e}")
        if precision != "fp32" and result.inputs == "real images" and result.top1_agreement < REDUCED_MIN_TOP1:
            failures.append(f"{result.inputs}: top-1 agreement {result.top1_agreement:.1%} < {REDUCED_MIN_TOP1:.0%}")
    return failures
