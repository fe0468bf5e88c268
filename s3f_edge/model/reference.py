"""Keras outputs that other backends are held to are computed in full float32."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def float32_reference():
    """Disable TF32 while Keras computes a reference: TensorFlow uses TF32 matmuls and convolutions on
    Ampere and later GPUs by default (about 1e-3 relative error), which would fail the 1e-4 FP32 parity of
    engines built with TF32 off. No effect on CPUs; the caller's setting is restored."""
    import tensorflow as tf

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
