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

from s3f_edge.errors import InputError
from s3f_edge.model.ood_score import OutOfDistributionScore
from s3f_edge.model.temperature_scaling import TemperatureScaling

HEAD, LOGITS, SCORE = "probs", "logits", "ood_score"
OUTPUTS = (HEAD, SCORE)
# The output of each convolutional block of either tower (model/blocks.py), in the order they run.
BLOCK_OUTPUT = re.compile(r"^(spatial_block\d+_relu|spectral_filter\d+_relu|spectral_dws\d+_pw_relu)$")


def is_calibrated(model: keras.Model) -> bool:
    """Whether ``model`` has the two outputs ``probs`` and ``ood_score``."""
    return any(layer.name == SCORE for layer in model.layers)


def block_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose outputs the score reads: each convolutional block's output (s3f-edge's names), or for a
    model built elsewhere, every 4-D ReLU output."""
    named = [layer for layer in model.layers if BLOCK_OUTPUT.match(layer.name)]
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
    """The classifier's last Dense layer: ``logits`` of a calibrated model, ``probs`` (or the last layer) otherwise."""
    names = {layer.name for layer in model.layers}
    layer = model.get_layer(LOGITS if LOGITS in names else HEAD if HEAD in names else model.layers[-1].name)
    if not isinstance(layer, keras.layers.Dense):
        raise InputError(f"{model.name}'s last layer is a {type(layer).__name__}, not the Dense head calibration needs")
    return layer


def uncalibrated(model: keras.Model) -> keras.Model:
    """The single-output model a calibrated one was built from (``model`` itself when it is not calibrated)."""
    if not is_calibrated(model):
        return model
    logits = model.get_layer(LOGITS)
    sigmoid = model.get_layer(HEAD).sigmoid
    probs = keras.layers.Dense(logits.units, activation="sigmoid" if sigmoid else "softmax", name=HEAD,
                               dtype=logits.dtype_policy)
    outputs = probs(logits.input)
    probs.set_weights(logits.get_weights())
    return keras.Model(model.inputs, outputs, name=model.name)


def calibrated(model: keras.Model, temperature: float, score_statistics: list[dict]) -> keras.Model:
    """``model`` with temperature-scaled ``probs`` and an ``ood_score`` output (fitted: ``train.calibrate``).

    Args:
        model: a trained single-output model (a calibrated one is calibrated afresh).
        temperature: T > 0 for ``TemperatureScaling``.
        score_statistics: per block of ``block_layers(model)``, the ``OutOfDistributionScore`` statistics.

    Returns:
        A new functional model sharing ``model``'s layers and weights, with outputs ``{"probs", "ood_score"}``.
    """
    base = uncalibrated(model)
    dense = head(base)
    if not temperature > 0:
        raise InputError(f"the temperature must be positive, got {temperature}")
    logits_layer = keras.layers.Dense(dense.units, name=LOGITS, dtype="float32")
    logits = logits_layer(dense.input)
    logits_layer.set_weights(dense.get_weights())
    scaling = TemperatureScaling(sigmoid=dense.units == 1, name=HEAD)
    probs = scaling(logits)
    scaling.temperature.assign(float(temperature))
    blocks = block_layers(base)
    scorer = OutOfDistributionScore([layer.output.shape[-1] for layer in blocks], max(dense.units, 2), name=SCORE)
    score = scorer([layer.output for layer in blocks])
    scorer.set_statistics(score_statistics)
    return keras.Model(base.inputs, {HEAD: probs, SCORE: score}, name=base.name)


def head_layer_names(model: keras.Model) -> list[str]:
    """The layers after the features: the classifier head, and for a calibrated model the score too (reduced
    precision keeps them in float: the distances overflow FP16 and INT8 cannot hold them)."""
    return [LOGITS, HEAD, SCORE] if is_calibrated(model) else [head(model).name]


def temperature_of(model: keras.Model) -> float | None:
    """The temperature of a calibrated model, else None."""
    return float(model.get_layer(HEAD).temperature.numpy()) if is_calibrated(model) else None
