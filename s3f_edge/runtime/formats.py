"""The model formats and inference backends s3f-edge runs: one table that the CLI's choices, the
loader (``load_predictor``) and the benchmark all read.

A backend's code is imported only when a file of its format is loaded, so a deployment machine with
ONNX Runtime alone never imports TensorFlow, Keras or TensorRT.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from s3f_edge.errors import InputError, MissingFileError, TensorRTUnavailable


@dataclass(frozen=True)
class ModelFormat:
    name: str
    suffixes: tuple[str, ...]
    predictor: str  # "module:Class", imported on first use
    install: str  # what a machine needs to run this format


@dataclass(frozen=True)
class Backend:
    name: str
    format: str
    description: str
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, in order of preference


FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("keras", (".keras",), "s3f_edge.runtime.keras_backend:KerasPredictor",
                "the training stack: pip install 's3f-edge[train,cpu]'"),
    ModelFormat("onnx", (".onnx",), "s3f_edge.runtime.onnx_backend:OnnxPredictor",
                "ONNX Runtime: pip install 's3f-edge[cpu]' (or [gpu])"),
    ModelFormat("tensorrt", (".engine", ".plan"), "s3f_edge.runtime.tensorrt_backend:TensorRTPredictor",
                "TensorRT and an NVIDIA GPU: pip install 's3f-edge[gpu]'"),
)}

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("keras", "keras", "TensorFlow/Keras (the training framework)"),
    Backend("onnx-cpu", "onnx", "ONNX Runtime on the CPU", ("CPUExecutionProvider",)),
    Backend("onnx-cuda", "onnx", "ONNX Runtime with CUDA", ("CUDAExecutionProvider", "CPUExecutionProvider")),
    Backend("onnx-trt", "onnx", "ONNX Runtime with its TensorRT execution provider (engine cached on disk)",
            ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")),
    Backend("trt", "tensorrt", "a TensorRT engine built by s3f-edge export --trt"),
)}

MODEL_SUFFIXES = tuple(suffix for f in FORMATS.values() for suffix in f.suffixes)
RESULT_FORMATS = (".csv", ".jsonl", ".json")  # what `infer` writes, chosen by the output's suffix


def model_format(path: str | Path) -> ModelFormat:
    suffix = Path(path).suffix.lower()
    for candidate in FORMATS.values():
        if suffix in candidate.suffixes:
            return candidate
    raise InputError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; use one of {', '.join(MODEL_SUFFIXES)}")


def backends_for(path: str | Path) -> tuple[str, ...]:
    """Every backend that can run this file, in table order.

    Args:
        path: a model file; only its suffix is read.

    Returns:
        Names of ``BACKENDS`` (e.g. onnx-cpu, onnx-cuda and onnx-trt for an .onnx file), available here or not
        (``unavailable_reason`` tells).

    Raises:
        InputError: an unknown model suffix.
    """
    name = model_format(path).name
    return tuple(b.name for b in BACKENDS.values() if b.format == name)


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine, or None (nothing heavy is imported to find out,
    except the engine itself when its package is installed)."""
    from s3f_edge.dependencies import missing, onnxruntime_conflict

    spec = BACKENDS[backend]
    if spec.format == "keras":
        absent = missing("tensorflow", "keras")
        return f"{', '.join(absent)} not installed ({FORMATS['keras'].install})" if absent else None
    if spec.format == "onnx":
        if missing("onnxruntime"):
            return f"ONNX Runtime is not installed ({FORMATS['onnx'].install})"
        conflict = onnxruntime_conflict()
        if conflict:
            return conflict
        import onnxruntime as ort

        absent = [p for p in spec.providers if p != "CPUExecutionProvider" and p not in ort.get_available_providers()]
        if absent:
            return f"ONNX Runtime here has no {', '.join(absent)} (needs onnxruntime-gpu and an NVIDIA GPU)"
        return None
    from s3f_edge.runtime.tensorrt_env import gpu_identity, import_cudart, import_tensorrt

    try:
        import_tensorrt()
        import_cudart()  # engines run through cuda-python; without it gpu_identity would still find the GPU
        gpu_identity()
    except TensorRTUnavailable as error:
        return str(error)
    return None


def check_model_file(path: str | Path) -> None:
    """Raise an S3FEdgeError unless ``path`` looks like a model of its format, without loading it on any backend.

    A file that is no model is one error, while a backend that fails to run a real model is that backend's problem.

    Args:
        path: a .keras, .onnx or TensorRT engine (.engine, .plan) file.

    Raises:
        MissingFileError: no file at ``path``.
        InputError: an unknown suffix, or not a model of the format its suffix names.
        EngineMismatch: a TensorRT engine without a valid s3f-edge sidecar.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no model file at {path}; check the path")
    found = model_format(path)
    if found.name == "keras":
        from s3f_edge.runtime.keras_backend import check_keras_file

        check_keras_file(path)
    elif found.name == "onnx":
        with open(path, "rb") as handle:
            first = handle.read(1)
        if first != b"\x08":  # an ONNX ModelProto opens with field 1, its IR version (a varint: tag byte 0x08)
            raise InputError(f"{path} is not an ONNX model (it does not begin as one); give an .onnx model written by "
                             "s3f-edge export")
    else:
        from s3f_edge.runtime.tensorrt_env import read_sidecar

        read_sidecar(path)


def predictor_class(model_format_name: str):
    module, _, name = FORMATS[model_format_name].predictor.partition(":")
    return getattr(importlib.import_module(module), name)


def load_predictor(path: str | Path, backend: str | None = None, providers: list[str] | None = None,
                   metadata: dict | None = None):
    """Load ``path`` with ``backend`` (default: its format's predictor; for ONNX, the best providers here).

    Args:
        path: a .keras, .onnx or TensorRT engine (.engine, .plan) file; its suffix picks the format.
        backend: a name of ``BACKENDS`` that runs this format (``backends_for``); None: the format's default.
        providers: ONNX Runtime execution providers in order of preference (ONNX files only); None: the backend's,
            or without a backend the best available here.
        metadata: s3f-edge metadata (``class_names``, ``preprocessing``) overriding the file's own key by key; needed
            for a file that carries none.

    Returns:
        The loaded ``Predictor`` (Keras, ONNX Runtime or TensorRT).

    Raises:
        MissingFileError: no file at ``path``.
        InputError: an unknown suffix or backend, a backend of another format, unavailable providers, or a file
            the backend cannot load.
        ModelContractError: no usable class names and preprocessing contract, from the file or ``metadata``.
        MissingDependencyError: the format's runtime (TensorFlow, ONNX Runtime) is not installed.
        TensorRTUnavailable: an engine, but no TensorRT, cuda-python or NVIDIA GPU here.
        EngineMismatch: an engine without a valid sidecar, or built for another GPU or TensorRT version.
        BackendError: TensorRT cannot load the engine.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no model file at {path}")
    found = model_format(path)
    if backend is not None:
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if BACKENDS[backend].format != found.name:
            raise InputError(f"{path.name} is a {found.name} file; backend {backend} runs "
                             f"{BACKENDS[backend].format} files")
        if found.name == "onnx" and providers is None:
            providers = list(BACKENDS[backend].providers)
    cls = predictor_class(found.name)
    if found.name == "onnx":
        return cls(path, metadata, providers)
    return cls(path, metadata)
