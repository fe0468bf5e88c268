"""Out-of-distribution scores, fitted after training on a model's own penultimate features (numpy).

Higher means less like the training images. Four scores are measured (``benchmarks/ood_methods.py``):

- ``msp``: minus the maximum softmax probability (Hendrycks & Gimpel, 2017): the baseline, which the
  softmax's overconfidence defeats.
- ``energy``: minus the log-sum-exp of the logits (Liu et al., NeurIPS 2020).
- ``mahalanobis``: the squared Mahalanobis distance to the nearest class mean, with one covariance shared by
  the classes (Lee et al., NeurIPS 2018), estimated with Ledoit-Wolf shrinkage (scikit-learn) so that it
  stays invertible when features outnumber images or some never fire.
- ``knn``: the cosine distance to the k-th nearest training image in L2-normalised feature space (Sun et al.,
  ICML 2022).

The score s3f-edge adopts (``block_scores``, measured best: docs/calibration.md) applies the Mahalanobis
score to the outputs of the convolutional blocks, summarised per channel by their mean and spread over the
image, not only to the penultimate features: an image of another modality differs most in the blocks'
statistics, which the classifier's last features were trained to ignore. Each block's distance is
standardised by its mean and spread over the validation split, and the score is the largest of them.

These functions are the reference: the ``OutOfDistributionScore`` layer computes ``block_scores`` inside the
model graph (and so inside every exported file), and a test holds the two equal. The threshold is chosen on
in-distribution images alone (``threshold_keeping``); out-of-distribution images are for measuring it, never
for fitting it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s3f_edge.errors import InputError
from s3f_edge.runtime.calibration import threshold_keeping, two_column_logits  # noqa: F401 (re-exported)

METHODS = ("msp", "energy", "mahalanobis", "knn")
KNN_NEIGHBOUR = 10  # Sun et al.'s k for a bank of a few thousand images (their ablation: k = 1..1000 stable)


@dataclass
class FittedScore:
    """What a score needs beyond the model's own weights: arrays for the graph, provenance for the metadata."""

    method: str
    whitening: np.ndarray | None = None  # mahalanobis: (d, d), with |x W|^2 = x' Sigma^-1 x
    class_means: np.ndarray | None = None  # mahalanobis: (K, d) class means, whitened
    bank: np.ndarray | None = None  # knn: (n, d) L2-normalised training features
    neighbour: int = KNN_NEIGHBOUR  # knn: k
    images: int = 0  # training images fitted on


