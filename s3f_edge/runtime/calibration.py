"""A model file's calibration, fitted on that file's own outputs, and its uses: the temperature, the refusal
threshold, the conformal prediction sets, and how uncertain each figure is.

One implementation for every file. ``train`` and ``calibrate`` fit a Keras model from its logits; ``export``
fits each file it writes (ONNX FP32, FP16, INT8; a TensorRT engine) from the logits its probabilities give back
(``logits_from_probabilities``) and from its own out-of-distribution scores, over the same validation images,
so that a quantized file's guarantees are its own and not copied from the float model.

- Temperature: T minimising the negative log-likelihood (NLL) of softmax(logits / T) on the validation images,
  applied only if it also lowers the NLL of validation images it was not fitted on (two-fold cross-fitting).
- Refusal: the threshold accepts ``keep`` of the validation images. This is a conformal test: an image is
  refused exactly when its score's p-value against the validation scores, (1 + #{validation >= score}) / (n + 1),
  is at most about 1 - keep (``refusal_p_values``; the test suite checks the equivalence).
- Prediction sets (split conformal; Vovk et al. 2005, Angelopoulos & Bates 2021): the score of an image is
  1 - p(true class) (LAC: least ambiguous set-valued classifier, Sadinle et al. 2019); the
  threshold is the ceil((n + 1) * coverage)-th smallest score over the n accepted validation images. A new image
  exchangeable with them gets a set holding its true class with probability >= coverage. A LAC set may be empty:
  no class is plausible enough, which is an answer of its own.

numpy only at import; scipy is imported when a temperature is fitted (train and export have it).
"""
from __future__ import annotations

import math

import numpy as np

from s3f_edge.errors import InputError
from s3f_edge.runtime.predictor import class_probabilities

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)
DEFAULT_KEEP = 0.99  # the threshold accepts this share of the validation images
DEFAULT_COVERAGE = 0.95
# LAC, chosen by measurement (benchmarks/prediction_sets.py): on the bundled model its 95 % sets cover 96 % of the
# test images with 0.98 classes on average; APS sets (MAPIE's) cover over 99 % with about 1.2.
SET_METHOD = "lac"
SET_METHODS = (SET_METHOD,)
# From this many validation images on, the coverage a 95 % set reaches on new images varies by about one point
# (one standard deviation) from one validation sample to another; below it, messages say the figures are uncertain.
FIRM_IMAGES = 500
FIRM_SPREAD = 0.01


