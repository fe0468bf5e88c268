"""Precise BatchNorm: population statistics for every BatchNormalization layer, dropout off.

Moving averages learned during training do not match what BatchNorm sees at inference: the
architecture puts Dropout right before BatchNorm layers, so the variance they learn includes the
dropout noise ("variance shift", Li et al., CVPR 2019), and the averages lag a network that changes
fast (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). On small datasets the mismatch
collapses inference to one class. The remedy (fvcore's ``update_bn_stats``, pycls's PreciseBN):
run a sample of training images through the network with dropout off, each BatchNorm normalising
with its batch's moments as in training, and set every layer's moving mean and variance to the
exact population mean and (biased) variance of its inputs over the whole sample.

Weights, architecture and file format do not change: only the layers' moving statistics.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s3f_edge.errors import InputError

DEFAULT_SAMPLE_SIZE = 1024
DEFAULT_BATCH_SIZE = 32


def batchnorm_layers(model) -> list:
    """The BatchNormalization layers whose statistics are recomputed (frozen ones keep theirs)."""
    import keras

    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def _noise_layers(model) -> list[tuple[object, str, float]]:
    """(layer, attribute, value) of every layer that adds noise in training mode (dropout, Gaussian noise)."""
    import keras

    noisy = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout)):
            noisy.append((layer, "rate", layer.rate))
        elif isinstance(layer, keras.layers.GaussianNoise):
            noisy.append((layer, "stddev", layer.stddev))
    return noisy


_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _moments_function(model, norms: list):
    """A traced function: images -> (count, mean, variance) of each BatchNorm layer's input, with the
    layers in training mode (batch moments). Cached per model, so each epoch does not trace again."""
    import keras
    import tensorflow as tf

    key = tuple(id(layer) for layer in norms)
    cached = _FUNCTIONS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    for layer in norms:
        if len(layer._inbound_nodes) != 1:
            raise ValueError(f"BatchNormalization layer {layer.name!r} is used more than once; "
                             "its statistics cannot be recomputed per use")
    probe = keras.Model(model.inputs, [layer.input for layer in norms])
    axes = [[a % len(layer.input.shape) for a in np.atleast_1d(layer.axis)] for layer in norms]

    @tf.function(reduce_retracing=True)
    def batch_moments(x):
        outputs = probe(x, training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        moments = []
        for output, keep in zip(outputs, axes):
            output = tf.cast(output, tf.float32)
            reduce = [a for a in range(len(output.shape)) if a not in keep]
            mean, variance = tf.nn.moments(output, axes=reduce)
            count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(output), reduce)), tf.float32)
            moments.append((count, mean, variance))
        return moments

    _FUNCTIONS[model] = (key, batch_moments)
    return batch_moments


def sample_indices(count: int, sample_size: int, seed: int) -> np.ndarray:
    """A seeded sample of ``sample_size`` indices of ``count`` (all of them, sorted, when fewer)."""
    if count <= sample_size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=sample_size, replace=False))


def input_moments(model, images, batch_size: int = DEFAULT_BATCH_SIZE,
                  all_reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Population (mean, variance) of the input of every layer of ``batchnorm_layers(model)``, per channel.

    Every BatchNorm normalises with its batch's moments (as in training) and dropout is off. Sums are
    kept in float64; ``all_reduce`` (sum across workers) pools the moments of several workers'
    images exactly.
    """
    import tensorflow as tf

    norms = batchnorm_layers(model)
    if not norms:
        return []
    batch_moments = _moments_function(model, norms)
    # Per layer, float64 sums over every image: count, sum of x, sum of x^2 (from each batch's centred moments).
    totals = [np.zeros(1 + 2 * int(np.prod(layer.moving_mean.shape))) for layer in norms]
    noise = _noise_layers(model)
    try:
        for layer, attribute, _ in noise:
            setattr(layer, attribute, 0.0)
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size], np.float32)
            for total, (count, mean, variance) in zip(totals, batch_moments(tf.constant(batch))):
                n = float(count.numpy())
                mean, variance = mean.numpy().astype(np.float64), variance.numpy().astype(np.float64)
                total += np.concatenate([[n], n * mean, n * (variance + mean * mean)])
    finally:
        for layer, attribute, value in noise:
            setattr(layer, attribute, value)
    if all_reduce is not None:
        sizes = [len(t) for t in totals]
        totals = np.split(all_reduce(np.concatenate(totals)), np.cumsum(sizes)[:-1])

    statistics = []
    for layer, total in zip(norms, totals):
        count, (first, second) = total[0], np.split(total[1:], 2)
        if count == 0:
            raise ValueError("no images to recompute the BatchNorm statistics from")
        mean = first / count
        variance = np.maximum(second / count - mean * mean, 0.0)
        statistics.append((mean.reshape(layer.moving_mean.shape), variance.reshape(layer.moving_variance.shape)))
    return statistics


