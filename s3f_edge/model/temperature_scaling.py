"""Temperature scaling of a classifier's logits (Guo et al., ICML 2017): calibrated probabilities, same answers."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="s3f_edge")
class TemperatureScaling(keras.layers.Layer):
    """``softmax(logits / T)``, or ``sigmoid(logit / T)`` for a single sigmoid unit.

    Dividing every logit by one positive T never changes which class is largest, so accuracy is unchanged;
    T > 1 softens an overconfident model's probabilities. T is a non-trainable weight, fitted after training
    on held-out images (``s3f_edge.train.calibrate``) and saved with the model.

    Args:
        sigmoid: the logits are one sigmoid unit's (binary models with a single output).
    """

    def __init__(self, sigmoid: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # probabilities in float32 under mixed precision too
        super().__init__(**kwargs)
        self.sigmoid = bool(sigmoid)

    def build(self, input_shape):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)

    def call(self, logits):
        scaled = ops.cast(logits, "float32") / self.temperature
        return ops.sigmoid(scaled) if self.sigmoid else ops.softmax(scaled, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sigmoid": self.sigmoid}
