"""The out-of-distribution score as a layer: computed inside the model, so every exported file carries it."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="s3f_edge")
class OutOfDistributionScore(keras.layers.Layer):
    """How unlike the training images an input is; higher is less like them.

    For each input feature map (mean-pooled over height and width) or feature vector: the squared Mahalanobis
    distance to the nearest class mean, with one covariance shared by the classes (Lee et al., NeurIPS 2018),
    standardised by that distance's mean and spread over held-out in-distribution images. The score is the
    largest of these over the inputs, so an input unlike the training images at any depth of the network
    scores high. The statistics are non-trainable weights, fitted after training
    (``s3f_edge.train.calibrate``; numpy reference: ``s3f_edge.train.ood.block_scores``).

    Args:
        feature_sizes: channels (or vector length) of each input, in order.
        num_classes: number of class means per input.

    Inputs:
        A list of (N, H, W, C) feature maps or (N, d) vectors.

    Returns:
        (N,) float32 scores.
    """

    def __init__(self, feature_sizes: list[int], num_classes: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # distances of a few hundred squared units: never float16
        super().__init__(**kwargs)
        self.feature_sizes = [int(size) for size in feature_sizes]
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        if len(input_shape) != len(self.feature_sizes):
            raise ValueError(f"OutOfDistributionScore expects {len(self.feature_sizes)} inputs, got {len(input_shape)}")
        self.whitening, self.class_means, self.location, self.scale = [], [], [], []
        for index, size in enumerate(self.feature_sizes):
            if input_shape[index][-1] != size:
                raise ValueError(f"input {index} has {input_shape[index][-1]} features, expected {size}")
            self.whitening.append(self.add_weight(name=f"whitening_{index}", shape=(size, size), initializer="zeros",
                                                  trainable=False))
            self.class_means.append(self.add_weight(name=f"class_means_{index}", shape=(self.num_classes, size),
                                                    initializer="zeros", trainable=False))
            self.location.append(self.add_weight(name=f"location_{index}", shape=(), initializer="zeros",
                                                 trainable=False))
            self.scale.append(self.add_weight(name=f"scale_{index}", shape=(), initializer="ones", trainable=False))

    def call(self, inputs):
        standardised = []
        for index, features in enumerate(inputs):
            features = ops.cast(features, "float32")
            if len(features.shape) == 4:
                features = ops.mean(features, axis=(1, 2))
            whitened = ops.matmul(features, self.whitening[index])
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
        return {**super().get_config(), "feature_sizes": self.feature_sizes, "num_classes": self.num_classes}