def refusal_summary(correct: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """The share of images refused (score above ``threshold``) and the accuracy on the ones accepted (None: none).

    Args:
        correct: whether each image's class was right (N,).
        scores: their out-of-distribution scores (N,).
        threshold: refuse above this.
    """
    accepted = np.asarray(scores) <= threshold
    return {"refused": float(1 - accepted.mean()),
            "accuracy_accepted": float(np.asarray(correct)[accepted].mean()) if accepted.any() else None}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_score(method: str, features: np.ndarray, labels: np.ndarray, max_bank: int = 4096,
              seed: int = 0) -> FittedScore:
    """Fit ``method`` on training features (N, d) and their labels (N,).

    Args:
        method: one of ``METHODS``.
        features: penultimate features of training images (float).
        labels: their class indices.
        max_bank: knn keeps a seeded sample of at most this many images (its cost grows with the bank).
        seed: seeds that sample.

    Returns:
        The fitted statistics (nothing to fit for msp and energy).
    """
    if method not in METHODS:
        raise InputError(f"unknown out-of-distribution score {method!r}; choose one of {', '.join(METHODS)}")
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if method == "mahalanobis":
        from sklearn.covariance import LedoitWolf

        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        whitening = np.linalg.cholesky((precision + precision.T) / 2)  # P = L L': |x L|^2 = x' P x
        return FittedScore(method, whitening=whitening, class_means=means @ whitening, images=len(features))
    if method == "knn":
        picked = np.arange(len(features))
        if len(picked) > max_bank:
            picked = np.sort(np.random.default_rng(seed).choice(len(features), max_bank, replace=False))
        bank = normalise(features[picked])
        return FittedScore(method, bank=bank, neighbour=min(KNN_NEIGHBOUR, len(bank)), images=len(features))
    return FittedScore(method, images=len(features))


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def score(fitted: FittedScore, features: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
    """The out-of-distribution score of each image (higher: less like the training images).

    Args:
        fitted: from ``fit_score``.
        features: features (N, d) (mean-pooled, for a feature map).
        logits: the head's logits (N, K), one column for a single sigmoid unit; msp and energy only.

    Returns:
        (N,) float64 scores.
    """
    features = np.asarray(features, np.float64)
    if fitted.method in ("msp", "energy"):
        if logits is None:
            raise InputError(f"the {fitted.method} score needs the logits")
        logits = two_column_logits(logits)  # a sigmoid unit: a softmax over (0, z)
    if fitted.method == "msp":
        return -softmax(logits).max(axis=1)
    if fitted.method == "energy":
        top = logits.max(axis=1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
    if fitted.method == "mahalanobis":
        whitened = features @ fitted.whitening
        distances = ((whitened[:, None, :] - fitted.class_means[None, :, :]) ** 2).sum(axis=2)
        return distances.min(axis=1)
    similarity = normalise(features) @ fitted.bank.T
    kth = -np.partition(-similarity, fitted.neighbour - 1, axis=1)[:, fitted.neighbour - 1]
    return 1.0 - kth


def pooled(features: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """A feature map (N, H, W, C) summarised per channel over height and width: its mean (N, C), or for
    ``pooling="mean_std"`` its mean and standard deviation (N, 2C); a vector (N, d) as it is."""
    features = np.asarray(features, np.float64)
    if features.ndim != 4:
        return features
    mean = features.mean(axis=(1, 2))
    return mean if pooling == "mean" else np.concatenate([mean, features.std(axis=(1, 2))], axis=1)


NORMALISATIONS = ("mean_std", "quantile")
QUANTILE_NORMALISATION = 0.99  # "quantile": each block's distance is 1 at this quantile of the validation images


def fit_blocks(fit_features: list[np.ndarray], labels: np.ndarray, validation_features: list[np.ndarray],
               pooling: str = "mean", normalisation: str = "mean_std") -> list[dict]:
    """Fit the adopted score: per block, a Mahalanobis score on training images, standardised on validation ones.

    Args:
        fit_features: per block, feature maps (or already pooled features) of training images.
        labels: their class indices.
        validation_features: per block, the same of held-out in-distribution images.
        pooling: how a feature map is summarised (``pooled``).
        normalisation: how each block's distances are put on one scale before the largest is taken: by their
            mean and standard deviation over the validation images (``"mean_std"``), or by their median and their
            ``QUANTILE_NORMALISATION`` quantile (``"quantile"``: every block then refuses about the same share of
            validation images on its own).

    Returns:
        Per block: whitening, class_means (whitened), location and scale: the ``OutOfDistributionScore`` weights.
    """
    if normalisation not in NORMALISATIONS:
        raise InputError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    statistics = []
    for fit, validation in zip(fit_features, validation_features):
        fitted = fit_score("mahalanobis", pooled(fit, pooling), labels)
        distances = score(fitted, pooled(validation, pooling))
        if normalisation == "mean_std":
            location, scale = float(distances.mean()), float(distances.std())
        else:
            location = float(np.median(distances))
            scale = float(np.quantile(distances, QUANTILE_NORMALISATION)) - location
        statistics.append({"whitening": fitted.whitening, "class_means": fitted.class_means,
                           "location": location, "scale": max(scale, 1e-12)})
    return statistics


def block_scores(statistics: list[dict], features: list[np.ndarray], pooling: str = "mean") -> np.ndarray:
    """The adopted score of each image: the largest standardised block distance (what the layer computes).

    Args:
        statistics: from ``fit_blocks``.
        features: per block, feature maps (or already pooled features) of the images to score.
        pooling: as given to ``fit_blocks``.

    Returns:
        (N,) float64 scores.
    """
    standardised = []
    for values, block in zip(statistics, features):
        fitted = FittedScore("mahalanobis", whitening=values["whitening"], class_means=values["class_means"])
        standardised.append((score(fitted, pooled(block, pooling)) - values["location"]) / values["scale"])
    return np.max(np.stack(standardised, axis=1), axis=1)