def recompute_batchnorm_statistics(model, images, *, sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0,
                                   batch_size: int = DEFAULT_BATCH_SIZE, shard: tuple[int, int] | None = None,
                                   all_reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Set every trainable BatchNorm layer's moving mean/variance to population statistics over a seeded sample.

    The images are read batch by batch (a memory-mapped array is never loaded whole). Under multi-worker
    training, ``shard`` = (workers, this worker) splits the sample and ``all_reduce`` pools the moments,
    so every worker ends with the statistics of the whole sample.

    Args:
        model: the Keras model, updated in place (only the moving statistics; dropout is off while measuring).
        images: preprocessed images (N, H, W, C) in [0, 1], an array or a memory map.
        sample_size: images sampled, seeded and without replacement; all of them when N is not larger.
        seed: the sample's random seed.
        batch_size: images per forward pass.
        shard: (number of workers, this worker's index): this worker measures every ``workers``-th sampled image;
            None: the whole sample.
        all_reduce: sums a float64 vector across the workers, pooling their moments; None: no pooling.

    Returns:
        The number of BatchNorm layers updated.
    """
    picked = sample_indices(len(images), sample_size, seed)
    if shard is not None:
        picked = picked[shard[1]::shard[0]]
    sample = Rows(images, picked)
    statistics = input_moments(model, sample, batch_size, all_reduce)
    for layer, (mean, variance) in zip(batchnorm_layers(model), statistics):
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return len(statistics)


def batchnorm_refresher(images, *, sample_size: int, seed: int, augment: bool,
                        distribution) -> Callable[[object], None]:
    """What training calls before every selection: population BatchNorm statistics of the model at that moment.

    Measured over a seeded sample of the training images as training sees them: augmented under --augment (the
    layers after each BatchNorm learned to expect that distribution), and under multi-worker training split over
    the workers and pooled (``recompute_batchnorm_statistics``' ``shard`` and ``all_reduce``).

    Args:
        images: the training images (N, H, W, C), an array or a memory map.
        sample_size: images sampled (seeded) for the statistics.
        seed: the sample's and the augmentation's seed.
        augment: pass the sample through the training augmentation.
        distribution: the run's ``train.distribute.Distribution``.

    Returns:
        model -> None: sets the model's moving statistics in place.
    """
    from s3f_edge.train.pipeline import AugmentedRows

    several = distribution.custom_loop
    if augment:
        images = AugmentedRows(images, seed)

    def refresh(model) -> None:
        recompute_batchnorm_statistics(
            model, images, sample_size=sample_size, seed=seed,
            shard=(distribution.num_workers, distribution.worker_index) if several else None,
            all_reduce=distribution.sum_over_replicas if several else None)

    return refresh


class Rows:
    """``images[indices]`` read lazily, a slice at a time (a memory-mapped dataset is never loaded whole)."""

    def __init__(self, images, indices: np.ndarray):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self.images[self.indices[rows]], np.float32)


def relative_variance_change(before: np.ndarray, after: np.ndarray) -> float:
    """The largest change of a channel's variance as a share of the larger of its two values (0 to 1). Dividing by
    the old value alone blows up where a channel's old variance was zero (e.g. one that never fired in training)."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    scale = np.maximum(np.abs(before), np.abs(after))
    moved = scale > 1e-12  # both zero: nothing changed
    return float(np.max(np.abs(after - before)[moved] / scale[moved])) if moved.any() else 0.0


def _check_class_folders(folder: Path, metadata: dict | None) -> None:
    """A folder of class sub-folders must hold the model's classes: another dataset's images would give the model
    another dataset's statistics."""
    from s3f_edge.data.folders import DatasetError

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = (metadata or {}).get("class_names")
    if classes and expected and classes != sorted(expected):
        raise DatasetError(f"the class folders of {folder} ({', '.join(classes)}) are not the model's classes "
                           f"({', '.join(expected)}); give the model's own training images")


def precise_bn_file(model_path: str | Path, images_dir: str | Path, out_path: str | Path, *,
                    sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                    workers: int = 4, overwrite: bool = False) -> dict:
    """Recompute the BatchNorm statistics of a saved model (ours, or one from the original notebooks) over
    a seeded sample of the images under ``images_dir`` and save the result to ``out_path``.

    ``images_dir`` holds training images; for a dataset root with ``train/``, only ``train/`` is read (test
    images must never shape the model). The pixels follow the model's preprocessing contract (for a file
    without s3f-edge metadata: the original's, at the model's input size). Weights are unchanged.
    """
    from s3f_edge.data.files import file_sha256, image_files
    from s3f_edge.data.preprocess import ImageDecodeError, Preprocessing, load_image
    from s3f_edge.model import load_model
    from s3f_edge.model.calibration import is_calibrated, uncalibrated
    from s3f_edge.model.metadata import read_metadata, save_model_atomically
    from s3f_edge.outputs import ensure_writable, refuse_existing

    model_path, images_dir, out_path = Path(model_path), Path(images_dir), Path(out_path)
    if out_path.resolve() == model_path.resolve():
        raise InputError(f"--out must differ from the model file {model_path}: the original is kept")
    ensure_writable(out_path, "--out")
    model = load_model(model_path)
    metadata = read_metadata(model_path)
    # New BatchNorm statistics change the features the out-of-distribution score was fitted on: the saved model
    # is the uncalibrated one, to be calibrated again.
    calibration_removed = is_calibrated(model)
    if calibration_removed:
        model = uncalibrated(model)
        metadata = {key: value for key, value in metadata.items() if key != "calibration"} if metadata else None
    if metadata is not None and "preprocessing" in metadata:
        contract = Preprocessing.from_dict(metadata["preprocessing"])
    else:
        height, width, channels = model.input_shape[1:]
        contract = Preprocessing(height=height, width=width, channels=channels)
    folder = images_dir / "train" if (images_dir / "train").is_dir() else images_dir
    _check_class_folders(folder, metadata)
    files = image_files(folder)
    if not files:
        raise InputError(f"no images under {folder}; give the model's training images")
    refuse_existing([out_path], overwrite=overwrite)  # save_model_atomically replaces it when the new one is ready
    picked = [files[i] for i in sample_indices(len(files), sample_size, seed)]
    images, skipped = [], []
    from concurrent.futures import ThreadPoolExecutor

    def decode(path):
        try:
            return load_image(path, contract)
        except ImageDecodeError as error:
            skipped.append((str(path), str(error)))
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = [image for image in pool.map(decode, picked) if image is not None]
    if not images:
        raise InputError(f"none of the {len(picked)} sampled images under {folder} could be read")
    norms = batchnorm_layers(model)
    before = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
    updated = recompute_batchnorm_statistics(model, np.stack(images), sample_size=len(images), batch_size=batch_size)
    change = max((relative_variance_change(var, layer.moving_variance.numpy())
                  for layer, (_, var) in zip(norms, before)), default=0.0)
    note = (f"population statistics over {len(images)} images of {folder} (seed {seed}), dropout off "
            f"(precise BatchNorm, recomputed from {model_path.name} sha256 {file_sha256(model_path)[:12]})")
    save_model_atomically(model, out_path, {**metadata, "batchnorm_statistics": note} if metadata else None)
    return {"model": str(model_path), "out": str(out_path), "images_folder": str(folder), "images_used": len(images),
            "unreadable": skipped, "layers_updated": updated, "largest_relative_variance_change": change,
            "calibration_removed": calibration_removed}
