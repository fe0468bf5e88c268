"""Predictor: the interface every inference backend implements, and the model's output contract.

A Predictor is a loaded model plus its metadata (class names, preprocessing contract and, for a calibrated
model, the out-of-distribution threshold). ``predict(batch)`` takes preprocessed (N, H, W, C) float32 pixels
in [0, 1] and returns class probabilities; ``predict_scored(batch)`` also returns each image's
out-of-distribution score (None for a model without one). ``formats.load_predictor`` loads a file with the
backend its format calls for; the base class knows no backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.contract import OOD_SCORE, OUTPUTS, PROBS
from s3f_edge.data.files import file_sha256
from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError, MissingFileError, ModelContractError, NonFiniteOutputError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def default_model() -> Path:
    """The bundled model (ONNX) that `infer` uses when no --model is given.

    Returns:
        The path of the bundled model.onnx.

    Raises:
        MissingFileError: this installation has no bundled model.
    """
    path = DEFAULT_MODEL_DIR / "model.onnx"
    if not path.is_file():
        raise MissingFileError("this s3f-edge has no bundled default model; pass --model MODEL "
                               "(a .keras, .onnx or .engine file exported by s3f-edge)")
    return path


def beside_model(path: str | Path) -> Path:
    """Where a command writes what it derives from a model file by default: beside it, except for the bundled model
    (never write into the installed package): runs/default-model/."""
    return Path("runs") / "default-model" if is_bundled_model(path) else Path(path).parent


def is_bundled_model(path: str | Path) -> bool:
    """Whether ``path`` is one of the bundled model's files (inside the installed package: never write beside it,
    and on a cluster each node has its own copy)."""
    try:
        return Path(path).resolve().parent == DEFAULT_MODEL_DIR.resolve()
    except OSError:
        return False


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """Model output -> (N, K) probabilities; a single sigmoid unit becomes [1 - p, p]."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 2 and raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    return raw


