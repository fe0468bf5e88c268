"""`s3f-edge evaluate`: the training report's metrics and plots for any folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.train.metrics import classification_metrics, plot_confusion_and_roc, plot_names, write_json


def batched_predict(model, batch_size: int):
    """images -> outputs, one batch at a time through a plain forward pass.

    Only one batch of a memory-mapped array is in memory at a time, and under MultiWorkerMirroredStrategy
    it avoids ``model.predict``'s distributed path, which fails there (keras-team/keras#20585).
    """
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, *model.output_shape[1:]), np.float32)
        return np.concatenate([forward(np.asarray(images[i:i + batch_size], np.float32)).numpy()
                               for i in range(0, len(images), batch_size)])

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


EVALUATE_FILES = ("metrics.json", "skipped.csv", *plot_names("evaluate"))


def evaluate_folder(model_path: str | Path, data_dir: str | Path, out_dir: str | Path,
                    exclude: str | Path | None = None, batch_size: int = 32, workers: int = 4,
                    overwrite: bool = False, progress: bool = False) -> dict:
    """Score a saved model (.keras, .onnx or TensorRT engine) on a class-per-subfolder folder
    (DATA/<class>/... or DATA/test/<class>/...).

    Args:
        model_path: the model to score.
        data_dir: the labelled folder; its classes must be the model's.
        out_dir: where metrics.json, skipped.csv and the plots go; earlier ones are refused unless ``overwrite``.
        exclude: a list of file names or relative paths to leave out.
        progress: progress bars on stderr while decoding and predicting.

    Returns:
        The report written to ``out_dir / "metrics.json"``.
    """
    from s3f_edge.data.folders import DatasetError, load_split, write_skipped
    from s3f_edge.errors import OutputExistsError
    from s3f_edge.outputs import ensure_writable, refuse_existing
    from s3f_edge.runtime.predictor import Predictor

    out_dir = Path(out_dir)
    ensure_writable(out_dir, "--out", folder=True)
    if (out_dir / "config.json").exists():  # train's metrics.json and skipped.csv live there under the same names
        raise OutputExistsError(f"--out {out_dir} is a training run's directory; evaluate into a folder of its own "
                                f"(by default {Path(model_path).parent / 'evaluate-<folder>'})")
    predictor = Predictor.load(model_path)
    metadata, class_names, contract = predictor.metadata, predictor.class_names, predictor.contract
    dataset, split, excluded = labelled_split(data_dir, exclude)
    if dataset.class_names != class_names:
        raise DatasetError(f"the folder's classes {dataset.class_names} differ from the model's {class_names}")
    refuse_existing([out_dir / name for name in EVALUATE_FILES], overwrite=overwrite)  # replaced when written
    images, labels, failures = load_split(split, contract, workers, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model_path), "model_sha256": predictor.sha256, "backend": predictor.provider,
        "data": str(data_dir),
        "excluded_files": excluded, "skipped_files": len(failures) + len(dataset.skipped),
        "protocol_of_model": metadata.get("protocol"),
        "metrics": score_outputs(predictor.predict_all(images, batch_size, progress=progress), labels, class_names,
                                 out_dir, "evaluate"),
    }
    write_skipped(out_dir / "skipped.csv", dataset.skipped + failures)
    write_json(out_dir / "metrics.json", report)
    return report
