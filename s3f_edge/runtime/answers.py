"""The rows of ``infer``: a model's answer to a batch of images, or the reason a file has none.

A row is ``ok`` (a class), ``refused`` (unlike the training images: probabilities kept for audit, no class) or
``error`` (no answer). Every executor of the inference loop (this machine, a Ray cluster) makes its rows here,
so the same image gets the same row wherever it was answered.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.contract import OOD_SCORE
from s3f_edge.results import ANSWER_SET, PROBABILITY_PREFIX, SET_SEPARATOR, SET_SIZE, file_fingerprint
from s3f_edge.runtime.predictor import nonfinite_rows

NONFINITE_REASON = "model output is NaN or infinite: the model or its export is broken"


def refusal_reason(score: float, threshold: float) -> str:
    """The reason of a refused row: what the score and the threshold were."""
    return (f"unlike the images the model was trained on (out-of-distribution score {score:.2f} > threshold "
            f"{threshold:.2f}): not classified")


def threshold_cell(threshold: float | None):
    """The ``ood_threshold`` cell of an answered row: the threshold, or empty when refusal was off."""
    return "" if threshold is None else round(float(threshold), 6)


def set_cells(predictor, probabilities) -> dict:
    """The ``answer_set`` and ``set_size`` cells of an ok row: the classes of the image's prediction set (by the
    file's own calibration), or empty cells for a model without sets. An empty set has size 0 and no class."""
    rule = predictor.set_rule
    if rule is None:
        return {ANSWER_SET: "", SET_SIZE: ""}
    from s3f_edge.runtime.calibration import prediction_sets

    method, threshold, _ = rule
    members = prediction_sets(np.asarray(probabilities, np.float64)[None, :], threshold, method)[0]
    names = [name for name, member in zip(predictor.class_names, members) if member]
    return {ANSWER_SET: SET_SEPARATOR.join(names), SET_SIZE: len(names)}


def make_row(path: Path, predictor, fingerprint: dict, probabilities=None, reason: str = "",
             score: float | None = None, refused: bool = False, threshold: float | None = None) -> dict:
    """One result row: ok (a class), refused (probabilities kept for audit, no class) or error (no outputs). Each
    answered row records the threshold it was decided with (empty: refusal was off or impossible), and every row
    the file as it was read (``fingerprint``)."""
    status = "error" if probabilities is None else "refused" if refused else "ok"
    row = {"path": str(path), "status": status, "reason": reason, "predicted_class": "",
           OOD_SCORE: "" if score is None else round(float(score), 4),
           "ood_threshold": "" if probabilities is None else threshold_cell(threshold), "model": predictor.name,
           "model_sha256": predictor.sha256}
    for index, name in enumerate(predictor.class_names):
        row[PROBABILITY_PREFIX + name] = "" if probabilities is None else round(float(probabilities[index]), 6)
    row[ANSWER_SET] = row[SET_SIZE] = ""
    if status == "ok":
        row["predicted_class"] = predictor.class_names[int(np.argmax(probabilities))]
        row.update(set_cells(predictor, probabilities))
    row.update(fingerprint)
    return row


def error_row(path: str | Path, predictor, reason: str, fingerprint: dict | None = None) -> dict:
    """The row of a file that has no answer (status error), with the reason.

    Args:
        path: the file, as the row names it.
        predictor: the model (its name and sha256 go in the row).
        reason: why there is no answer.
        fingerprint: the file as it was read (``results.file_fingerprint``); None: taken now.

    Returns:
        The row.
    """
    return make_row(Path(path), predictor, file_fingerprint(path) if fingerprint is None else fingerprint,
                    reason=reason)


def answer_images(predictor, paths: list, images: list, threshold: float | None,
                  fingerprints: list[dict] | None = None) -> list[dict]:
    """Rows for decoded images: one model call, then ok, refused (score above ``threshold``) or error (NaN output).

    Args:
        predictor: the loaded ``Predictor``.
        paths: the images' files (as their rows name them).
        images: the preprocessed images, one per path.
        threshold: refuse above this out-of-distribution score; None: refuse nothing.
        fingerprints: each file as it was read (``Decoded.fingerprint``); None: taken now.

    Returns:
        One row per path, in order.
    """
    if fingerprints is None:
        fingerprints = [file_fingerprint(path) for path in paths]
    return answer_batch(predictor, paths, np.stack(images), threshold, fingerprints)[0]


def answer_batch(predictor, paths: list, batch: np.ndarray, threshold: float | None,
                 fingerprints: list[dict]) -> tuple[list[dict], np.ndarray]:
    """``answer_images`` for a stacked batch (N, H, W, C), and the model's probabilities (N, K) the rows came from
    (Grad-CAM explains the class they give)."""
    probabilities, scores = predictor.predict_scored(batch)
    broken = nonfinite_rows(probabilities)
    if scores is not None:
        broken |= ~np.isfinite(scores)
    rows = []
    for index, (path, probs, fingerprint) in enumerate(zip(paths, probabilities, fingerprints)):
        if broken[index]:  # never report a class for NaN probabilities (argmax of NaN is 0)
            rows.append(make_row(Path(path), predictor, fingerprint, reason=NONFINITE_REASON))
            continue
        score = None if scores is None else float(scores[index])
        if threshold is not None and score is not None and score > threshold:
            rows.append(make_row(Path(path), predictor, fingerprint, probs, refusal_reason(score, threshold), score,
                                 refused=True, threshold=threshold))
        else:
            rows.append(make_row(Path(path), predictor, fingerprint, probs, score=score, threshold=threshold))
    return rows, probabilities
