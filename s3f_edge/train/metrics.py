"""Classification metrics and report figures, shared by train and evaluate: those the original evaluation reports
(accuracy, macro and weighted F1, Cohen's kappa, MCC, one-vs-rest ROC-AUC, per-class report, confusion matrix)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.runtime.calibration import (  # noqa: F401 (re-exported: train's callers import them from here)
    ECE_BINS,
    expected_calibration_error,
    reliability_bins,
)
from s3f_edge.runtime.predictor import class_probabilities


def selection_score(labels: np.ndarray, probabilities: np.ndarray, binary_positive: bool) -> float:
    """The checkpoint criterion: weighted F1, or the positive class's F1 for a sigmoid model."""
    from sklearn.metrics import f1_score

    predicted = probabilities.argmax(axis=1)
    if binary_positive:
        return float(f1_score(labels, predicted, pos_label=1, average="binary", zero_division=0))
    return float(f1_score(labels, predicted, average="weighted", zero_division=0))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """The unweighted mean of every class's F1 (scikit-learn's), the one macro-F1 of every report.

    Args:
        labels: true class indices (N,).
        predicted: predicted class indices (N,).
        num_classes: K; a class absent from both ``labels`` and ``predicted`` counts as F1 0.

    Returns:
        Macro-F1 in [0, 1].
    """
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, labels=list(range(num_classes)), average="macro", zero_division=0))


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], out_path: Path, title: str) -> Path:
    """A reliability diagram: accuracy against confidence per bin, one line per named (labels, probabilities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
    for name, (labels, probabilities) in curves.items():
        filled = [b for b in reliability_bins(labels, probabilities) if b["count"]]
        ece = expected_calibration_error(labels, probabilities)
        ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o-",
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1, Cohen's kappa, MCC, ROC-AUC, confusion matrix."""
    from sklearn import metrics

    labels = np.asarray(labels)
    probabilities = class_probabilities(probabilities)
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(class_names)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    result = {
        "count": int(len(labels)),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "f1_macro": macro_f1(labels, predicted, len(class_names)),
        "f1_weighted": float(metrics.f1_score(labels, predicted, labels=indices, average="weighted", zero_division=0)),
        "cohen_kappa": float(metrics.cohen_kappa_score(labels, predicted)),
        "mcc": float(metrics.matthews_corrcoef(labels, predicted)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=indices).tolist(),
        "ece": expected_calibration_error(labels, probabilities),
        "mean_confidence": float(probabilities.max(axis=1).mean()) if len(labels) else None,
        "roc_auc_macro": None,
        "roc_auc_weighted": None,
    }
    present = np.unique(labels)
    if len(present) == len(class_names):  # AUC is undefined when a class is absent
        if len(class_names) == 2:
            auc = float(metrics.roc_auc_score(labels, probabilities[:, 1]))
            result["roc_auc_macro"] = result["roc_auc_weighted"] = auc
        else:
            for average in ("macro", "weighted"):
                result[f"roc_auc_{average}"] = float(
                    metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average=average, labels=indices)
                )
    return result


def plot_names(prefix: str) -> tuple[str, str]:
    """The file names ``plot_confusion_and_roc`` writes for ``prefix``."""
    return f"{prefix}_confusion_matrix.png", f"{prefix}_roc.png"


def plot_confusion_and_roc(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], out_dir: Path, prefix: str, title: str
) -> list[Path]:
    """Write the confusion matrix and ROC plots (``plot_names(prefix)``) into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    probabilities = class_probabilities(probabilities)
    predicted = probabilities.argmax(axis=1)
    written = []
    confusion_name, roc_name = plot_names(prefix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 3, 1.2 * len(class_names) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        labels, predicted, labels=list(range(len(class_names))), display_labels=class_names, ax=ax, colorbar=False
    )
    ax.set_title(f"{title}: confusion matrix")
    fig.tight_layout()
    written.append(out_dir / confusion_name)
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    for index, name in enumerate(class_names):
        if 0 < (labels == index).sum() < len(labels):
            RocCurveDisplay.from_predictions(labels == index, probabilities[:, index], name=name, ax=ax)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_title(f"{title}: ROC (one vs rest)")
    fig.tight_layout()
    written.append(out_dir / roc_name)
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def plot_history(history_csv: Path, out_path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("loss", axes[0]), ("accuracy", axes[1])):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows[0]:
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], style, label=prefix + key)
        if key == "accuracy" and "val_selection_score" in rows[0]:
            ax.plot(epochs, [float(r["val_selection_score"]) for r in rows], ":", label="val selection F1")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)


def set_metrics(sets: np.ndarray, labels: np.ndarray, class_names: list[str], level: float = 0.95) -> dict:
    """How prediction sets did on labelled images: empirical coverage with its exact binomial interval, mean size,
    the shares of single-class and empty sets, and coverage per class.

    Args:
        sets: (N, K) booleans, the classes in each image's set.
        labels: the true classes (N,).
        class_names: the K class names.
        level: the interval's confidence (Clopper-Pearson).

    Returns:
        count, coverage, coverage_interval, mean_size, single, empty, coverage_per_class ({} for no images).
    """
    from scipy.stats import binomtest

    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"count": 0}
    covered = sets[np.arange(len(labels)), labels]
    sizes = sets.sum(axis=1)
    interval = binomtest(int(covered.sum()), len(labels)).proportion_ci(level, method="exact")
    return {"count": int(len(labels)), "coverage": float(covered.mean()),
            "coverage_interval": [float(interval.low), float(interval.high)], "mean_size": float(sizes.mean()),
            "single": float((sizes == 1).mean()), "empty": float((sizes == 0).mean()),
            "coverage_per_class": {name: float(covered[labels == index].mean())
                                   for index, name in enumerate(class_names) if (labels == index).any()}}


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Selective classification: answering only the most confident images (top probability), the error rate of
    the answered ones at every coverage, and its area (AURC; lower is better), with the area a perfect ranking
    of the same errors would give.

    Returns:
        aurc, aurc_optimal, and the curve as coverages and risks (one point per image).
    """
    probabilities = class_probabilities(probabilities)
    wrong = (probabilities.argmax(axis=1) != np.asarray(labels)).astype(np.float64)
    order = np.argsort(-probabilities.max(axis=1), kind="stable")
    answered = np.arange(1, len(wrong) + 1)
    risks = np.cumsum(wrong[order]) / answered
    optimal = np.cumsum(np.sort(wrong)) / answered
    return {"aurc": float(risks.mean()), "aurc_optimal": float(optimal.mean()),
            "coverages": (answered / len(wrong)).tolist(), "risks": risks.tolist()}