def nonfinite_rows(outputs: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows (images) with any NaN or infinite output."""
    outputs = np.asarray(outputs)
    return ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)


def require_finite(outputs: np.ndarray, what: str) -> np.ndarray:
    """``outputs``, or NonFiniteOutputError when any is NaN or infinite (NaN compares false everywhere)."""
    bad = int(nonfinite_rows(outputs).sum())
    if bad:
        raise NonFiniteOutputError(f"{what}: {bad} of {len(outputs)} outputs are NaN or infinite; the model "
                                   "(or its export) is broken, e.g. invalid BatchNorm statistics or an overflow")
    return outputs


def require_metadata(path: Path, found: dict | None, supplied: dict | None) -> dict:
    """The model's own metadata, overridden by what the caller supplies; one of the two must exist."""
    if found is None and supplied is None:
        raise ModelContractError(
            f"{path} carries no s3f-edge metadata (class names and preprocessing contract), so its "
            "input pixels are unknown. Export it with s3f-edge export, or give its class names (--class-names on "
            "the command line, metadata= in Python)."
        )
    return {**(found or {}), **(supplied or {})}


class Predictor:
    """Loaded model + its metadata. Subclasses implement ``_outputs_by_name`` for one inference engine: it returns the
    model's outputs by name (``probs``, and ``ood_score`` for a calibrated model)."""

    backend = "?"

    def __init__(self, path: Path, metadata: dict):
        self.path = Path(path)
        self.metadata = metadata
        try:
            self.class_names: list[str] = list(metadata["class_names"])
            self.contract = Preprocessing.from_dict(metadata["preprocessing"])
        except (KeyError, TypeError, ValueError) as error:
            raise ModelContractError(f"{path}: unusable s3f-edge metadata ({error})") from error
        self.sha256 = file_sha256(self.path)
        self.provider = self.backend

    @property
    def name(self) -> str:
        return self.path.name

    outputs: tuple[str, ...] = (PROBS,)  # set by each backend from its model (``_set_outputs``)

    def _bind_outputs(self, tensors: list[str]) -> bool:
        """Name the model's output tensors (``output_names``: our name -> the tensor's) and record them.

        A single output is the probabilities whatever its name; a calibrated model's two are found by name.

        Returns:
            False, binding nothing, unless there is one output or exactly ``OUTPUTS``: each backend says why.
        """
        if not (len(tensors) == 1 or sorted(tensors) == sorted(OUTPUTS)):
            return False
        self.output_names = {PROBS: tensors[0]} if len(tensors) == 1 else {name: name for name in sorted(tensors)}
        self._set_outputs(self.output_names)
        return True

    def _set_outputs(self, outputs) -> None:
        """Record the model's outputs by name; a threshold in the metadata needs the ood_score output."""
        self.outputs = tuple(outputs)
        if self.calibration and OOD_SCORE not in self.outputs:
            raise ModelContractError(f"{self.path}: its metadata holds a refusal threshold, but the model has no "
                                     f"{OOD_SCORE} output; export it again from its .keras file with s3f-edge export")

    @property
    def calibration(self) -> dict | None:
        """The fitted calibration (temperature, out-of-distribution method and threshold, provenance), or None."""
        return self.metadata.get("calibration")

    @property
    def ood_threshold(self) -> float | None:
        """Scores above this are refused: images unlike the model's training images. None: the model cannot refuse."""
        calibration = self.calibration
        return float(calibration["ood"]["threshold"]) if calibration and "ood" in calibration else None

    @property
    def set_rule(self) -> tuple[str, float, float] | None:
        """(method, threshold, coverage) of the prediction sets this file was calibrated for, or None (a model
        calibrated before sets existed, or not at all)."""
        sets = (self.calibration or {}).get("sets")
        return (str(sets["method"]), float(sets["threshold"]), float(sets["coverage"])) if sets else None

    def refuses(self, ood_scores, count: int | None = None, threshold: float | None = None) -> np.ndarray:
        """Which images the model refuses: those whose out-of-distribution score is above the threshold.

        Works for every model: one that cannot refuse (no ``ood_score`` output, so ``predict_scored`` gave None, or
        no threshold in its metadata and none given) refuses nothing. A NaN or infinite score is refused: nothing
        vouches for that image.

        Args:
            ood_scores: the scores ``predict_scored`` returned (N,), or None for a model without a score.
            count: the number of images N; needed only when ``ood_scores`` is None (pass ``len(probabilities)``).
            threshold: refuse above this score instead of the model's own ``ood_threshold``.

        Returns:
            bool (N,): True for each image refused.

        Raises:
            InputError: ``ood_scores`` is None and no ``count`` was given, or ``count`` is not the scores' length.
        """
        if ood_scores is None:
            if count is None:
                raise InputError(f"{self.name} has no out-of-distribution score: give the number of images "
                                 "(refuses(ood_scores, len(probabilities)))")
            return np.zeros(int(count), bool)
        scores = np.asarray(ood_scores, np.float64).reshape(-1)
        if count is not None and count != len(scores):
            raise InputError(f"{len(scores)} out-of-distribution scores for {count} images")
        threshold = self.ood_threshold if threshold is None else float(threshold)
        if threshold is not None and not np.isfinite(threshold):  # NaN would refuse nothing, without a word
            raise InputError(f"the refusal threshold must be a finite number, not {threshold}")
        if threshold is None:
            return np.zeros(len(scores), bool)
        finite = np.isfinite(scores)  # checked first: NaN > threshold is False, which would accept the image
        return ~finite | (np.where(finite, scores, 0.0) > threshold)

    def check_batch(self, batch) -> np.ndarray:
        """Check a batch against the model's input contract.

        Args:
            batch: preprocessed images (N, H, W, C) of the model's size and channels, float (the values are not
                range-checked).

        Returns:
            The batch as a C-contiguous float32 array (copied only when needed).

        Raises:
            InputError: one image without a batch axis, another rank, size or channel count, or non-float pixels.
        """
        batch = np.asarray(batch)
        if batch.ndim == 3:
            raise InputError(f"expected a batch (N, H, W, C), got one image of shape {batch.shape}; add a batch axis")
        if batch.ndim != 4:
            raise InputError(f"expected a batch of shape (N, H, W, C), got {batch.shape}")
        if batch.shape[1:3] != (self.contract.height, self.contract.width):
            raise InputError(f"images must be {self.contract.height}x{self.contract.width} for this model, got "
                             f"{batch.shape[1]}x{batch.shape[2]}; preprocess with s3f_edge.data.load_image")
        if batch.shape[3] != self.contract.channels:
            raise InputError(f"this model takes {self.contract.channels} channel(s), the batch has {batch.shape[3]}")
        if not np.issubdtype(batch.dtype, np.floating):
            raise InputError(f"expected float pixels in [0, 1], got dtype {batch.dtype}; "
                             "preprocess with s3f_edge.data.load_image")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict(self, batch) -> np.ndarray:
        """Class probabilities (N, K); a single-sigmoid model gives [1 - p, p].

        Rows may be NaN if the model is broken: callers check with ``nonfinite_rows`` / ``require_finite``.

        Args:
            batch: preprocessed images (N, H, W, C), float in [0, 1]; N may be 0.

        Returns:
            float32 probabilities (N, K), K the number of classes.

        Raises:
            InputError: the batch does not fit the model (``check_batch``).
            BackendError: the TensorRT engine failed to run it (e.g. a batch over its profile's maximum).
        """
        return self.predict_scored(batch)[0]

    def predict_scored(self, batch) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (N, K) and out-of-distribution scores (N,), or None for a model without a score.

        Args:
            batch: preprocessed images (N, H, W, C), float in [0, 1]; N may be 0.

        Returns:
            (probabilities (N, K), scores (N,) or None), float32; either may hold NaN for a broken model (check with
            ``nonfinite_rows``).

        Raises:
            InputError: the batch does not fit the model (``check_batch``).
            BackendError: the TensorRT engine failed to run it (e.g. a batch over its profile's maximum).
        """
        batch = self.check_batch(batch)
        if len(batch) == 0:
            empty = np.zeros((0, len(self.class_names)), np.float32)
            return empty, (np.zeros(0, np.float32) if OOD_SCORE in self.outputs else None)
        outputs = self._outputs_by_name(batch)
        probabilities = class_probabilities(outputs[PROBS]).astype(np.float32)
        scores = outputs.get(OOD_SCORE)
        return probabilities, None if scores is None else np.asarray(scores, np.float32).reshape(len(batch))

    def predict_all(self, images, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """``predict`` over any number of images, ``batch_size`` at a time.

        Args and Raises: as ``predict_all_scored``.

        Returns:
            float32 probabilities (N, K).
        """
        return self.predict_all_scored(images, batch_size, progress)[0]

    def predict_all_scored(self, images, batch_size: int = 32,
                           progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``predict_scored`` over any number of images, ``batch_size`` at a time (a memory map is read batch by batch).

        Args:
            images: preprocessed images (N, H, W, C), float in [0, 1]: an array, a memory map or anything with
                ``len`` and slicing.
            batch_size: images per model call.
            progress: show a progress bar on stderr.

        Returns:
            (probabilities (N, K), scores (N,) or None for a model without a score), float32.

        Raises:
            InputError: the images are not (N, H, W, C) at the model's size and channel count.
            BackendError: the TensorRT engine failed to run a batch.
        """
        if len(images) == 0:
            return self.predict_scored(np.zeros((0, *self.contract.input_shape), np.float32))
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="predicting", unit="batch", leave=False, dynamic_ncols=True)
        parts = [self.predict_scored(np.asarray(images[i:i + batch_size], np.float32)) for i in starts]
        scores = None if parts[0][1] is None else np.concatenate([part[1] for part in parts])
        return np.concatenate([part[0] for part in parts]), scores

    def _outputs_by_name(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model's raw outputs by name: ``probs`` (N, K) or (N, 1), and ``ood_score`` (N,) when it has one."""
        raise NotImplementedError
