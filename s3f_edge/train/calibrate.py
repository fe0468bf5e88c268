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
from typing import TYPE_CHECKING

import numpy as np

from s3f_edge.errors import InputError
from s3f_edge.runtime.calibration import (  # noqa: F401 (re-exported: fitted here for a Keras model)
    DEFAULT_COVERAGE,
    DEFAULT_KEEP,
    TEMPERATURE_BOUNDS,
    fit_calibration,
    fit_temperature,
    scaled_probabilities,
)

if TYPE_CHECKING:
    import keras

DEFAULT_FIT_IMAGES = 10000  # training images (seeded, stratified sample) for the score's class statistics
MIN_IMAGES = 10  # below this, a threshold or a temperature would be a guess: calibration is refused
# The adopted score (s3f_edge.train.ood.block_scores), chosen by benchmarks/ood_methods.py: Mahalanobis distance on
# the spatial tower's block outputs, each summarised per channel by its mean and spread over the image.
SCORE_METHOD = "mahalanobis-blocks"
SCORE_POOLING = "mean_std"
SCORE_SPECTRAL_BLOCKS = False
# The model's metadata key under which train records the fingerprint of the files it trained on
# (FolderDataset.file_list_hash; its run directory's config.json holds it as "file_list_sha256").
DATA_FINGERPRINT = "data_file_list_sha256"
# How calibrate_file's DATA relates to the model's training data (recorded in the calibration's fitted_on).
DATA_MATCHED, DATA_UNCHECKED, DATA_OTHER = "matched", "unchecked", "other-data"
DATA_CHECK_NOTES = {
    DATA_UNCHECKED: "the model does not record the files it was trained on, so whether its validation split holds "
                    "training images could not be checked",
    DATA_OTHER: "calibrated on other data on purpose (--other-data): its images are taken as unseen by the model",
}
OTHER_DATA_SPLIT = (0.15, 0)  # train's defaults (TrainOptions): the split of other data when none is given


def block_features(model: "keras.Model", images, batch_size: int = 64, blocks: list[str] | None = None,
                   pooling: str = SCORE_POOLING) -> tuple[list[np.ndarray], np.ndarray]:
    """The pooled outputs of the score's blocks, and the head's logits, for preprocessed images.

    Pooled by the very function the ``OutOfDistributionScore`` layer uses (in float32, a mixed-precision model's
    float16 maps cast first), so that what is fitted is what the model computes.

    Args:
        model: a trained model (calibrated or not).
        images: (N, H, W, C) float32 in [0, 1]; a memory map is read batch by batch.
        batch_size: images per forward pass.
        blocks: layer names (default: the adopted ``block_layers``).
        pooling: how each feature map is summarised (``model.ood_score.POOLINGS``).

    Returns:
        (per block (N, d_b) features, (N, K) logits), float64.
    """
    import keras

    from s3f_edge.model.calibration import block_layers, head, uncalibrated
    from s3f_edge.model.forward import batched_outputs
    from s3f_edge.model.ood_score import pool

    base = uncalibrated(model)
    dense = head(base)
    layers = [base.get_layer(name) for name in blocks] if blocks else block_layers(base, SCORE_SPECTRAL_BLOCKS)
    pooled = [pool(layer.output, pooling) for layer in layers]
    outputs = batched_outputs(keras.Model(base.inputs, pooled + [keras.ops.cast(dense.input, "float32")]), images,
                              batch_size)
    outputs = [output.astype(np.float64) for output in outputs]
    weights = [weight.numpy().astype(np.float64) for weight in dense.weights]
    logits = outputs[-1] @ weights[0] + (weights[1] if len(weights) > 1 else 0.0)
    return outputs[:-1], logits


