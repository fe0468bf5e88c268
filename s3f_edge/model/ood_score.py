"""The out-of-distribution score as a layer: computed inside the model, so every exported file carries it."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

POOLINGS = ("mean", "mean_std")  # per channel: the mean over height and width, or the mean and the spread


def pool(features, pooling: str):
    """A feature map (N, H, W, C) summarised per channel (float32): its mean, or its mean and standard deviation
    over height and width (N, 2C). A vector (N, d) is returned as it is."""
    features = ops.cast(features, "float32")
    if len(features.shape) != 4:
        return features
    mean = ops.mean(features, axis=(1, 2))
    if pooling == "mean":
        return mean
    # E[x^2] - E[x]^2 in one pass over the map (a second, centred pass cost twice as much in ONNX Runtime); ReLU
    # outputs are of order 1, so float32's cancellation error stays far below the spreads that matter.
    variance = ops.maximum(ops.mean(ops.square(features), axis=(1, 2)) - ops.square(mean), 0.0)
    return ops.concatenate([mean, ops.sqrt(variance)], axis=-1)


@keras.saving.register_keras_serializable(package="s3f_edge")
class OutOfDistributionScore(keras.layers.Layer):
    """How unlike the training images an input is; higher is less like them.

    For each input feature map, summarised per channel (``pool``), or feature vector: the squared Mahalanobis
    distance to the nearest class mean, with one covariance shared by the classes (Lee et al., NeurIPS 2018),
    standardised by that distance's mean and spread over held-out in-distribution images. The score is the
    largest of these over the inputs, so an input unlike the training images at any of them scores high. The
    statistics are non-trainable weights, fitted after training (``s3f_edge.train.calibrate``; numpy reference:
    ``s3f_edge.train.ood.block_scores``).

    Args:
        feature_sizes: channels (or vector length) of each input, in order.
        num_classes: number of class means per input.
        pooling: "mean" or "mean_std" (``POOLINGS``).

    Inputs:
        A list of (N, H, W, C) feature maps or (N, d) vectors.

    Returns:
        (N,) float32 scores.
    """

    def __init__(self, feature_sizes: list[int], num_classes: int, pooling: str = "mean", **kwargs):
        kwargs.setdefault("dtype", "float32")  # distances of a few hundred squared units: never float16
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.feature_sizes = [int(size) for size in feature_sizes]
        self.num_classes = int(num_classes)
        self.pooling = pooling

    def _statistic_size(self, input_shape, size: int) -> int:
        return 2 * size if self.pooling == "mean_std" and len(input_shape) == 4 else size

    def build(self, input_shape):
        if len(input_shape) != len(self.feature_sizes):
            raise ValueError(f"OutOfDistributionScore expects {len(self.feature_sizes)} inputs, got {len(input_shape)}")
        self.whitening, self.class_means, self.location, self.scale = [], [], [], []
        for index, size in enumerate(self.feature_sizes):
            if input_shape[index][-1] != size:
                raise ValueError(f"input {index} has {input_shape[index][-1]} features, expected {size}")
            dimension = self._statistic_size(input_shape[index], size)
            self.whitening.append(self.add_weight(name=f"whitening_{index}", shape=(dimension, dimension),
                                                  initializer="zeros", trainable=False))
            self.class_means.append(self.add_weight(name=f"class_means_{index}", shape=(self.num_classes, dimension),
                                                    initializer="zeros", trainable=False))
            self.location.append(self.add_weight(name=f"location_{index}", shape=(), initializer="zeros",
                                                 trainable=False))
            self.scale.append(self.add_weight(name=f"scale_{index}", shape=(), initializer="ones", trainable=False))

    def call(self, inputs):
        standardised = []
        for index, features in enumerate(inputs):
            whitened = ops.matmul(pool(features, self.pooling), self.whitening[index])
            offsets = ops.expand_dims(whitened, 1) - ops.expand_dims(self.class_means[index], 0)  # (N, K, d)
            nearest = ops.min(ops.sum(ops.square(offsets), axis=-1), axis=-1)
            standardised.append((nearest - self.location[index]) / self.scale[index])
        return ops.max(ops.stack(standardised, axis=-1), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def set_statistics(self, statistics: list[dict]) -> None:
        """Assign fitted statistics: one dict per input with whitening, class_means, location and scale."""
        if len(statistics) != len(self.feature_sizes):
            raise ValueError(f"{len(statistics)} sets of statistics for {len(self.feature_sizes)} inputs")
        for index, values in enumerate(statistics):
            self.whitening[index].assign(np.asarray(values["whitening"], np.float32))
            self.class_means[index].assign(np.asarray(values["class_means"], np.float32))
            self.location[index].assign(np.float32(values["location"]))
            self.scale[index].assign(np.float32(values["scale"]))

    def get_config(self):
        return {**super().get_config(), "feature_sizes": self.feature_sizes, "num_classes": self.num_classes,
                "pooling": self.pooling}
