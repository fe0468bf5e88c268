"""`s3f-edge evaluate`: the training report's metrics and plots for any folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.contract import PROBS
from s3f_edge.outputs import write_json
from s3f_edge.train.metrics import classification_metrics, plot_confusion_and_roc, plot_names
from s3f_edge.train.ood import refusal_summary


def batched_predict(model, batch_size: int):
    """images -> the model's probabilities, one batch at a time (``model.forward.batched_outputs``)."""
    import keras

    from s3f_edge.model.calibration import head, is_calibrated
    from s3f_edge.model.forward import batched_outputs

    probabilities = keras.Model(model.inputs, model.get_layer(PROBS).output) if is_calibrated(model) else model
    units = head(model).units

    def predict(images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, units), np.float32)
        return batched_outputs(probabilities, images, batch_size)[0]

    return predict


def evaluate_arrays(model, images: np.ndarray, labels: np.ndarray, class_names: list[str], out_dir: Path,
                    prefix: str, batch_size: int = 32) -> dict:
    """Metrics of ``model`` on preprocessed arrays, plus confusion-matrix and ROC PNGs in ``out_dir``."""
    return score_outputs(batched_predict(model, batch_size)(images), labels, class_names, out_dir, prefix)


def score_outputs(raw: np.ndarray, labels: np.ndarray, class_names: list[str], out_dir: Path, prefix: str) -> dict:
    """Metrics and plots; NonFiniteOutputError if any output is NaN/inf (argmax would silently say class 0)."""
    from s3f_edge.runtime.predictor import require_finite

    require_finite(raw, f"scoring {prefix}")
    result = classification_metrics(labels, raw, class_names)
    plot_confusion_and_roc(labels, raw, class_names, out_dir, prefix, prefix)
    return result


def read_exclude_list(path: str | Path) -> set[str]:
    """File names or relative paths, one per line (a CSV's first column; '#' comments ignored)."""
    names = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = line.split(",")[0].strip()
        if entry and not entry.startswith("#") and entry not in ("file", "path"):
            names.add(entry)
    return names


def labelled_split(data_dir: str | Path, exclude: str | Path | None = None):
    """(dataset, split to score, number excluded) for DATA/test/<class>/... or DATA/<class>/..., minus
    the files named in the ``exclude`` list (by file name or path relative to DATA)."""
    from s3f_edge.data.folders import discover

    dataset = discover(Path(data_dir))
    split = dataset.test if dataset.test is not None else dataset.train
    if not exclude:
        return dataset, split, 0
    names = read_exclude_list(exclude)
    keep = [i for i, p in enumerate(split.paths)
            if p.name not in names and p.relative_to(dataset.root).as_posix() not in names]
    return dataset, split.subset(keep), len(split) - len(keep)


EVALUATE_FILES = ("metrics.json", "skipped.csv", *plot_names("evaluate"), "evaluate_reliability.png")


def out_of_distribution_metrics(in_scores: np.ndarray, out_scores: np.ndarray, threshold: float) -> dict:
    """How well scores separate in-distribution images from others (higher score: less like the training images).

    Args:
        in_scores: scores of in-distribution images (the labelled folder).
        out_scores: scores of images of another kind.
        threshold: the model's refusal threshold.

    Returns:
        images; refused (share over the threshold); auroc (in vs out, 1 = perfect); fpr_at_95 (share of the other
        images accepted at the score that accepts 95 % of the in-distribution ones).
    """
    from sklearn.metrics import roc_auc_score

    out_scores = np.asarray(out_scores, np.float64)
    truth = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    accepting_95 = float(np.quantile(in_scores, 0.95))
    return {"images": int(len(out_scores)), "refused": float((out_scores > threshold).mean()),
            "auroc": float(roc_auc_score(truth, np.r_[in_scores, out_scores])),
            "fpr_at_95": float((out_scores <= accepting_95).mean())}


def _ood_files(folder: Path) -> list[Path]:
    """The image files under an --ood folder (recursively); an InputError when there are none."""
    from s3f_edge.data.files import image_files
    from s3f_edge.errors import InputError

    files = image_files(folder)
    if not files:
        raise InputError(f"--ood {folder}: no images under it; give a folder of images of another kind")
    return files


