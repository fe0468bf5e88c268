"""Per-epoch model selection, early stopping and crash-safe run state."""
from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from s3f_edge.model.metadata import save_model_atomically
from s3f_edge.outputs import write_json
from s3f_edge.runtime.predictor import class_probabilities, nonfinite_rows
from s3f_edge.train.evaluate import batched_predict
from s3f_edge.train.metrics import selection_score


def probability_loss(labels: np.ndarray, raw: np.ndarray) -> float:
    """Unweighted cross-entropy of model outputs, as Keras reports val_loss (probabilities clipped at 1e-7)."""
    probabilities = np.clip(class_probabilities(raw), 1e-7, 1.0 - 1e-7)
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels])))


class ValidationSelection(keras.callbacks.Callback):
    """Scores the selection split each epoch; keeps the best model on disk; stops after ``patience``.

    Adds val_loss, val_accuracy and val_selection_score to the epoch logs (one prediction pass
    serves all three, so the selection split is not run twice). ``before_scoring(model)``, when given,
    runs first (the precise BatchNorm statistics), so that what is scored is what is saved.
    """

    def __init__(self, images, labels, best_path: Path, metadata: dict, patience: int, binary_positive: bool,
                 batch_size: int, best_score: float = -1.0, wait: int = 0, before_scoring=None):
        super().__init__()
        self.before_scoring = before_scoring
        self.predict = None  # built for the model on first use
        self.images, self.labels = images, labels
        self.best_path, self.metadata = Path(best_path), metadata
        self.patience, self.binary_positive, self.batch_size = patience, binary_positive, batch_size
        self.best_score, self.wait, self.best_epoch = best_score, wait, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.before_scoring is not None:
            self.before_scoring(self.model)
        if self.predict is None:
            self.predict = batched_predict(self.model, self.batch_size * 2)
        raw = self.predict(self.images)
        diverged = bool(nonfinite_rows(raw).any())
        if diverged:  # never selected: argmax of NaN rows would silently score them as class 0
            print(f"epoch {epoch + 1}: the model's outputs are NaN/inf on the selection split; not selectable",
                  flush=True)
            raw = np.nan_to_num(raw, nan=0.0, posinf=1.0, neginf=0.0)
        score = -1.0 if diverged else selection_score(self.labels, class_probabilities(raw), self.binary_positive)
        logs["val_loss"] = probability_loss(self.labels, raw)
        logs["val_accuracy"] = float((class_probabilities(raw).argmax(1) == self.labels).mean())
        logs["val_selection_score"] = score
        if score > self.best_score:  # strictly better, as the original callback
            self.best_score, self.wait, self.best_epoch = score, 0, epoch
            save_model_atomically(self.model, self.best_path, {**self.metadata, "best_epoch": epoch + 1})
            logs["new_best"] = 1.0
        else:
            self.wait += 1
            logs["new_best"] = 0.0
            if self.wait >= self.patience:
                self.model.stop_training = True


class RunState(keras.callbacks.Callback):
    """Appends the epoch's row to history.csv, then checkpoints the full model and the counters.

    Every write is atomic, so ``--resume`` always finds a consistent last epoch.
    """

    def __init__(self, run_dir: Path, selection: ValidationSelection, plateau: keras.callbacks.ReduceLROnPlateau,
                 metadata: dict):
        super().__init__()
        self.run_dir, self.selection, self.plateau, self.metadata = Path(run_dir), selection, plateau, metadata
        self.epoch_learning_rate = None

    def on_epoch_begin(self, epoch, logs=None):
        # Read here, not at the epoch's end: by then the plateau callback may already have cut it for the next epoch.
        self.epoch_learning_rate = current_learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate_used"] = self.epoch_learning_rate
        append_history(self.run_dir / "history.csv", epoch, logs)
        save_model_atomically(self.model, self.run_dir / "last.keras", self.metadata)
        state = {
            "epochs_done": epoch + 1,
            "best_score": self.selection.best_score,
            "wait": self.selection.wait,
            "stopped": bool(self.model.stop_training),
            "plateau": {"wait": self.plateau.wait, "best": float(self.plateau.best),
                        "cooldown_counter": self.plateau.cooldown_counter},
        }
        write_json(self.run_dir / "state.json", state)


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h': a duration as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class BudgetNote(keras.callbacks.Callback):
    """One line after the first epoch this process trains: what it took, and what the rest of the budget would
    take at that pace (the first epoch also traces the graphs, so the estimate errs long)."""

    def __init__(self, last_epoch: int, log: Callable[[str], None]):
        super().__init__()
        self.last_epoch, self.log = last_epoch, log
        self.started: float | None = None
        self.noted = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.started is None:
            self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.noted or self.started is None:
            return
        self.noted = True
        seconds = time.perf_counter() - self.started
        left = self.last_epoch - (epoch + 1)
        if left > 0:
            epochs = f"{left} epoch{'s' if left > 1 else ''}"
            self.log(f"epoch {epoch + 1} took {duration(seconds)}; at that pace the {epochs} left would take about "
                     f"{duration(left * seconds)} (early stopping may end sooner; Ctrl-C stops, --resume continues)")


# learning_rate_used is the rate the epoch's updates used. Files of earlier s3f-edge versions have "learning_rate"
# instead: the rate after the epoch's plateau step, i.e. the next epoch's (truncate_history converts them).
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_selection_score", "new_best",
                  "learning_rate_used"]


def current_learning_rate(model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def append_history(path: Path, epoch: int, logs: dict) -> None:
    new_file = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in HISTORY_FIELDS[1:]}})
        handle.flush()
        os.fsync(handle.fileno())


def truncate_history(path: Path, epochs_done: int, initial_learning_rate: float) -> None:
    """Drop rows of epochs that ran after the last checkpoint (a kill between the two writes).

    A file from before ``learning_rate_used`` is converted, so a resumed run's rows mean one thing: the rate
    epoch e used is the one such a file logged after epoch e - 1 (and the initial rate for epoch 0).
    """
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < epochs_done]
    if rows and "learning_rate_used" not in rows[0] and "learning_rate" in rows[0]:
        rates_after = [r.pop("learning_rate") for r in rows]
        # float32, as the optimizer holds it, so the column has one value per rate
        for row, rate in zip(rows, [float(np.float32(initial_learning_rate)), *rates_after[:-1]]):
            row["learning_rate_used"] = rate
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