def two_column_logits(logits: np.ndarray) -> np.ndarray:
    """(N, K) logits as they are; one sigmoid unit's (N, 1) as the softmax logits (0, z) it equals."""
    logits = np.asarray(logits, np.float64)
    return np.concatenate([np.zeros_like(logits), logits], axis=1) if logits.shape[1] == 1 else logits


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as the model's probs output gives it ([1 - p, p] for one sigmoid unit)."""
    logits = two_column_logits(logits) / temperature
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def logits_from_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The logits a temperature-scaled file computed, up to a constant per image (which softmax ignores):
    T * log p. A probability that underflowed to 0 becomes the log of the smallest float32, so that it stays the
    least likely class instead of an infinite logit."""
    probabilities = np.clip(class_probabilities(probabilities), np.finfo(np.float32).tiny, None)
    return temperature * np.log(probabilities)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """The mean negative log-likelihood of the true classes under softmax(logits / T)."""
    logits = two_column_logits(logits) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_norm = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
    labels = np.asarray(labels)
    return float((log_norm - logits[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) on held-out images.

    Args:
        logits: (N, K), or (N, 1) for one sigmoid unit.
        labels: true class indices (N,).

    Returns:
        T in [0.05, 20] (searched on log T, bounded: a degenerate split cannot send it to 0 or infinity).
    """
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, np.exp(log_t)),
                            bounds=tuple(np.log(TEMPERATURE_BOUNDS)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def choose_temperature(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, str | None, dict]:
    """The temperature to apply, the reason when it is 1, and the log-likelihoods that decided it.

    T is fitted on all the images, but applied only when fitting it on one half of them lowers the NLL of the
    other half (both ways round, seeded halves): a temperature that does not generalise within the validation
    split would not on new images either.

    Args:
        logits: (N, K) or (N, 1) validation logits.
        labels: their classes.
        seed: the halves' seed.

    Returns:
        (T, note or None, {"before", "after": NLL at T = 1 and at the T returned, "held_out_before",
        "held_out_after": the cross-fitted NLL at T = 1 and at the halves' temperatures}).
    """
    logits, labels = two_column_logits(logits), np.asarray(labels)
    before = negative_log_likelihood(logits, labels)
    if (logits.argmax(axis=1) == labels).all():
        note = "no validation image is misclassified, so the temperature cannot be fitted: kept 1"
        return 1.0, note, {"before": before, "after": before}
    temperature = fit_temperature(logits, labels)
    if not TEMPERATURE_BOUNDS[0] * 1.05 < temperature < TEMPERATURE_BOUNDS[1] / 1.05:
        note = f"the fitted temperature ({temperature:.3f}) reached the search's bound: kept 1"
        return 1.0, note, {"before": before, "after": before}
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    held_before = held_after = 0.0
    for fit, other in (halves, halves[::-1]):
        fitted = fit_temperature(logits[fit], labels[fit])
        held_before += negative_log_likelihood(logits[other], labels[other]) * len(other) / len(labels)
        held_after += negative_log_likelihood(logits[other], labels[other], fitted) * len(other) / len(labels)
    nll = {"held_out_before": held_before, "held_out_after": held_after}
    if held_after >= held_before:
        note = (f"the temperature did not lower the log-likelihood of validation images it was not fitted on "
                f"(cross-fitted NLL {held_before:.4f} -> {held_after:.4f}): not applied, kept 1")
        return 1.0, note, {"before": before, "after": before, **nll}
    return temperature, None, {"before": before, "after": negative_log_likelihood(logits, labels, temperature), **nll}


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, image count, mean confidence and accuracy (the reliability diagram's bars)."""
    probabilities = class_probabilities(probabilities)
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
             "accuracy": float(correct[which == b].mean()) if (which == b).any() else None} for b in range(bins)]


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """The gap between confidence and accuracy (Guo et al., ICML 2017): the top probability of each image, in
    ``bins`` equal-width bins, |accuracy - mean confidence| weighted by the bin's share of images.

    Args:
        labels: true class indices (N,).
        probabilities: (N, K), or (N, 1) for a single sigmoid unit.

    Returns:
        ECE in [0, 1], or None for no images.
    """
    if len(labels) == 0:
        return None
    gaps = [abs(b["accuracy"] - b["confidence"]) * (b["count"] / len(labels))
            for b in reliability_bins(labels, probabilities, bins) if b["count"]]
    return float(np.sum(gaps))


