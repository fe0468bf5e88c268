"""The names an s3f-edge model uses in every format (Keras, ONNX, TensorRT, Triton): one input, and the
outputs ``probs`` and, for a calibrated model, ``ood_score``. Every layer reads them from here."""
from __future__ import annotations

INPUT = "image"
PROBS = "probs"  # class probabilities (N, K); one sigmoid unit (N, 1) for a binary model with that head
OOD_SCORE = "ood_score"  # how unlike the training images each image is (N,); higher is less like them
OUTPUTS = (PROBS, OOD_SCORE)


def outputs_by_name(outputs) -> dict:
    """A Keras model's outputs (or output tensors) by name: a calibrated model gives a dict, any other its
    probabilities alone."""
    return dict(outputs) if isinstance(outputs, dict) else {PROBS: outputs}
