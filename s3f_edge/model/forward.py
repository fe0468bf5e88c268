"""One batched forward pass, shared by everything that runs a Keras model over many images."""
from __future__ import annotations

import numpy as np


def batched_outputs(model, images, batch_size: int = 64) -> list[np.ndarray]:
    """Every output of ``model`` (training off) over ``images``, ``batch_size`` at a time.

    One traced function serves every batch; only one batch of a memory-mapped array is read at a time; and
    under MultiWorkerMirroredStrategy it avoids ``model.predict``'s distributed path, which fails there
    (keras-team/keras#20585).

    Args:
        model: a Keras model with one output, several (a list), or named ones (a dict: taken in key order).
        images: (N, H, W, C) float32 pixels.
        batch_size: images per call.

    Returns:
        One array per output, N rows each (none for N = 0: callers shape their own empty result).
    """
    import tensorflow as tf

    def flat(outputs):
        if isinstance(outputs, dict):
            return [outputs[key] for key in sorted(outputs)]
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    forward = tf.function(lambda x: flat(model(x, training=False)), reduce_retracing=True)
    parts = [[output.numpy() for output in forward(np.asarray(images[i:i + batch_size], np.float32))]
             for i in range(0, len(images), batch_size)]
    if not parts:
        return []
    return [np.concatenate([part[j] for part in parts]) for j in range(len(parts[0]))]
