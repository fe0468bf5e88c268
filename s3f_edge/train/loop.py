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

    Args:
        model: the compiled model; trained in place.
        distribution: the multi-worker distribution (``make_distribution``).
        images, labels: the training images (N, H, W, C) and class indices; each worker reads its own shard.
        epochs: the epoch to stop before; initial_epoch: the first to run (a resumed run's).
        batch_size: the global batch, split evenly over all replicas.
        seed: the input pipeline's seed (each pipeline adds its index).
        augment: apply the training augmentation (``pipeline.make_augmenter``).
        class_weight: Keras's ``class_weight`` (class index -> weight); None: every class 1.
        sigmoid_head: the model has one sigmoid unit (binary cross-entropy).
        callbacks: ``fit``'s callbacks, driven by hand.
        verbose: a progress bar on the chief when true.

    Returns:
        What this worker did: strategy, workers, replicas, worker_index, examples_seen_by_this_worker and
        weights_sha256 (equal on every worker).

    Raises:
        InputError: ``batch_size`` is not a multiple of the replicas in sync.
        WorkersDisagreeError: the workers reached different selection, learning-rate or stop decisions.
    """
    replicas = distribution.strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(f"--batch-size {batch_size} must be a multiple of the {replicas} replicas in sync")
    train_step = _distributed_train_step(model, distribution.strategy, images, labels, batch_size=batch_size,
                                         seed=seed, augment=augment, sigmoid_head=sigmoid_head,
                                         weight_per_class=_class_weight_vector(model, class_weight, sigmoid_head))
    local_examples = _run_epochs(model, distribution, train_step, callbacks, initial_epoch=initial_epoch,
                                 epochs=epochs, steps_per_epoch=math.ceil(len(labels) / batch_size), verbose=verbose)
    return {"strategy": distribution.name, "workers": distribution.num_workers, "replicas": replicas,
            "worker_index": distribution.worker_index, "examples_seen_by_this_worker": local_examples,
            "weights_sha256": weights_digest(model)}


def _class_weight_vector(model, class_weight: dict | None, sigmoid_head: bool) -> np.ndarray:
    """Keras's ``class_weight`` dict as one weight per class (1 where it names none; two classes for a sigmoid)."""
    num_classes = int(model.output_shape[-1]) if not sigmoid_head else 2
    weight_per_class = np.ones(num_classes, np.float32)
    for index, weight in (class_weight or {}).items():
        weight_per_class[index] = weight
    return weight_per_class


def _distributed_train_step(model, strategy, images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int,
                            augment: bool, sigmoid_head: bool, weight_per_class: np.ndarray):
    """() -> (sums over all replicas, sums over this worker's replicas) of (weighted loss, correct, examples) for one
    global batch: every replica trains on its own shard, and the optimizer all-reduces the gradients."""
    import keras
    import tensorflow as tf

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

    return lambda: train_step(iterator)


def _run_epochs(model, distribution: Distribution, train_step, callbacks: list, *, initial_epoch: int, epochs: int,
                steps_per_epoch: int, verbose: int) -> int:
    """The epochs from ``initial_epoch``, driving the callbacks as ``fit`` would, until ``epochs`` or a stop; after
    each, the BatchNorm statistics are averaged and the workers' decisions checked equal. Returns the examples this
    worker trained on."""
    import keras

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
            global_stats, local_stats = train_step()
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
    return local_examples