def calibrate_model(model: "keras.Model", fit_images, fit_labels: np.ndarray, validation_images,
                    validation_labels: np.ndarray, *, keep: float = DEFAULT_KEEP,
                    coverages: tuple[float, ...] = (DEFAULT_COVERAGE,), provenance: dict | None = None,
                    batch_size: int = 64) -> tuple["keras.Model", dict]:
    """Fit the temperature and the out-of-distribution score; return the calibrated model and what was fitted.

    Args:
        model: the trained model (single output; a calibrated one is fitted afresh).
        fit_images: preprocessed training images (N, H, W, C), for the score's class statistics.
        fit_labels: their class indices (N,); every class must be present.
        validation_images: held-out in-distribution images, for the temperature, the score's standardisation and
            the threshold.
        validation_labels: their class indices.
        keep: the share of validation images the threshold accepts.
        coverages: the coverages of the prediction sets stored (the first is the one ``infer`` gives).
        provenance: where the images came from (recorded in the result's ``fitted_on``).
        batch_size: images per forward pass.

    Returns:
        (calibrated model with outputs probs and ood_score, the ``calibration`` metadata dict).

    Raises:
        InputError: too few images, a class missing from the training images given, or a head calibration
            cannot rebuild.
    """
    import keras

    from s3f_edge.model.calibration import SCORE, block_layers, calibrated, check_head, uncalibrated
    from s3f_edge.model.forward import batched_outputs
    from s3f_edge.train.ood import block_scores, fit_blocks

    if min(len(validation_images), len(fit_images)) < MIN_IMAGES:
        raise InputError(f"calibration needs at least {MIN_IMAGES} training and {MIN_IMAGES} validation images, got "
                         f"{len(fit_images)} and {len(validation_images)}; give a larger dataset or --val-fraction")
    base = uncalibrated(model)  # built once: each call on a calibrated model makes a new model
    dense = check_head(base)
    classes = 2 if dense.units == 1 else dense.units
    missing = sorted(set(range(classes)) - set(np.unique(fit_labels).tolist()))
    if missing:
        raise InputError(f"no training image of class(es) {missing} could be read to fit the out-of-distribution "
                         "score; every class needs readable training images")
    blocks = [layer.name for layer in block_layers(base, SCORE_SPECTRAL_BLOCKS)]
    fit_blocks_features, _ = block_features(base, fit_images, batch_size, blocks)
    validation_features, validation_logits = block_features(base, validation_images, batch_size, blocks)
    statistics = fit_blocks(fit_blocks_features, fit_labels, validation_features)  # features arrive pooled
    validation_scores = block_scores(statistics, validation_features)
    fitted = fit_calibration(validation_logits, validation_labels, validation_scores, keep=keep, coverages=coverages)
    result = calibrated(base, fitted["temperature"], statistics, blocks, SCORE_POOLING)

    # The graph must compute what was fitted: compare it with the numpy reference on validation images.
    check = min(len(validation_images), 32)
    score_model = keras.Model(result.inputs, result.get_layer(SCORE).output)
    graph_scores = batched_outputs(score_model, np.asarray(validation_images[:check], np.float32))[0]
    if not np.allclose(graph_scores, validation_scores[:check], rtol=1e-3, atol=1e-3):
        raise RuntimeError("the calibrated model's ood_score differs from the fitted numbers: a bug in s3f-edge")
    fitted["ood"] = {"method": SCORE_METHOD, "blocks": blocks, "pooling": SCORE_POOLING, **fitted["ood"]}
    calibration = {
        **fitted,
        "fitted_on": {**(provenance or {}), "artefact": "keras", "training_images": int(len(fit_images)),
                      "validation_images": int(len(validation_images))},
        "fitted": time.strftime("%Y-%m-%d"),
    }
    return result, calibration


