"""Numerical parity between two backends of the same model, on real images and fresh random inputs.

Non-finite outputs fail every check: NaN compares false with everything (so ``diff > tolerance``
would pass) and argmax of a NaN row is 0 on both sides (so top-1 agreement would too).

Top-1 agreement forgives near-ties only: where the reference itself gives the candidate's class a
probability within ``NEAR_TIE`` of its own top class (an image the model cannot decide, such as one of
the packaged brain MRI images at 0.4994 / 0.4991), any rounding may flip the argmax, and a gate that
counted it would fail every reduced-precision export of that model on one coin toss.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from s3f_edge.contract import OOD_SCORE, PROBS
from s3f_edge.data.files import image_files
from s3f_edge.data.preprocess import Preprocessing, load_image
from s3f_edge.errors import InputError
from s3f_edge.runtime.predictor import class_probabilities, nonfinite_rows

PARITY_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "parity"
FP32_MAX_ABS_DIFF = 1e-4
REDUCED_MIN_TOP1 = 0.99
# The out-of-distribution score is a standardised distance (in-distribution images score about 0-3): FP32 must
# match it to this difference relative to max(1, |score|); reduced precision must keep the refusal decisions.
FP32_SCORE_MAX_REL_DIFF = 1e-3
REDUCED_MIN_DECISION_AGREEMENT = 0.99
# A refusal decision that flips where the reference score lies this close to the threshold is no disagreement
# (as NEAR_TIE for the top class): INT8 moves the bundled model's scores by more than 1 at the 99th percentile
# over its test images (measured on its card), so any image that near the threshold may flip.
SCORE_NEAR_THRESHOLD = 1.5
NEAR_TIE = 0.02  # reference probability gap under which a different top-1 class is not a disagreement


@dataclass
class ParityResult:
    inputs: str  # "real images" or "random"
    count: int
    max_abs_diff: float  # over the rows where both outputs are finite
    top1_agreement: float
    reference_accuracy: float | None = None  # on labelled real images only
    candidate_accuracy: float | None = None
    nonfinite_reference: int = 0  # rows with a NaN or infinite output
    nonfinite_candidate: int = 0
    near_ties: int = 0  # rows whose top-1 differs where the reference's own gap is under NEAR_TIE (counted as agreeing)
    # the out-of-distribution score, for a calibrated model
    score_max_rel_diff: float | None = None  # max |s - s_ref| / max(1, |s_ref|) over rows finite on both sides
    score_decision_agreement: float | None = None  # share of images refused (or accepted) by both
    score_near_threshold: int = 0  # flipped decisions of images within SCORE_NEAR_THRESHOLD (counted as agreeing)
    nonfinite_score_candidate: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def real_batch(contract: Preprocessing, folder: str | Path | None = None, limit: int = 64) -> np.ndarray:
    """Preprocessed real images (the packaged parity set by default), skipping unreadable files."""
    images = []
    for path in image_files(folder or PARITY_ASSETS, limit):
        try:
            images.append(load_image(path, contract))
        except ValueError:
            continue
    if not images:
        raise InputError(f"no readable images for the parity check in {folder or PARITY_ASSETS}; give a folder "
                         "that holds images (--images)")
    return np.stack(images)


def image_labels(folder: str | Path | None, class_names: list[str], limit: int = 64) -> np.ndarray | None:
    """Class index of each image of ``real_batch``: its folder's name or its '<class>_' file-name prefix.

    None unless every image can be labelled (then accuracy, not only agreement, can be reported).
    """
    labels = []
    for path in image_files(folder or PARITY_ASSETS, limit):
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


def compare(reference: np.ndarray, candidate: np.ndarray, inputs: str,
            labels: np.ndarray | None = None) -> ParityResult:
    """Agreement of a candidate's probabilities with the reference's, on the same inputs.

    Args:
        reference: the reference's ``probs`` output, (N, K), or (N, 1) for one sigmoid unit.
        candidate: the candidate's ``probs`` output, of the same shape.
        inputs: what the inputs were ("real images", "random"), recorded in the result.
        labels: true class indices (N,), for both accuracies; None (or another length): no accuracies.

    Returns:
        The ``ParityResult``: max |difference| over rows finite on both sides, top-1 agreement (near ties forgiven,
        a non-finite row never agreeing), non-finite row counts and, with labels, both accuracies.

    Raises:
        InputError: the two outputs differ in shape.
    """
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise InputError(f"outputs differ in shape: {reference.shape} vs {candidate.shape}")
    bad_reference, bad_candidate = nonfinite_rows(reference), nonfinite_rows(candidate)
    both = ~(bad_reference | bad_candidate)
    probabilities = class_probabilities(reference)
    ref_top1, cand_top1 = probabilities.argmax(1), class_probabilities(candidate).argmax(1)
    rows = np.arange(len(reference))
    with np.errstate(invalid="ignore"):
        near_tie = ((ref_top1 != cand_top1)
                    & (probabilities[rows, ref_top1] - probabilities[rows, cand_top1] <= NEAR_TIE))
    # A row with a non-finite output on either side counts as a disagreement, never as a match.
    agree = ((ref_top1 == cand_top1) | near_tie) & both
    max_diff = float(np.abs(reference[both] - candidate[both]).max()) if both.any() else 0.0
    result = ParityResult(inputs, len(reference), max_diff, float(agree.mean()) if len(agree) else 1.0,
                          nonfinite_reference=int(bad_reference.sum()), nonfinite_candidate=int(bad_candidate.sum()),
                          near_ties=int((near_tie & both).sum()))
    if labels is not None and len(labels) == len(reference):
        result.reference_accuracy = float(((ref_top1 == labels) & ~bad_reference).mean())
        result.candidate_accuracy = float(((cand_top1 == labels) & ~bad_candidate).mean())
    return result


def compare_outputs(reference: dict, candidate: dict, inputs: str, labels: np.ndarray | None = None,
                    threshold: float | None = None) -> ParityResult:
    """``compare`` on the probabilities, and for a calibrated model the out-of-distribution scores too.

    Args:
        reference, candidate: outputs by name (``probs``, and ``ood_score`` when the model has it).
        inputs: what the inputs were ("real images", "random").
        labels: true classes of the inputs, if known.
        threshold: the refusal threshold, for the decision agreement.

    Returns:
        The ``ParityResult`` (score fields None for a model without a score).
    """
    result = compare(reference[PROBS], candidate[PROBS], inputs, labels)
    if OOD_SCORE not in reference:
        return result
    if OOD_SCORE not in candidate:
        raise InputError("the exported model lost the ood_score output")
    ref, cand = (np.asarray(x, np.float64).reshape(-1) for x in (reference[OOD_SCORE], candidate[OOD_SCORE]))
    finite = np.isfinite(ref) & np.isfinite(cand)
    result.nonfinite_score_candidate = int((~np.isfinite(cand)).sum())
    result.score_max_rel_diff = float((np.abs(cand - ref) / np.maximum(1.0, np.abs(ref)))[finite].max()) \
        if finite.any() else 0.0
    if threshold is not None:
        same = (ref > threshold) == (cand > threshold)
        near = ~same & (np.abs(ref - threshold) <= SCORE_NEAR_THRESHOLD)
        result.score_decision_agreement = float(((same | near) & finite).mean())
        result.score_near_threshold = int((near & finite).sum())
    return result


def parity_failures(results: list[ParityResult], precision: str) -> list[str]:
    """The parity gate: what fails it, per input set.

    Every input set: all outputs finite. fp32: max |p - p_ref| <= 1e-4 and scores within 1e-3 (relative);
    fp16/int8: top-1 agreement >= 99% on real images, and the same refusal decision on >= 99% of every set.

    Args:
        results: one ``ParityResult`` per input set (``compare_outputs``).
        precision: the candidate's precision; ``"fp32"`` gets the fp32 gate, any other the reduced one.

    Returns:
        One message per failed check, naming its input set; empty when the candidate passes.
    """
    failures = []
    for result in results:
        if result.nonfinite_reference:
            failures.append(f"{result.inputs}: the reference (Keras) model gives NaN/inf for "
                            f"{result.nonfinite_reference} of {result.count} inputs")
        if result.nonfinite_candidate:
            failures.append(f"{result.inputs}: {result.nonfinite_candidate} of {result.count} outputs are NaN/inf")
        if precision == "fp32" and not result.max_abs_diff <= FP32_MAX_ABS_DIFF:
            failures.append(f"{result.inputs}: max |difference| {result.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF:.0e}")
        if precision != "fp32" and result.inputs == "real images" and not result.top1_agreement >= REDUCED_MIN_TOP1:
            failures.append(f"{result.inputs}: top-1 agreement {result.top1_agreement:.1%} < {REDUCED_MIN_TOP1:.0%}")
        if result.score_max_rel_diff is None:
            continue
        if result.nonfinite_score_candidate:
            failures.append(f"{result.inputs}: {result.nonfinite_score_candidate} of {result.count} ood_scores are "
                            "NaN/inf")
        if precision == "fp32" and not result.score_max_rel_diff <= FP32_SCORE_MAX_REL_DIFF:
            failures.append(f"{result.inputs}: ood_score max relative difference {result.score_max_rel_diff:.2e} > "
                            f"{FP32_SCORE_MAX_REL_DIFF:.0e}")
        agreement = result.score_decision_agreement
        if precision != "fp32" and agreement is not None and not agreement >= REDUCED_MIN_DECISION_AGREEMENT:
            failures.append(f"{result.inputs}: the same refusal decision on {agreement:.1%} of images < "
                            f"{REDUCED_MIN_DECISION_AGREEMENT:.0%}")
    return failures