def ece_interval(labels: np.ndarray, probabilities: np.ndarray, rounds: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of the ECE (images resampled with replacement, seeded percentile interval): how
    far the figure could move on another sample of as many images."""
    labels, probabilities = np.asarray(labels), class_probabilities(probabilities)
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(labels[pick], probabilities[pick])
              for pick in (rng.integers(0, len(labels), len(labels)) for _ in range(rounds))]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def threshold_keeping(in_distribution_scores: np.ndarray, keep: float = DEFAULT_KEEP) -> float:
    """The score under which ``keep`` of the in-distribution images fall: images above it are refused.

    Args:
        in_distribution_scores: scores of held-out in-distribution images (the validation split).
        keep: the share of them to accept.

    Returns:
        The threshold (an observed score: the smallest at or above the ``keep`` quantile).
    """
    if not 0 < keep <= 1:
        raise InputError(f"the share of in-distribution images to keep must be in (0, 1], got {keep}")
    scores = np.asarray(in_distribution_scores, np.float64)
    if len(scores) == 0 or not np.isfinite(scores).all():
        raise InputError("the threshold needs finite scores of at least one in-distribution image")
    return float(np.quantile(scores, keep, method="higher"))


def refusal_p_values(reference_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each score's conformal p-value against in-distribution reference scores: (1 + #{reference >= score}) /
    (n + 1). Small means unlike the reference images; under exchangeability with them, P(p <= a) <= a."""
    reference = np.sort(np.asarray(reference_scores, np.float64))
    at_or_above = len(reference) - np.searchsorted(reference, np.asarray(scores, np.float64), side="left")
    return (1 + at_or_above) / (len(reference) + 1)


def conformal_scores(probabilities: np.ndarray, labels: np.ndarray, method: str = SET_METHOD) -> np.ndarray:
    """How non-conforming each labelled image is: 1 - p(true class) (LAC)."""
    _check_method(method)
    probabilities, labels = class_probabilities(probabilities), np.asarray(labels)
    return 1.0 - probabilities[np.arange(len(labels)), labels]


def _check_method(method: str) -> None:
    if method not in SET_METHODS:
        raise InputError(f"prediction set method must be one of {', '.join(SET_METHODS)}, got {method!r}; a newer "
                         "s3f-edge may have written this file")


def set_threshold(probabilities: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE,
                  method: str = SET_METHOD) -> float:
    """The conformal threshold for sets holding the true class with probability >= ``coverage``.

    Args:
        probabilities: (N, K) calibrated probabilities of the calibration images.
        labels: their classes.
        coverage: the chosen coverage, in (0, 1).
        method: the conformal score (``SET_METHODS``).

    Returns:
        The ceil((n + 1) * coverage)-th smallest score; with too few images for that rank, the largest score a
        set can have (every class in every set: no smaller set would keep the guarantee).
    """
    if not 0 < coverage < 1:
        raise InputError(f"the coverage of prediction sets must be in (0, 1), got {coverage}")
    scores = np.sort(conformal_scores(probabilities, labels, method))
    rank = math.ceil((len(scores) + 1) * coverage)
    return 1.0 if rank > len(scores) else float(scores[rank - 1])


def prediction_sets(probabilities: np.ndarray, threshold: float, method: str = SET_METHOD) -> np.ndarray:
    """(N, K) booleans: the classes in each image's set, every class whose score would be at most ``threshold``.

    Args:
        probabilities: (N, K) calibrated probabilities (the file's probs output).
        threshold: the fitted set threshold (``set_threshold``).
        method: the method it was fitted with.
    """
    _check_method(method)
    return 1.0 - class_probabilities(probabilities) <= threshold


def coverage_spread(images: int, coverage: float) -> float:
    """The standard deviation of the coverage a conformal threshold fitted on ``images`` images reaches on new
    ones: Beta(l, n + 1 - l) with l = ceil((n + 1) * coverage) (Vovk 2012; Angelopoulos & Bates 2021, sec. 3)."""
    n = images
    rank = min(math.ceil((n + 1) * coverage), n)
    return math.sqrt(rank * (n + 1 - rank) / ((n + 1) ** 2 * (n + 2)))


def fit_calibration(logits: np.ndarray, labels: np.ndarray, scores: np.ndarray | None, *,
                    keep: float = DEFAULT_KEEP, coverages: tuple[float, ...] = (DEFAULT_COVERAGE,),
                    method: str = SET_METHOD, seed: int = 0, temperature: float | None = None) -> dict:
    """A file's temperature, refusal threshold and prediction-set thresholds, from its own outputs on the
    validation images, with the figures that say how well they were fitted.

    Args:
        logits: (N, K) or (N, 1): the file's logits before any temperature (``logits_from_probabilities``).
        labels: the images' classes.
        scores: the file's out-of-distribution scores (N,); None: no refusal (no threshold, sets over all images).
        keep: the share of validation images the threshold accepts.
        coverages: the coverages of the stored sets; the first is the one ``infer`` uses.
        method: the sets' conformal score.
        seed: for the temperature's halves and the ECE's bootstrap.
        temperature: keep this temperature instead of fitting one (a file whose graph cannot be changed).

    Returns:
        The ``calibration`` metadata's fitted part: temperature (and temperature_note), nll_validation,
        ece_validation (with the after figure's bootstrap interval), ood (threshold, keep, refused share and
        count), sets (method, coverage, threshold, levels, mean size on the validation images), images.
    """
    logits, labels = two_column_logits(logits), np.asarray(labels)
    if temperature is None:
        temperature, note, nll = choose_temperature(logits, labels, seed)
    else:
        note = "the temperature of the file it was built from, kept"
        nll = {"before": negative_log_likelihood(logits, labels),
               "after": negative_log_likelihood(logits, labels, temperature)}
    probabilities = scaled_probabilities(logits, temperature)
    before = scaled_probabilities(logits, 1.0)
    accepted = np.ones(len(labels), bool)
    result = {"temperature": round(temperature, 6), **({"temperature_note": note} if note else {}),
              "nll_validation": nll,
              "ece_validation": {"before": expected_calibration_error(labels, before),
                                 "after": expected_calibration_error(labels, probabilities),
                                 "after_interval": list(ece_interval(labels, probabilities, seed=seed))}}
    if scores is not None:
        threshold = threshold_keeping(scores, keep)
        accepted = np.asarray(scores) <= threshold
        result["ood"] = {"threshold": threshold, "keep": keep, "validation_refused": float((~accepted).mean()),
                         "validation_refused_count": int((~accepted).sum())}
    levels = [{"coverage": c, "threshold": set_threshold(probabilities[accepted], labels[accepted], c, method)}
              for c in coverages]
    sets = prediction_sets(probabilities[accepted], levels[0]["threshold"], method)
    result["sets"] = {"method": method, "coverage": levels[0]["coverage"], "threshold": levels[0]["threshold"],
                      "levels": levels, "validation_mean_size": float(sets.sum(axis=1).mean()),
                      "validation_images": int(accepted.sum())}
    result["images"] = int(len(labels))
    return result


def uncertainty_note(calibration: dict) -> str | None:
    """A sentence for a calibration fitted on fewer than ``FIRM_IMAGES`` images: how far its figures may be off,
    and how many images would make them firm; None from ``FIRM_IMAGES`` images on."""
    sets = calibration.get("sets") or {}
    images = sets.get("validation_images") or calibration.get("images")
    if not images or images >= FIRM_IMAGES:
        return None
    coverage = sets.get("coverage", DEFAULT_COVERAGE)
    keep = (calibration.get("ood") or {}).get("keep", DEFAULT_KEEP)
    spread = 100 * coverage_spread(images, coverage)
    return (f"only {images} validation images, so these figures are uncertain: from one such sample to another, "
            f"the coverage of {coverage:.0%} sets on new images varies by +/-{spread:.1f} points and the refused "
            f"share by +/-{100 * coverage_spread(images, keep):.1f} (one standard deviation); "
            f"about {FIRM_IMAGES} validation images would bring the coverage's to "
            f"+/-{100 * coverage_spread(FIRM_IMAGES, coverage):.1f}")


def calibration_lines(calibration: dict) -> list[str]:
    """What a calibration did, in lines for people: the temperature with the log-likelihood it lowered and the
    ECE with its interval, the refusal threshold with its count, the sets, and the small-sample note."""
    nll, ece = calibration.get("nll_validation") or {}, calibration["ece_validation"]
    images = calibration.get("images") or (calibration.get("fitted_on") or {}).get("validation_images")
    interval = ece.get("after_interval")
    spread = f" (95% interval {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
    nll_text = f": validation NLL {nll['before']:.4f} -> {nll['after']:.4f}" if "before" in nll else ""
    if "held_out_after" in nll:
        nll_text += f" ({nll['held_out_after']:.4f} on the halves it was not fitted on)"
    lines = [f"temperature {calibration['temperature']:.3f}, chosen by log-likelihood{nll_text}; "
             f"ECE {ece['before']:.4f} -> {ece['after']:.4f}{spread}"]
    if calibration.get("temperature_note"):
        lines.append(f"note: {calibration['temperature_note']}")
    ood = calibration.get("ood")
    if ood:
        count = ood.get("validation_refused_count")
        of = f"{count} of {images}, " if count is not None and images else ""
        lines.append(f"refusal: images scoring over {ood['threshold']:.3f} are refused as unlike the training images "
                     f"(the threshold accepts {ood['keep']:.0%} of the validation images; refused there: "
                     f"{of}{ood['validation_refused']:.1%})")
    sets = calibration.get("sets")
    if sets:
        lines.append(f"prediction sets ({sets['method'].upper()}): at {sets['coverage']:.0%} coverage a set holds "
                     f"every class with probability >= {1 - sets['threshold']:.3f}"
                     if sets["method"] == "lac" else
                     f"prediction sets ({sets['method'].upper()}) at {sets['coverage']:.0%} coverage")
        lines[-1] += f"; {sets['validation_mean_size']:.2f} classes per set on the validation images"
    note = uncertainty_note(calibration)
    if note:
        lines.append(f"note: {note}")
    return lines