def logits_and_scores(model: "keras.Model", images, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated model's logits (before the temperature) and out-of-distribution scores, in one pass."""
    import keras

    from s3f_edge.model.calibration import LOGITS, SCORE
    from s3f_edge.model.forward import batched_outputs

    extractor = keras.Model(model.inputs, [model.get_layer(LOGITS).output, model.get_layer(SCORE).output])
    logits, scores = batched_outputs(extractor, images, batch_size)
    return logits.astype(np.float64), scores.astype(np.float64)


def calibration_report(model: "keras.Model", calibration: dict, images, labels: np.ndarray,
                       batch_size: int = 64) -> dict:
    """What calibration did on labelled in-distribution images (e.g. the test set, scored once).

    Args:
        model: the calibrated model.
        calibration: its ``calibration`` metadata (temperature and threshold).
        images, labels: the images (preprocessed) and their classes.

    Returns:
        count, ece_before and ece_after (the temperature's effect), refused (share over the threshold),
        accuracy, accuracy_accepted, and errors_refused (misclassified images among the refused).
    """
    from s3f_edge.train.metrics import expected_calibration_error
    from s3f_edge.train.ood import refusal_summary, two_column_logits

    logits, scores = logits_and_scores(model, images, batch_size)
    threshold = calibration["ood"]["threshold"]
    correct = two_column_logits(logits).argmax(axis=1) == labels
    refusal = refusal_summary(correct, scores, threshold)
    return {"count": int(len(labels)),
            "ece_before": expected_calibration_error(labels, scaled_probabilities(logits, 1.0)),
            "ece_after": expected_calibration_error(labels, scaled_probabilities(logits, calibration["temperature"])),
            "refused": refusal["refused"], "accuracy": float(correct.mean()),
            "accuracy_accepted": refusal["accuracy_accepted"],
            "errors_refused": int((~correct[~(scores <= threshold)]).sum())}


def calibration_sample(labels: np.ndarray, limit: int = DEFAULT_FIT_IMAGES, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of about ``limit`` training images, stratified by class so that every
    class keeps images (at least 2 of each class that has them), whatever its share."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(len(members), max(2, int(round(limit * len(members) / len(labels)))))
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked))


def calibrate_file(model_path: str | Path, data_dir: str | Path, out_path: str | Path, *,
                   val_fraction: float | None = None, seed: int | None = None, keep: float = DEFAULT_KEEP,
                   coverages: tuple[float, ...] = (DEFAULT_COVERAGE,), fit_images: int = DEFAULT_FIT_IMAGES,
                   other_data: bool = False, overwrite: bool = False,
                   workers: int = 4, progress: bool = False) -> dict:
    """Calibrate a saved model (trained by s3f-edge with --no-calibrate, or elsewhere) on its own dataset.

    The dataset must be the one the model was trained with: when the model records the fingerprint of its
    training files (its metadata, else the config.json of the run directory it sits in), ``data_dir``'s must be
    the same, else calibration is refused before any work (another dataset's validation split may hold images the
    model trained on). A model that records none is calibrated unchecked. ``other_data`` calibrates on another
    dataset on purpose, when its images are known to be unseen by the model.

    The validation split must be the one the model was trained with, so that its validation images are ones it
    never trained on: the split the model's metadata records, else the one in the config.json of the run
    directory it sits in, else ``val_fraction`` and ``seed``, which must then be given. A recorded split wins,
    and a different ``val_fraction`` or ``seed`` is refused. A model trained under the paper protocol (selected
    on the test set, no validation split) is refused. With ``other_data``, any split will do (default: train's
    0.15 and 0), and the model's own split record is kept.

    Args:
        model_path: the .keras model.
        data_dir: its dataset (DATA/train/<class>/... or DATA/<class>/...); the classes must be the model's.
        out_path: where to save the calibrated model; not ``model_path``.
        val_fraction: the validation split's fraction, for a model that records none; None: the recorded one.
        seed: the validation split's seed, likewise.
        keep: the share of validation images the threshold accepts.
        coverages: the coverages of the prediction sets stored; the first is the one ``infer`` gives.
        fit_images: training images (seeded, stratified sample) for the score's class statistics.
        other_data: ``data_dir`` is not the model's training data, on purpose: none of its images were seen by the
            model.
        overwrite: replace an existing ``out_path``; else it is refused.
        workers: decoding threads.
        progress: show progress bars on stderr while decoding.

    Returns:
        The ``calibration`` metadata written into the model, plus ``out``; its ``fitted_on["data_check"]`` is
        ``DATA_MATCHED``, ``DATA_UNCHECKED`` or ``DATA_OTHER`` (``DATA_CHECK_NOTES`` says what the latter two mean).

    Raises:
        InputError: ``out_path`` is the model, the model is no .keras file or has a head calibration cannot use,
            ``data_dir``'s files are not the recorded ones (without ``other_data``) or are (with it), no usable
            validation split (paper protocol, unrecorded, or one contradicting the record), too few images, or a
            class without readable training images.
        DatasetError: ``data_dir`` is no usable dataset, or its classes are not the model's.
        OutputExistsError: ``out_path`` exists and ``overwrite`` is false.
        OutputError: ``out_path`` cannot be written.
    """
    from s3f_edge.data.folders import discover
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.outputs import ensure_writable, refuse_existing

    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.resolve() == model_path.resolve():
        raise InputError(f"--out must differ from the model file {model_path}: the original is kept")
    ensure_writable(out_path, "--out")
    refuse_existing([out_path], overwrite=overwrite)
    metadata = read_metadata(model_path)
    dataset = discover(data_dir)
    data_check, val_fraction, seed = _data_and_split(model_path, data_dir, dataset, metadata, val_fraction, seed,
                                                     other_data)
    model, metadata = _model_and_metadata(model_path, metadata, dataset, data_dir)
    fit_x, fit_y, val_x, val_y = _calibration_images(dataset, metadata, val_fraction, seed, fit_images, workers,
                                                     progress)
    provenance = {"data_file_list_sha256": dataset.file_list_hash(), "data_check": data_check,
                  "val_fraction": val_fraction, "seed": seed, "model_sha256": _sha256(model_path)}
    result, calibration = calibrate_model(model, fit_x, fit_y, val_x, val_y, keep=keep, coverages=coverages,
                                          provenance=provenance)
    # Other data's split says nothing of the model's own, which a later calibration on its own data needs.
    split = {} if other_data else {"validation_split": {"fraction": val_fraction, "seed": seed}}
    save_model_atomically(result, out_path, {**metadata, "calibration": calibration, **split})
    return {**calibration, "out": str(out_path)}


