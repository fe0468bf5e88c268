"""Predictor: one interface over Keras, ONNX Runtime and TensorRT, chosen from the model file."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from s3f_edge.data.preprocess import Preprocessing

ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def default_model() -> Path:
    """The bundled model (ONNX) that `infer` uses when no --model is given."""
    path = DEFAULT_MODEL_DIR / "model.onnx"
    if not path.is_file():
        raise FileNotFoundError("this s3f-edge has no bundled default model; pass --model MODEL "
                                "(a .keras, .onnx or .engine file exported by s3f-edge)")
    return path


class ModelContractError(ValueError):
    """The model lacks, or carries an unusable, description of its classes and input pixels."""


class Predictor:
    """Loaded model + its metadata. ``predict(batch)`` takes preprocessed (N, H, W, C) float32 in [0, 1]."""

    backend = "?"

    def __init__(self, path: Path, metadata: dict):
        from s3f_edge.model.metadata import file_sha256

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

    @staticmethod
    def load(path: str | Path, providers: list[str] | None = None, metadata: dict | None = None) -> "Predictor":
        """Pick the backend from the suffix: .keras (TensorFlow), .onnx (ONNX Runtime), .engine/.plan (TensorRT).

        ``metadata`` (class_names and preprocessing) is required only for files that carry none.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}")
        suffix = path.suffix.lower()
        if suffix == ".keras":
            return KerasPredictor(path, metadata)
        if suffix == ".onnx":
            return OnnxPredictor(path, metadata, providers)
        if suffix in (".engine", ".plan"):
            from s3f_edge.runtime.tensorrt_runner import TensorRTPredictor

            return TensorRTPredictor(path, metadata)
        raise ValueError(f"{path}: unknown model type {suffix!r}; use a .keras, .onnx, .engine or .plan file")

    def check_batch(self, batch) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            raise ValueError(f"expected a batch (N, H, W, C), got one image of shape {batch.shape}; add a batch axis")
        if batch.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, H, W, C), got {batch.shape}")
        if batch.shape[1:3] != (self.contract.height, self.contract.width):
            raise ValueError(f"images must be {self.contract.height}x{self.contract.width} for this model, got "
                             f"{batch.shape[1]}x{batch.shape[2]}; preprocess with s3f_edge.data.load_image")
        if batch.shape[3] != self.contract.channels:
            raise ValueError(f"this model takes {self.contract.channels} channel(s), the batch has {batch.shape[3]}")
        if not np.issubdtype(batch.dtype, np.floating):
            raise ValueError(f"expected float pixels in [0, 1], got dtype {batch.dtype}; "
                             "preprocess with s3f_edge.data.load_image")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict(self, batch) -> np.ndarray:
        """Class probabilities (N, K); a single-sigmoid model gives [1 - p, p]."""
        from s3f_edge.train.metrics import class_probabilities

        batch = self.check_batch(batch)
        if len(batch) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return class_probabilities(self._run(batch)).astype(np.float32)

    def predict_all(self, images, batch_size: int = 32) -> np.ndarray:
        """``predict`` over any number of images, ``batch_size`` at a time (a memory map is read batch by batch)."""
        if len(images) == 0:
            return self.predict(np.zeros((0, *self.contract.input_shape), np.float32))
        return np.concatenate([self.predict(np.asarray(images[i:i + batch_size], np.float32))
                               for i in range(0, len(images), batch_size)])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _require_metadata(path: Path, found: dict | None, supplied: dict | None) -> dict:
    if found is None and supplied is None:
        raise ModelContractError(
            f"{path} carries no s3f-edge metadata (class names and preprocessing contract), so its "
            "input pixels are unknown. Export it with s3f-edge export, or pass metadata= / --classes."
        )
    return {**(found or {}), **(supplied or {})}


class KerasPredictor(Predictor):
    backend = "keras"

    def __init__(self, path: Path, metadata: dict | None = None):
        from s3f_edge.model import load_model
        from s3f_edge.model.metadata import read_metadata

        found = read_metadata(path)
        if found is None and metadata is not None and "preprocessing" not in metadata:
            self.model = load_model(path)
            h, w, c = self.model.input_shape[1:]
            metadata = {**metadata, "preprocessing": Preprocessing(height=h, width=w, channels=c).to_dict()}
        super().__init__(path, _require_metadata(path, found, metadata))
        self.model = getattr(self, "model", None) or load_model(path)
        self.provider = "tensorflow-" + ("gpu" if _tensorflow_sees_gpu() else "cpu")

    def _run(self, batch):
        return self.model.predict_on_batch(batch)


def _tensorflow_sees_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def choose_providers(requested: list[str] | None = None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"ONNX Runtime providers {missing} are not available here; available: {available}")
        return list(requested)
    return [p for p in ORT_PROVIDER_ORDER if p in available]


class OnnxPredictor(Predictor):
    backend = "onnx"

    def __init__(self, path: Path, metadata: dict | None = None, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError("ONNX Runtime is not installed: pip install 's3f-edge[cpu]' (or [gpu])") from error
        chosen = choose_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as error:  # onnxruntime raises its own types for corrupt or foreign files
            raise ValueError(f"{path}: ONNX Runtime cannot load this file ({str(error).strip()[:200]})") from error
        # The session already parsed the file: read s3f-edge's metadata from it rather than load it twice.
        stored = self.session.get_modelmeta().custom_metadata_map.get("s3f_edge")
        super().__init__(path, _require_metadata(path, json.loads(stored) if stored else None, metadata))
        self.provider = self.session.get_providers()[0]
        if chosen[0] != "CPUExecutionProvider" and self.provider == "CPUExecutionProvider":
            warnings.warn(f"ONNX Runtime fell back to the CPU (asked for {chosen[0]}): CUDA libraries are probably "
                          "missing. Inference will be slow.", RuntimeWarning, stacklevel=2)
        (self.input_name,), (self.output_name,) = ([i.name for i in self.session.get_inputs()],
                                                   [o.name for o in self.session.get_outputs()])

    def _run(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch})[0]
