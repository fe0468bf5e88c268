"""Calibration after training, with no retraining: a temperature that makes the probabilities honest, and an
out-of-distribution score with the threshold above which an image is refused.

Fitted on the model's own images only: the score's class statistics on (a seeded sample of) its training
images, the temperature, the score's standardisation and the threshold on its validation split. Images of
other kinds are for measuring the result (``evaluate --ood``), never for fitting it. The fitted numbers become
layers of the model (``s3f_edge.model.calibration``) and its metadata (``calibration``), so every exported
file carries them.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from s3f_edge.errors import InputError

DEFAULT_KEEP = 0.99  # the threshold accepts this share of the validation split
DEFAULT_FIT_IMAGES = 4096  # training images (seeded sample) for the score's class statistics
MIN_IMAGES = 10  # below this, a threshold or a temperature would be a guess: calibration is refused
SCORE_METHOD = "mahalanobis-blocks"  # s3f_edge.train.ood.block_scores: chosen by benchmarks/ood_methods.py


def block_features(model, images, batch_size: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """Mean-pooled outputs of every convolutional block, and the head's logits, for preprocessed images.

    Args:
        model: a trained model (calibrated or not).
        images: (N, H, W, C) float32 in [0, 1]; a memory map is read batch by batch.
        batch_size: images per forward pass.

    Returns:
        (per block (N, C_b) features, (N, K) logits).
    """
    import keras
    import tensorflow as tf

    from s3f_edge.model.calibration import block_layers, head, uncalibrated

    base = uncalibrated(model)
    dense = head(base)
    blocks = block_layers(base)
    extractor = keras.Model(base.inputs, [keras.ops.mean(layer.output, axis=(1, 2)) for layer in blocks]
                            + [dense.input])
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    parts = [[output.numpy() for output in forward(np.asarray(images[i:i + batch_size], np.float32))]
             for i in range(0, len(images), batch_size)]
    outputs = [np.concatenate([part[j] for part in parts]).astype(np.float64) for j in range(len(blocks) + 1)]
    kernel, bias = (weight.numpy().astype(np.float64) for weight in dense.weights)
    return outputs[:-1], outputs[-1] @ kernel + bias


def _negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    if logits.shape[1] == 1:  # one sigmoid unit: a softmax over (0, z)
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


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
    found = minimize_scalar(lambda log_t: _negative_log_likelihood(logits, labels, np.exp(log_t)),
                            bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def scaled_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as the model's probs output gives it ([1 - p, p] for one sigmoid unit)."""
    from scipy.special import softmax

    logits = np.asarray(logits, np.float64)
    if logits.shape[1] == 1:
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    return softmax(logits / temperature, axis=1)


def calibrate_model(model, fit_images, fit_labels: np.ndarray, validation_images, validation_labels: np.ndarray, *,
                    keep: float = DEFAULT_KEEP, provenance: dict | None = None, batch_size: int = 64):
    """Fit the temperature and the out-of-distribution score; return the calibrated model and what was fitted.

    Args:
        model: the trained model (single output; a calibrated one is fitted afresh).
        fit_images, fit_labels: training images (preprocessed) and labels, for the score's class statistics.
        validation_images, validation_labels: held-out in-distribution images, for the temperature, the score's
            standardisation and the threshold.
        keep: the share of validation images the threshold accepts.
        provenance: where the images came from (recorded in the result).

    Returns:
        (calibrated model with outputs probs and ood_score, the ``calibration`` metadata dict).
    """
    from s3f_edge.model.calibration import SCORE, block_layers, calibrated, uncalibrated
    from s3f_edge.train.metrics import expected_calibration_error
    from s3f_edge.train.ood import block_scores, fit_blocks, threshold_keeping

    if min(len(validation_images), len(fit_images)) < MIN_IMAGES:
        raise InputError(f"calibration needs at least {MIN_IMAGES} training and {MIN_IMAGES} validation images, got "
                         f"{len(fit_images)} and {len(validation_images)}; give a larger dataset or --val-fraction")
    fit_blocks_features, _ = block_features(model, fit_images, batch_size)
    validation_features, validation_logits = block_features(model, validation_images, batch_size)
    statistics = fit_blocks(fit_blocks_features, fit_labels, validation_features)
    validation_scores = block_scores(statistics, validation_features)
    threshold = threshold_keeping(validation_scores, keep)
    temperature = fit_temperature(validation_logits, validation_labels)
    result = calibrated(model, temperature, statistics)

    # The graph must compute what was fitted: compare it with the numpy reference on validation images.
    check = min(len(validation_images), 32)
    graph_scores = np.asarray(result.predict(np.asarray(validation_images[:check], np.float32), verbose=0)[SCORE])
    if not np.allclose(graph_scores, validation_scores[:check], rtol=1e-3, atol=1e-3):
        raise RuntimeError("the calibrated model's ood_score differs from the fitted numbers: a bug in s3f-edge")
    before = expected_calibration_error(validation_labels, scaled_probabilities(validation_logits, 1.0))
    after = expected_calibration_error(validation_labels, scaled_probabilities(validation_logits, temperature))
    calibration = {
        "temperature": round(temperature, 6),
        "ood": {"method": SCORE_METHOD, "blocks": [layer.name for layer in block_layers(uncalibrated(model))],
                "threshold": threshold, "keep": keep,
                "validation_refused": float((validation_scores > threshold).mean())},
        "ece_validation": {"before": before, "after": after},
        "fitted_on": {**(provenance or {}), "training_images": int(len(fit_images)),
                      "validation_images": int(len(validation_images))},
        "fitted": time.strftime("%Y-%m-%d"),
    }
    return result, calibration