def _data_and_split(model_path: Path, data_dir: str | Path, dataset, metadata: dict | None,
                    val_fraction: float | None, seed: int | None, other_data: bool) -> tuple[str, float, int]:
    """(data check, validation fraction, seed): how DATA relates to the model's training data (``_data_check``) and
    the split to calibrate on (``_validation_split``), from the model's metadata, else its run's config.json."""
    config = _run_config(model_path)
    recorded = (metadata or {}).get(DATA_FINGERPRINT) or config.get("file_list_sha256")
    data_check = _data_check(model_path, data_dir, dataset.file_list_hash(), recorded, other_data)
    options = config.get("options")
    val_fraction, seed = _validation_split(model_path, metadata or {}, options if isinstance(options, dict) else {},
                                           val_fraction, seed, other_data)
    return data_check, val_fraction, seed


def _model_and_metadata(model_path: Path, metadata: dict | None, dataset, data_dir: str | Path):
    """(the loaded model, its metadata): a model without any (trained elsewhere) gets the dataset's classes and
    its input size as the preprocessing contract. DatasetError: the dataset's classes are not the model's;
    InputError: a head calibration cannot use."""
    from s3f_edge.data.folders import DatasetError
    from s3f_edge.data.preprocess import Preprocessing
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import check_head, uncalibrated

    model = load_model(model_path)
    if metadata is None:
        height, width, channels = model.input_shape[1:]
        metadata = {"class_names": dataset.class_names,
                    "preprocessing": Preprocessing(height=height, width=width, channels=channels).to_dict()}
    if dataset.class_names != metadata["class_names"]:
        raise DatasetError(f"the classes of {data_dir} ({', '.join(dataset.class_names)}) are not the model's "
                           f"({', '.join(metadata['class_names'])}); give the model's own dataset")
    check_head(uncalibrated(model), len(dataset.class_names))
    return model, metadata