def _folder_images(folder: Path, contract, workers: int) -> tuple[np.ndarray, int]:
    """Every readable image under ``folder`` (recursively), and how many files could not be read."""
    from s3f_edge.data.folders import Split, load_split
    from s3f_edge.errors import InputError

    files = _ood_files(folder)
    images, _, failures = load_split(Split(files, np.zeros(len(files), np.int64)), contract, workers)
    if not len(images):
        raise InputError(f"--ood {folder}: none of its {len(files)} images could be read")
    return images, len(failures)


def evaluate_folder(model_path: str | Path, data_dir: str | Path, out_dir: str | Path,
                    exclude: str | Path | None = None, batch_size: int = 32, workers: int = 4,
                    overwrite: bool = False, progress: bool = False, ood_folders: list[Path] = (),
                    report_page: str | Path | None = None) -> dict:
    """Score a saved model (.keras, .onnx or TensorRT engine) on a class-per-subfolder folder
    (DATA/<class>/... or DATA/test/<class>/...).

    Args:
        model_path: the model to score.
        data_dir: the labelled folder; its classes must be the model's.
        out_dir: where metrics.json, skipped.csv and the plots go; earlier ones are refused unless ``overwrite``.
        exclude: a file listing file names or paths relative to ``data_dir`` to leave out (one per line, or a
            CSV's first column); None: none.
        batch_size: images per model call.
        workers: decoding threads.
        overwrite: replace earlier results in ``out_dir``.
        progress: progress bars on stderr while decoding and predicting.
        ood_folders: folders of images of other kinds, to measure refusal on (a calibrated model only).
        report_page: also write a self-contained HTML page of the evaluation here (.html; replaced only with
            ``overwrite``); None: no page.

    Returns:
        The report written to ``out_dir / "metrics.json"``: metrics (with ECE), and for a calibrated model the share
        refused and the accuracy on accepted images, and per ``ood_folders`` entry AUROC, FPR at 95 % and refusal.

    Raises:
        InputError: ``ood_folders`` for a model without a score, or an ``ood_folders`` entry without readable images.
        DatasetError: ``data_dir`` is no usable dataset, or its classes are not the model's.
        OutputExistsError: ``out_dir`` is a training run's directory, or holds earlier results and ``overwrite`` is
            false.
        OutputError: ``out_dir`` cannot be written.
        NonFiniteOutputError: the model gives NaN or infinite outputs.
    """
    from s3f_edge.data.folders import load_split, write_skipped
    from s3f_edge.outputs import refuse_existing
    from s3f_edge.runtime.formats import load_predictor
    from s3f_edge.train.metrics import plot_reliability, risk_coverage

    out_dir = Path(out_dir)
    _check_out_dir(out_dir, model_path, report_page, overwrite)
    predictor = load_predictor(model_path)
    dataset, split, excluded = _labelled_split_for(predictor, model_path, data_dir, exclude, bool(ood_folders))
    refuse_existing([out_dir / name for name in EVALUATE_FILES], overwrite=overwrite)  # replaced when written
    for folder in ood_folders:  # refused before any decoding
        _ood_files(Path(folder))
    images, labels, failures = load_split(split, predictor.contract, workers, progress=progress)
    others = {Path(folder): _folder_images(Path(folder), predictor.contract, workers) for folder in ood_folders}
    probabilities, scores = predictor.predict_all_scored(images, batch_size, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model_path), "model_sha256": predictor.sha256, "backend": predictor.provider,
        "data": str(data_dir),
        "excluded_files": excluded, "skipped_files": len(failures) + len(dataset.skipped),
        "protocol_of_model": predictor.metadata.get("protocol"),
        "metrics": score_outputs(probabilities, labels, predictor.class_names, out_dir, "evaluate"),
    }
    plot_reliability({Path(data_dir).name: (labels, probabilities)}, out_dir / "evaluate_reliability.png",
                     f"{predictor.name}: reliability")
    if scores is not None:
        report["ood"] = _refusal_report(predictor, probabilities, labels, scores, others, batch_size)
    if predictor.set_rule is not None:
        report["sets"] = _set_report(predictor, probabilities, labels, scores)
    curve = risk_coverage(probabilities, labels)
    report["selective"] = {"aurc": curve["aurc"], "aurc_optimal": curve["aurc_optimal"]}
    write_skipped(out_dir / "skipped.csv", dataset.skipped + failures)
    write_json(out_dir / "metrics.json", report)
    if report_page is not None:
        from s3f_edge.report.evaluation_page import write_evaluation_report

        unreadable = {path for path, _ in failures}
        write_evaluation_report(report_page, report, [p for p in split.paths if p not in unreadable], labels,
                                probabilities, scores, predictor.class_names,
                                {"ROC curves (one class against the rest)": out_dir / plot_names("evaluate")[1],
                                 "Reliability diagram": out_dir / "evaluate_reliability.png"},
                                workers=workers, progress=progress)
    return report