def logits_and_scores(model, images, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated model's logits (before the temperature) and out-of-distribution scores, in one pass."""
    import keras
    import tensorflow as tf

    from s3f_edge.model.calibration import LOGITS, SCORE

    extractor = keras.Model(model.inputs, [model.get_layer(LOGITS).output, model.get_layer(SCORE).output])
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    parts = [[output.numpy() for output in forward(np.asarray(images[i:i + batch_size], np.float32))]
             for i in range(0, len(images), batch_size)]
    return (np.concatenate([part[0] for part in parts]).astype(np.float64),
            np.concatenate([part[1] for part in parts]).astype(np.float64))


def calibration_report(model, calibration: dict, images, labels: np.ndarray, batch_size: int = 64) -> dict:
    """What calibration did on labelled in-distribution images (e.g. the test set, scored once): ECE before and
    after the temperature, the share refused at the threshold, and accuracy on all and on accepted images."""
    from s3f_edge.train.metrics import expected_calibration_error

    logits, scores = logits_and_scores(model, images, batch_size)
    accepted = scores <= calibration["ood"]["threshold"]
    correct = logits.argmax(axis=1) == labels if logits.shape[1] > 1 else (logits[:, 0] > 0) == labels
    return {"count": int(len(labels)),
            "ece_before": expected_calibration_error(labels, scaled_probabilities(logits, 1.0)),
            "ece_after": expected_calibration_error(labels, scaled_probabilities(logits, calibration["temperature"])),
            "refused": float(1 - accepted.mean()), "accuracy": float(correct.mean()),
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else None}


def calibration_sample(count: int, limit: int = DEFAULT_FIT_IMAGES, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of at most ``limit`` of ``count`` training images."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def calibrate_file(model_path: str | Path, data_dir: str | Path, out_path: str | Path, *,
                   val_fraction: float | None = None, seed: int | None = None, keep: float = DEFAULT_KEEP,
                   fit_images: int = DEFAULT_FIT_IMAGES, overwrite: bool = False, workers: int = 4,
                   progress: bool = False) -> dict:
    """Calibrate a saved model (trained by s3f-edge, before this feature or elsewhere) on its own dataset.

    The validation split is carved from DATA's training images as training carved it: the fraction and seed the
    model's metadata records, else ``val_fraction`` and ``seed`` (train's defaults: 0.15 and 0). Give the ones the
    model was trained with, so that its validation images are ones it never trained on.

    Args:
        model_path: the .keras model.
        data_dir: its dataset (DATA/train/<class>/... or DATA/<class>/...); the classes must be the model's.
        out_path: where to save the calibrated model (refused if it exists, unless ``overwrite``).
        val_fraction, seed: the validation split, when the model does not record it.
        keep: the share of validation images the threshold accepts.
        fit_images: training images (seeded sample) for the score's class statistics.

    Returns:
        The ``calibration`` metadata written into the model, plus ``out``.
    """
    from s3f_edge.data.folders import DatasetError, discover, load_split, stratified_split
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.model import load_model
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.outputs import ensure_writable, refuse_existing

    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.resolve() == model_path.resolve():
        raise InputError(f"--out must differ from the model file {model_path}: the original is kept")
    ensure_writable(out_path, "--out")
    refuse_existing([out_path], overwrite=overwrite)
    metadata = read_metadata(model_path)
    model = load_model(model_path)
    dataset = discover(data_dir)
    if metadata is None:
        height, width, channels = model.input_shape[1:]
        metadata = {"class_names": dataset.class_names,
                    "preprocessing": Preprocessing(height=height, width=width, channels=channels).to_dict()}
    if dataset.class_names != metadata["class_names"]:
        raise DatasetError(f"the classes of {data_dir} ({', '.join(dataset.class_names)}) are not the model's "
                           f"({', '.join(metadata['class_names'])}); give the model's own dataset")
    recorded = metadata.get("validation_split") or {}
    val_fraction = val_fraction if val_fraction is not None else recorded.get("fraction", 0.15)
    seed = seed if seed is not None else recorded.get("seed", 0)
    fit, validation = stratified_split(dataset.train, val_fraction, seed)
    fit = fit.subset(calibration_sample(len(fit), fit_images, seed))
    contract = Preprocessing.from_dict(metadata["preprocessing"])
    fit_x, fit_y, _ = load_split(fit, contract, workers, progress=progress)
    val_x, val_y, _ = load_split(validation, contract, workers, progress=progress)
    provenance = {"data_file_list_sha256": dataset.file_list_hash(), "val_fraction": val_fraction, "seed": seed,
                  "model_sha256": _sha256(model_path)}
    result, calibration = calibrate_model(model, fit_x, fit_y, val_x, val_y, keep=keep, provenance=provenance)
    save_model_atomically(result, out_path, {**metadata, "calibration": calibration,
                                             "validation_split": {"fraction": val_fraction, "seed": seed}})
    return {**calibration, "out": str(out_path)}


def _sha256(path: Path) -> str:
    from s3f_edge.data.files import file_sha256

    return file_sha256(path)