def _calibration_images(dataset, metadata: dict, val_fraction: float, seed: int, fit_images: int, workers: int,
                        progress: bool):
    """(fit images, their labels, validation images, their labels), decoded with the model's contract: the
    validation split carved as training carved it, and a seeded sample of the rest (``calibration_sample``)."""
    from s3f_edge.data.folders import load_split, stratified_split
    from s3f_edge.data.preprocess import Preprocessing

    fit, validation = stratified_split(dataset.train, val_fraction, seed)
    fit = fit.subset(calibration_sample(fit.labels, fit_images, seed))
    contract = Preprocessing.from_dict(metadata["preprocessing"])
    fit_x, fit_y, _ = load_split(fit, contract, workers, progress=progress)
    val_x, val_y, _ = load_split(validation, contract, workers, progress=progress)
    return fit_x, fit_y, val_x, val_y


def _run_config(model_path: Path) -> dict:
    """The config.json of the run directory the model sits in (train's record of the run), or {}."""
    import json

    config = model_path.parent / "config.json"
    if not config.is_file():
        return {}
    try:
        found = json.loads(config.read_text())
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _data_check(model_path: Path, data_dir: str | Path, fingerprint: str, recorded: str | None,
                other_data: bool) -> str:
    """How DATA relates to the model's training data: ``DATA_MATCHED``, ``DATA_UNCHECKED`` or ``DATA_OTHER``.

    Args:
        model_path: the model (named in messages).
        data_dir: DATA (named in messages).
        fingerprint: DATA's ``file_list_hash()``, computed as train computes the one it records.
        recorded: the fingerprint the model records, or None.
        other_data: the user says DATA is other data, unseen by the model.

    Raises:
        InputError: DATA's files differ from the recorded ones without ``other_data``, or are the recorded ones
            with it.
    """
    if recorded is None:
        return DATA_OTHER if other_data else DATA_UNCHECKED
    if fingerprint == recorded:
        if other_data:
            raise InputError(f"--other-data, but {data_dir} holds the very files {model_path} was trained on; leave "
                             "--other-data out")
        return DATA_MATCHED
    if other_data:
        return DATA_OTHER
    raise InputError(f"the files of {data_dir} are not those {model_path} was trained on, so its validation split "
                     "could hold images the model trained on; give the DATA folder it was trained on (the same files "
                     "in train/ and test/), or --other-data if none of these images were seen by the model")


def _validation_split(model_path: Path, metadata: dict, options: dict, val_fraction: float | None,
                      seed: int | None, other_data: bool = False) -> tuple[float, int]:
    """The (fraction, seed) of the split the model was trained with (``calibrate_file`` says where from), or with
    ``other_data`` the one given (default ``OTHER_DATA_SPLIT``): the model's split is of other images."""
    if other_data:
        return (OTHER_DATA_SPLIT[0] if val_fraction is None else val_fraction,
                OTHER_DATA_SPLIT[1] if seed is None else seed)
    if metadata.get("protocol") == "paper" or options.get("paper_protocol"):
        raise InputError(f"{model_path} was trained under --paper-protocol: it selected on the test set and kept no "
                         "validation split to calibrate on; calibrate a model trained with the clean protocol")
    recorded = metadata.get("validation_split") or (
        {"fraction": options["val_fraction"], "seed": options["seed"]} if "val_fraction" in options else None)
    if recorded is None:
        if val_fraction is None or seed is None:
            raise InputError(f"{model_path} does not record the validation split it was trained with; give "
                             "--val-fraction and --seed as its training used them (train's defaults: 0.15 and 0)")
        return val_fraction, seed
    for option, given, kept in (("--val-fraction", val_fraction, recorded["fraction"]),
                                ("--seed", seed, recorded["seed"])):
        if given is not None and given != kept:
            raise InputError(f"{option} {given} is not the {kept} the model was trained with (its validation images "
                             f"would include training images); leave {option} out")
    return float(recorded["fraction"]), int(recorded["seed"])


def _sha256(path: Path) -> str:
    from s3f_edge.data.files import file_sha256

    return file_sha256(path)
