"""A training loop for MultiWorkerMirroredStrategy, where Keras 3's ``fit`` fails (keras-team/keras#20585).

It does what ``fit`` does for this project and no more: per-worker shards of the in-memory data,
the class-weighted loss averaged over the global batch, Keras's optimizer (which all-reduces the
gradients), and the same callbacks as a ``fit`` run (selection, LR plateau, run state), driven by
hand. At the end of each epoch the BatchNorm moving statistics are averaged over the workers, then
every worker scores the whole selection split with identical weights, so every worker takes the
same checkpoint, learning-rate and stopping decisions; a check after each epoch makes sure of it.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from s3f_edge.errors import InputError, WorkersDisagreeError
from s3f_edge.train.distribute import Distribution
from s3f_edge.train.pipeline import input_pipeline


def weights_digest(model) -> str:
    """sha256 over every weight; equal on all workers when training is truly synchronous."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy(), dtype=np.float32)).tobytes())
    return digest.hexdigest()


class WorkerSync:
    """The collectives the loop needs besides the gradient all-reduce (built once; every worker must call them)."""

    def __init__(self, distribution: Distribution, model):
        import tensorflow as tf

        strategy = distribution.strategy
        self.distribution, self.strategy = distribution, strategy
        # BatchNorm moving statistics are updated from each replica's own batches, so they drift apart;
        # averaging them before each validation keeps every worker's model identical.
        self.statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

        sizes = [int(np.prod(v.shape)) for v in self.statistics]

        @tf.function
        def average_statistics():
            flat = strategy.run(lambda: tf.concat([tf.reshape(v.value, [-1]) for v in self.statistics], 0))
            means = tf.split(strategy.reduce("mean", flat, axis=None), sizes)
            for variable, mean in zip(self.statistics, means):
                variable.assign(tf.reshape(mean, variable.shape))

        self.average_statistics = average_statistics

    def total(self, values: np.ndarray) -> np.ndarray:
        """Sum over all replicas of this worker's ``values`` (each local replica contributes once)."""
        return self.distribution.sum_over_replicas(values)

    def check_agreement(self, logs: dict, model) -> None:
        """Raise on every worker at once if any worker's selection score, LR or stop flag differs."""
        from s3f_edge.train.callbacks import current_learning_rate

        mine = np.array([logs.get("val_selection_score", 0.0), logs.get("val_loss", 0.0),
                         current_learning_rate(model), float(model.stop_training)])
        disagree = float(not np.allclose(self.total(mine), mine * self.strategy.num_replicas_in_sync,
                                         rtol=1e-9, atol=1e-12))
        if self.total(np.array([disagree]))[0] > 0:
            raise WorkersDisagreeError(
                "workers reached different selection/learning-rate/stop decisions; check that every worker reads "
                "the same data (same file list) and runs the same package versions"
            )


def fit_multiworker(model, distribution: Distribution, images: np.ndarray, labels: np.ndarray, *, epochs: int,
                    initial_epoch: int, batch_size: int, seed: int, augment: bool, class_weight: dict | None,
                    sigmoid_head: bool, callbacks: list, verbose: int) -> dict:
    """Train ``model`` (built and compiled under ``distribution.strategy.scope()``) in step with the other workers.

    ``batch_size`` is the global batch, split evenly over all replicas. Returns what this worker did.
    """
    import keras
    import tensorflow as tf

    strategy = distribution.strategy
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(f"--batch-size {batch_size} must be a multiple of the {replicas} replicas in sync")
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    num_classes = int(model.output_shape[-1]) if not sigmoid_head else 2
    weight_per_class = np.ones(num_classes, np.float32)
    for index, weight in (class_weight or {}).items():
        weight_per_class[index] = weight

    def dataset_fn(context):
        return input_pipeline(
            images, labels, context.get_per_replica_batch_size(batch_size), seed + context.input_pipeline_id, augment,
            shard=(context.num_input_pipelines, context.input_pipeline_id), repeat=True, drop_remainder=True,
        )

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    optimizer = model.optimizer
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        class_weights = tf.constant(weight_per_class)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            if sigmoid_head:
                per_example = keras.losses.binary_crossentropy(tf.cast(y, outputs.dtype)[:, None], outputs)
                predicted = tf.cast(outputs[:, 0] > 0.5, y.dtype)
            else:
                per_example = keras.losses.sparse_categorical_crossentropy(y, outputs)
                predicted = tf.cast(tf.argmax(outputs, axis=-1), y.dtype)
            per_example = per_example * tf.gather(class_weights, y)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
            scaled = optimizer.scale_loss(loss)  # loss scaling under mixed precision; identity otherwise
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32))
        return tf.stack([tf.reduce_sum(per_example), correct, tf.cast(tf.shape(y)[0], tf.float32)])

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        per_replica = strategy.run(replica_step, args=(x, y))
        local = strategy.experimental_local_results(per_replica)
        return strategy.reduce("sum", per_replica, axis=None), tf.add_n(list(local))

    sync = WorkerSync(distribution, model)
    for callback in callbacks:  # driven one by one so that they and the agreement check share one logs dict
        callback.set_model(model)
    model.stop_training = False
    local_examples = 0
    for callback in callbacks:
        callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        progress = keras.utils.Progbar(steps_per_epoch, verbose=verbose, stateful_metrics=["loss", "accuracy"]) \
            if verbose and distribution.is_chief else None
        totals = np.zeros(3)
        for step in range(steps_per_epoch):
            global_stats, local_stats = train_step(iterator)
            totals += global_stats.numpy()
            local_examples += int(local_stats.numpy()[2])
            if progress is not None:
                progress.update(step + 1, [("loss", totals[0] / totals[2]), ("accuracy", totals[1] / totals[2])])
        logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
        sync.average_statistics()
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        sync.check_agreement(logs, model)
        if model.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end()
    return {"strategy": distribution.name, "workers": distribution.num_workers, "replicas": replicas,
            "worker_index": distribution.worker_index, "examples_seen_by_this_worker": local_examples,
            "weights_sha256": weights_digest(model)}