def _check_out_dir(out_dir: Path, model_path: str | Path, report_page: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any work, an ``out_dir`` that cannot be written or is a training run's, and an unusable
    ``report_page``.

    Raises:
        OutputExistsError: ``out_dir`` is a training run's directory, or the page exists and ``overwrite`` is false.
        OutputError: ``out_dir`` or the page cannot be written.
    """
    from s3f_edge.errors import OutputExistsError
    from s3f_edge.outputs import ensure_writable

    ensure_writable(out_dir, "--out", folder=True)
    if report_page is not None:
        from s3f_edge.report.evaluation_page import check_report_path

        check_report_path(Path(report_page), overwrite)
    if (out_dir / "config.json").exists():  # train's metrics.json and skipped.csv live there under the same names
        raise OutputExistsError(f"--out {out_dir} is a training run's directory; evaluate into a folder of its own "
                                f"(by default {Path(model_path).parent / 'evaluate-<folder>'})")


def _labelled_split_for(predictor, model_path: str | Path, data_dir: str | Path, exclude: str | Path | None,
                        measure_ood: bool):
    """``labelled_split(data_dir, exclude)``, once the model is known to fit the request: its classes are the
    folder's, and it has a score when refusal is to be measured (``measure_ood``).

    Raises:
        InputError: ``measure_ood`` for a model without an out-of-distribution score.
        DatasetError: ``data_dir`` is no usable dataset, or its classes are not the model's.
    """
    from s3f_edge.data.folders import DatasetError
    from s3f_edge.errors import InputError

    if measure_ood and predictor.ood_threshold is None:
        raise InputError(f"{Path(model_path).name} has no out-of-distribution score to measure with --ood; calibrate "
                         "it first with s3f-edge calibrate")
    dataset, split, excluded = labelled_split(data_dir, exclude)
    if dataset.class_names != predictor.class_names:
        raise DatasetError(f"the folder's classes {dataset.class_names} differ from the model's "
                           f"{predictor.class_names}")
    return dataset, split, excluded


def _refusal_report(predictor, probabilities: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                    others: dict[Path, tuple[np.ndarray, int]], batch_size: int) -> dict:
    """The report's ``ood`` section: the share refused and the accuracy on accepted images of the labelled folder,
    and per folder of other images (images, unreadable count) how well the score tells them apart.

    Raises:
        NonFiniteOutputError: a score is NaN or infinite.
    """
    from s3f_edge.runtime.predictor import require_finite

    require_finite(scores, "out-of-distribution scores")
    threshold = predictor.ood_threshold
    section = {"threshold": threshold,
               **refusal_summary(probabilities.argmax(axis=1) == labels, scores, threshold), "folders": {}}
    for folder, (other_images, unreadable) in others.items():
        other_scores = require_finite(predictor.predict_all_scored(other_images, batch_size)[1],
                                      f"out-of-distribution scores of {folder}")
        section["folders"][str(folder)] = {**out_of_distribution_metrics(scores, other_scores, threshold),
                                           "unreadable": unreadable}
    return section


def _set_report(predictor, probabilities: np.ndarray, labels: np.ndarray, scores: np.ndarray | None) -> dict:
    """The report's ``sets`` section: the file's prediction sets (at its calibrated coverage) on the images it
    accepts, measured against their labels (``metrics.set_metrics``)."""
    from s3f_edge.runtime.calibration import prediction_sets
    from s3f_edge.train.metrics import set_metrics

    method, threshold, coverage = predictor.set_rule
    accepted = ~predictor.refuses(scores, len(labels)) if scores is not None else np.ones(len(labels), bool)
    sets = prediction_sets(probabilities[accepted], threshold, method)
    return {"method": method, "target_coverage": coverage, "threshold": threshold,
            **set_metrics(sets, labels[accepted], predictor.class_names)}
