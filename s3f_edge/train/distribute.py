"""Where training runs: one device (a GPU when TensorFlow sees one) or all local GPUs.

Multi-host training (MultiWorkerMirroredStrategy) is not offered: Keras 3's ``fit`` fails under
it (keras-team/keras#20585; reproduced here with TensorFlow 2.21 / Keras 3.15 and two workers on
localhost, in the symbolic build and again in the per-replica metric reduction). It needs a custom
training loop.
"""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("auto", "mirrored")


@dataclass
class Distribution:
    strategy: object  # tf.distribute.Strategy
    name: str
    description: str


def make_distribution(name: str = "auto") -> Distribution:
    """The tf.distribute strategy to build, compile and fit the model under."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        return Distribution(tf.distribute.get_strategy(), name, f"one device ({'GPU' if gpus else 'CPU'})")
    strategy = tf.distribute.MirroredStrategy()
    return Distribution(strategy, name, f"mirrored over {strategy.num_replicas_in_sync} local device(s)")
