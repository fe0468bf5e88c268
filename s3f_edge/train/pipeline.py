"""The training input pipeline: decoded pixels (in memory, or memory-mapped from the disk cache) ->
shuffled, batched, prefetched tf.data."""
from __future__ import annotations

import numpy as np


def input_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, augment: bool = False,
                   shard: tuple[int, int] | None = None, repeat: bool = False, drop_remainder: bool = False):
    """One pipeline for every strategy.

    ``shard`` = (number of shards, this shard) gives each worker a disjoint part of the data;
    ``repeat`` with ``drop_remainder`` lets every worker run the same number of steps (collectives
    hang when one worker runs out of batches first).
    """
    import tensorflow as tf

    on_disk = isinstance(images, np.memmap)  # slices of a memmap stay memmaps
    # A memory-mapped cache is shuffled and batched as indices, and each batch is read from the file,
    # so only the batches in flight are in memory.
    dataset = tf.data.Dataset.range(len(labels)) if on_disk else tf.data.Dataset.from_tensor_slices((images, labels))
    if shard is not None:
        dataset = dataset.shard(*shard)
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if on_disk:
        def read(indices):
            return np.asarray(images[indices], np.float32), labels[indices]

        def read_batch(indices):
            x, y = tf.numpy_function(read, [indices], (tf.float32, tf.int64))
            x.set_shape((None, *images.shape[1:]))
            y.set_shape((None,))
            return x, y

        dataset = dataset.map(read_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        augmenter = make_augmenter(seed)
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_augmenter(seed: int):
    """--augment: random horizontal flips and rotations of up to +-18 degrees (black corners)."""
    import keras

    return keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                             keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed)])


class AugmentedRows:
    """``images[rows]`` passed through the training augmentation (seeded, fresh draws per read): what the
    network sees in training, e.g. for BatchNorm statistics that must match the training distribution."""

    def __init__(self, images, seed: int):
        self.images, self.augmenter = images, make_augmenter(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows) -> np.ndarray:
        batch = np.asarray(self.images[rows], np.float32)
        return np.asarray(self.augmenter(batch, training=True), np.float32)
