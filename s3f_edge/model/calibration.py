"""A calibrated model: the trained network with two outputs, ``probs`` (temperature-scaled) and ``ood_score``.

Calibration adds layers and changes no trained weight. The trained model's head, ``Dense(K, softmax)`` named
``probs``, becomes ``Dense(K)`` named ``logits`` (same weights) followed by ``TemperatureScaling`` named
``probs``; ``OutOfDistributionScore`` named ``ood_score`` reads the output of every convolutional block. The
result is an ordinary functional model, so it saves as .keras and exports to ONNX and TensorRT with both
outputs. ``uncalibrated`` gives back the single-output model (to fit again, or to recompute BatchNorm).
"""
from __future__ import annotations

import re

import keras

from s3f_edge.contract import OOD_SCORE, OUTPUTS, PROBS
from s3f_edge.errors import InputError
from s3f_edge.model.ood_score import OutOfDistributionScore
from s3f_edge.model.temperature_scaling import TemperatureScaling

HEAD, LOGITS, SCORE = PROBS, "logits", OOD_SCORE
__all__ = ["HEAD", "LOGITS", "OUTPUTS", "SCORE", "block_layers", "calibrated", "check_head", "head",
           "head_layer_names", "is_calibrated", "temperature_of", "uncalibrated"]
# The output of each convolutional block of either tower (model/blocks.py).
SPATIAL_BLOCK = re.compile(r"^spatial_block\d+_relu$")
SPECTRAL_BLOCK = re.compile(r"^(spectral_filter\d+_relu|spectral_dws\d+_pw_relu)$")


def is_calibrated(model: keras.Model) -> bool:
    """Whether ``model`` has the two outputs ``probs`` and ``ood_score``."""
    return any(layer.name == SCORE for layer in model.layers)


def block_layers(model: keras.Model, spectral: bool = False) -> list[keras.layers.Layer]:
    """The layers whose outputs the score reads: the spatial tower's block outputs (s3f-edge's names; with
    ``spectral``, the spectral tower's too; a spectral-only model's own), or for a model built elsewhere every
    4-D ReLU output. The spatial blocks alone were measured best (docs/calibration.md)."""
    spatial = [layer for layer in model.layers if SPATIAL_BLOCK.match(layer.name)]
    spectral_blocks = [layer for layer in model.layers if SPECTRAL_BLOCK.match(layer.name)]
    named = spatial + spectral_blocks if spectral or not spatial else spatial
    if named:
        return named
    relus = [layer for layer in model.layers if len(layer.output.shape) == 4 and (
        isinstance(layer, keras.layers.ReLU)
        or (isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "relu"))]
    if not relus:
        raise InputError(f"{model.name} has no convolutional block outputs (ReLU feature maps) to fit an "
                         "out-of-distribution score on")
    return relus


def head(model: keras.Model) -> keras.layers.Dense:
    """The classifier's Dense head: the layer named ``logits`` of a calibrated model, else the one named ``probs``,
    else the model's last layer."""
    names = {layer.name for layer in model.layers}
    layer = model.get_layer(LOGITS if LOGITS in names else HEAD if HEAD in names else model.layers[-1].name)
    if not isinstance(layer, keras.layers.Dense):
        raise InputError(f"{model.name}'s last layer is a {type(layer).__name__}, not the Dense head calibration needs")
    return layer


def check_head(model: keras.Model, class_count: int | None = None) -> keras.layers.Dense:
    """The head, if calibration can rebuild it: a softmax over the classes, or one sigmoid unit for two classes.

    Raises:
        InputError: another activation (calibration would change what the model computes), or a class count
            that is not the head's.
    """
    dense = head(model)
    if is_calibrated(model):
        return dense
    activation = getattr(dense.activation, "__name__", "")
    if not (activation == "softmax" and dense.units >= 2) and not (activation == "sigmoid" and dense.units == 1):
        raise InputError(f"{model.name}'s head is Dense({dense.units}, activation={activation!r}); calibration needs a "
                         "softmax over the classes, or one sigmoid unit for two classes")
    expected = 2 if dense.units == 1 else dense.units
    if class_count is not None and class_count != expected:
        raise InputError(f"the model's head gives {expected} classes, the data has {class_count}; give the model's own "
                         "dataset")
    return dense


def uncalibrated(model: keras.Model) -> keras.Model:
    """The single-output model a calibrated one was built from (``model`` itself when it is not calibrated)."""
    if not is_calibrated(model):
        return model
    logits = model.get_layer(LOGITS)
    sigmoid = model.get_layer(HEAD).sigmoid
    probs = keras.layers.Dense(logits.units, activation="sigmoid" if sigmoid else "softmax", name=HEAD,
                               use_bias=logits.use_bias, dtype=logits.dtype_policy)
    outputs = probs(logits.input)
    probs.set_weights(logits.get_weights())
    return keras.Model(model.inputs, outputs, name=model.name)


def calibrated(model: keras.Model, temperature: float, score_statistics: list[dict], blocks: list[str],
               pooling: str) -> keras.Model:
    """``model`` with temperature-scaled ``probs`` and an ``ood_score`` output (fitted: ``train.calibrate``).

    Args:
        model: a trained single-output model (a calibrated one is calibrated afresh).
        temperature: T > 0 for ``TemperatureScaling``.
        score_statistics: per block, the ``OutOfDistributionScore`` statistics.
        blocks: the names of the layers whose outputs the score reads, in the order of ``score_statistics``.
        pooling: how the score summarises each block's feature map (``ood_score.POOLINGS``).

    Returns:
        A new functional model sharing ``model``'s layers and weights, with outputs ``{"probs", "ood_score"}``.
    """
    base = uncalibrated(model)
    dense = check_head(base)
    if not temperature > 0:
        raise InputError(f"the temperature must be positive, got {temperature}")
    logits_layer = keras.layers.Dense(dense.units, use_bias=dense.use_bias, name=LOGITS, dtype="float32")
    logits = logits_layer(dense.input)
    logits_layer.set_weights(dense.get_weights())
    scaling = TemperatureScaling(sigmoid=dense.units == 1, name=HEAD)
    probs = scaling(logits)
    scaling.temperature.assign(float(temperature))
    layers = [base.get_layer(name) for name in blocks]
    scorer = OutOfDistributionScore([layer.output.shape[-1] for layer in layers], max(dense.units, 2), pooling,
                                    name=SCORE)
    score = scorer([layer.output for layer in layers])
    scorer.set_statistics(score_statistics)
    return keras.Model(base.inputs, {HEAD: probs, SCORE: score}, name=base.name)


def head_layer_names(model: keras.Model) -> list[str]:
    """The layers after the features: the classifier head, and for a calibrated model the score too (reduced
    precision keeps them in float: the distances overflow FP16 and INT8 cannot hold them)."""
    return [LOGITS, HEAD, SCORE] if is_calibrated(model) else [head(model).name]


def temperature_of(model: keras.Model) -> float | None:
    """The temperature of a calibrated model, else None."""
    return float(model.get_layer(HEAD).temperature.numpy()) if is_calibrated(model) else None
