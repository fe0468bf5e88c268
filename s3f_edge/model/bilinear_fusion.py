"""Bilinear fusion of the spatial and spectral vectors (no trainable weights)."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="s3f_edge")
class BilinearFusion(keras.layers.Layer):
    """Outer product s f^T flattened row-major, signed square root, then L2 normalisation.

    Matches the original: ``sign(z) * sqrt(|z| + 1e-5)`` and ``tf.nn.l2_normalize``
    (epsilon 1e-12 on the squared norm).

    Args:
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...); the layer has no options of its own.
    """

    def call(self, inputs):
        """Fuse each image's spatial and spectral vectors.

        Args:
            inputs: ``[spatial, spectral]``, of shapes (B, Ds) and (B, Df).

        Returns:
            (B, Ds * Df) L2-normalised vectors: entry ``i * Df + j`` comes from ``spatial[:, i] * spectral[:, j]``.
        """
        spatial, spectral = inputs
        outer = ops.expand_dims(spatial, -1) * ops.expand_dims(spectral, 1)
        flat = ops.reshape(outer, (-1, spatial.shape[-1] * spectral.shape[-1]))
        signed_root = ops.sign(flat) * ops.sqrt(ops.abs(flat) + 1e-5)
        squared_norm = ops.sum(ops.square(signed_root), axis=-1, keepdims=True)
        return signed_root * ops.rsqrt(ops.maximum(squared_norm, 1e-12))

    def compute_output_shape(self, input_shape):
        spatial_shape, spectral_shape = input_shape
        return (spatial_shape[0], spatial_shape[1] * spectral_shape[1])
