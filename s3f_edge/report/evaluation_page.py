"""The review page of ``evaluate``: metrics, a confusion matrix that opens onto its images, the plots, and the
most confident mistakes."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from s3f_edge.report.page import render, write_page
from s3f_edge.report.results_page import check_report_path
from s3f_edge.report.thumbnails import DEFAULT_SIZE, file_thumbnails

WORST_ERRORS = 16  # the most confident wrong answers shown as images

METRIC_LABELS = {
    "count": "images scored", "accuracy": "accuracy", "f1_macro": "macro-F1", "f1_weighted": "weighted F1",
    "cohen_kappa": "Cohen's κ", "mcc": "Matthews correlation", "roc_auc_macro": "ROC-AUC (macro, one vs rest)",
    "roc_auc_weighted": "ROC-AUC (weighted)", "ece": "expected calibration error (15 bins)",
    "mean_confidence": "mean confidence",
}


def _png_uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{float(value):.4f}"


def evaluation_rows(paths: list[Path], labels: np.ndarray, probabilities: np.ndarray, scores: np.ndarray | None,
                    thumbnails: list[str | None]) -> list[dict]:
    """One dict per scored image, as the page's script reads it.

    Args:
        paths: the scored images' files, in the order of ``labels``.
        labels: (N,) true class indices.
        probabilities: (N, K) the model's probabilities.
        scores: (N,) out-of-distribution scores, or None for a model without a score.
        thumbnails: one data URI or None per image.

    Returns:
        Dicts with path, truth, predicted (class indices), confidence (the top probability), probs, ood, thumb.
    """
    predicted = probabilities.argmax(axis=1)
    return [{"path": str(path), "truth": int(label), "predicted": int(guess),
             "confidence": float(probs[guess]), "probs": [round(float(p), 6) for p in probs],
             "ood": None if scores is None else float(scores[index]), "thumb": thumb}
            for index, (path, label, guess, probs, thumb)
            in enumerate(zip(paths, labels, predicted, probabilities, thumbnails))]


def write_evaluation_report(out: str | Path, report: dict, paths: list[Path], labels: np.ndarray,
                            probabilities: np.ndarray, scores: np.ndarray | None, class_names: list[str],
                            plots: dict[str, Path], thumbnail_size: int = DEFAULT_SIZE, workers: int = 4,
                            progress: bool = False) -> Path:
    """Write one self-contained HTML page of an evaluation.

    Args:
        out: the page to write (.html); replaced if it exists (``evaluate`` checks it before its work).
        report: what ``evaluate_folder`` returns (model, data, metrics, ood).
        paths: the scored images' files, in the order of ``labels``.
        labels: (N,) true class indices.
        probabilities: (N, K) the model's probabilities.
        scores: (N,) out-of-distribution scores, or None.
        class_names: the K class names.
        plots: title -> PNG file to embed (e.g. the ROC curves and the reliability diagram); missing files are
            left out.
        thumbnail_size: the longer side of each embedded image, in pixels.
        workers: decoding threads for the thumbnails.
        progress: show a progress bar on stderr.

    Returns:
        The page's path.
    """
    thumbnails = file_thumbnails(paths, thumbnail_size, workers, progress)
    metrics = report["metrics"]
    ood = report.get("ood")
    html = render(
        "evaluation.html.j2", ["common.js", "evaluation.js"],
        data={"classes": class_names, "rows": evaluation_rows(paths, labels, probabilities, scores, thumbnails),
              "worst": WORST_ERRORS},
        title=f"Evaluation: {Path(report['model']).name} on {report['data']}", report=report,
        metrics=[(label, _cell(metrics.get(key))) for key, label in METRIC_LABELS.items() if key in metrics],
        per_class=[(name, *(_cell(values[k]) for k in ("precision", "recall", "f1", "support")))
                   for name, values in metrics["per_class"].items()],
        classes=class_names, confusion=metrics["confusion_matrix"],
        plots=[(title, uri) for title, uri in ((t, _png_uri(Path(p))) for t, p in plots.items()) if uri],
        ood=ood, ood_folders=[(folder, values) for folder, values in (ood or {}).get("folders", {}).items()],
        percent=lambda value: "n/a" if value is None else f"{100 * value:.2f} %")
    return write_page(out, html)


__all__ = ["check_report_path", "evaluation_rows", "write_evaluation_report"]
