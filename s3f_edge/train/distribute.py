"""Where training runs: one device (a GPU when TensorFlow sees one), all local GPUs, or several hosts.

``multiworker`` is MultiWorkerMirroredStrategy configured by the ``TF_CONFIG`` environment variable.
Keras 3's ``fit`` fails under that strategy (keras-team/keras#20585; reproduced here with
TensorFlow 2.21 / Keras 3.15), so those runs go through the custom loop in ``loop.py``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from s3f_edge.errors import InputError

STRATEGIES = ("auto", "mirrored", "multiworker")


@dataclass
class Distribution:
    strategy: object  # tf.distribute.Strategy
    name: str
    description: str
    is_chief: bool = True  # the one process that writes the run directory
    worker_index: int = 0
    num_workers: int = 1
    _sum: object = field(default=None, repr=False)

    @property
    def custom_loop(self) -> bool:
        return self.name == "multiworker"

    def sum_over_replicas(self, values: np.ndarray) -> np.ndarray:
        """Sum over all replicas of this worker's ``values`` (each local replica contributes once).

        A collective: under multi-worker training every worker must call it, in the same order.
        """
        if self._sum is None:
            import tensorflow as tf

            strategy = self.strategy

            @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
            def total(array):
                return strategy.reduce("sum", strategy.run(lambda: tf.identity(array)), axis=None)

            self._sum = total
        return self._sum(np.asarray(values, np.float64)).numpy()


def cluster_from_tf_config(environ: dict | None = None) -> tuple[dict, str, int]:
    """(cluster, task type, task index) from TF_CONFIG, or a ValueError that says how to set it."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise InputError(f"--strategy multiworker needs TF_CONFIG on every worker, e.g. {example}")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, task_index = task["type"], int(task["index"])
        hosts = cluster[task_type]
        if not 0 <= task_index < len(hosts):
            raise ValueError(f"task index {task_index} is outside cluster[{task_type!r}] ({len(hosts)} hosts)")
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"TF_CONFIG is not a valid cluster description ({error}); expected e.g. {example}") from None
    return cluster, task_type, task_index


def is_chief_task(cluster: dict, task_type: str, task_index: int) -> bool:
    """TensorFlow's rule: the 'chief' task if the cluster has one, else worker 0."""
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_index == 0


def make_distribution(name: str = "auto") -> Distribution:
    """The tf.distribute strategy to build, compile and train the model under."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise InputError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        return Distribution(tf.distribute.get_strategy(), name, f"one device ({'GPU' if gpus else 'CPU'})")
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Distribution(strategy, name, f"mirrored over {strategy.num_replicas_in_sync} local device(s)")
    cluster, task_type, task_index = cluster_from_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    num_workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    index = task_index + (1 if task_type == "worker" and "chief" in cluster else 0)
    chief = is_chief_task(cluster, task_type, task_index)
    return Distribution(
        strategy, name,
        f"multi-worker: {task_type} {task_index}{' (chief)' if chief else ''} of {num_workers} workers, "
        f"{strategy.num_replicas_in_sync} replicas in sync",
        is_chief=chief, worker_index=index, num_workers=num_workers,
    )
