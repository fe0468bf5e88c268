"""The TensorRT and CUDA environment: guarded imports, the GPU's identity, versions, the shared logger and
plugins, and the sidecar that ties an engine to one GPU model and TensorRT version. Used by the runtime's
TensorRT backend, by the export's engine builder and by the format table's availability checks; it
imports nothing of theirs.

The ``tensorrt`` import is guarded: without it every entry point raises TensorRTUnavailable with the
install command.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from s3f_edge.errors import BackendError, EngineMismatch, ModelContractError, TensorRTUnavailable

INSTALL_HINT = (
    "TensorRT is not installed. On a machine with an NVIDIA GPU and driver, install the gpu extra "
    "in an environment without the CPU onnxruntime: pip install 's3f-edge[gpu]' (CUDA 12, TensorRT 10) or "
    "'s3f-edge[gpu-cu13]' (CUDA 13, TensorRT 11: ONNX DFT nodes)"
)




def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(INSTALL_HINT) from error
    if not hasattr(trt, "Builder"):  # PyPI's stub package that failed to fetch the real libraries
        raise TensorRTUnavailable(INSTALL_HINT + " (the installed 'tensorrt' package has no libraries)")
    return trt


_LOGGER = None


def trt_logger(trt):
    """The one TensorRT logger of this process. TensorRT's plugin library keeps a raw pointer to the logger
    it was registered with, so that logger must outlive every engine (polygraphy keeps one for the same reason)."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def register_plugins(trt) -> None:
    """Register TensorRT's plugins (the ONNX DFT op becomes a cuFFT plugin layer from TensorRT 11.2): needed
    before parsing, and before deserializing an engine that holds plugin layers in a fresh process."""
    if hasattr(trt, "init_libnvinfer_plugins") and not trt.init_libnvinfer_plugins(trt_logger(trt), ""):
        raise BackendError("TensorRT could not register its plugin library (libnvinfer_plugin)")


def import_cudart():
    """cuda-python's runtime bindings (``cuda.bindings``, cuda-python >= 12.6.1)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as error:
        raise TensorRTUnavailable("cuda-python (>= 12.6.1, of the CUDA major TensorRT was built for) is needed to run "
                                  "TensorRT engines: pip install 's3f-edge[gpu]' (CUDA 12) or "
                                  "'s3f-edge[gpu-cu13]' (CUDA 13)") from error
    return cudart


def cuda_check(result, call: str = "CUDA call"):
    """cuda-python returns (error, value...) tuples: raise on a non-zero error, return the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise BackendError(f"{call} failed: {error}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = (str(text).split(".") + ["0"])[:2]
    return int(major), int(minor)


def installed_version() -> tuple[int, int] | None:
    """(major, minor) of the installed TensorRT, or None when it is not installed."""
    try:
        return version_tuple(import_tensorrt().__version__)
    except TensorRTUnavailable:
        return None


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, from the CUDA runtime or, failing that, nvidia-smi."""
    try:
        cudart = import_cudart()
        properties = cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
        return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{properties.major}.{properties.minor}"}
    except (TensorRTUnavailable, BackendError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        name, capability = (part.strip() for part in out.split(","))
        return {"gpu_name": name, "compute_capability": capability}
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise TensorRTUnavailable(f"no NVIDIA GPU found ({error}); TensorRT engines are built on the GPU that "
                                  "runs them") from error


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def read_sidecar(engine_path: str | Path) -> dict:
    """The sidecar JSON s3f-edge writes beside every engine it builds (read without TensorRT)."""
    sidecar = sidecar_path(engine_path)
    if not sidecar.exists():
        raise EngineMismatch(f"{engine_path} has no sidecar {sidecar.name}, so s3f-edge did not build it; build "
                             "engines with s3f-edge export --trt")
    try:
        recorded = json.loads(sidecar.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise EngineMismatch(f"{sidecar} is not a valid sidecar ({error}); rebuild the engine with s3f-edge export "
                             "--trt") from None
    if not isinstance(recorded, dict):
        raise EngineMismatch(f"{sidecar} is not a valid sidecar; rebuild the engine with s3f-edge export --trt")
    return recorded


def engine_metadata(engine_path: str | Path, supplied: dict | None = None, recorded: dict | None = None) -> dict:
    """The s3f-edge metadata an engine's sidecar records (read without TensorRT), ``supplied`` keys overriding.

    Args:
        engine_path: the engine; its sidecar is read unless ``recorded`` already holds it.
        supplied: class names and preprocessing given by the user, for an engine whose sidecar has none.
        recorded: the sidecar, if already read.

    Raises:
        EngineMismatch: no valid sidecar.
        ModelContractError: the sidecar has no metadata and none was supplied.
    """
    found = (recorded if recorded is not None else read_sidecar(engine_path)).get("model_metadata")
    if found is None and supplied is None:
        raise ModelContractError(f"{engine_path}: the engine's sidecar has no model metadata; rebuild it with "
                                 "s3f-edge export --trt")
    return {**(found or {}), **(supplied or {})}


def check_engine_compatible(engine_path: str | Path, recorded: dict | None = None) -> dict:
    """Refuse an engine built for another GPU model or TensorRT version (they would fail or be slow); returns its
    sidecar (``recorded``, if already read)."""
    recorded = recorded if recorded is not None else read_sidecar(engine_path)
    trt = import_tensorrt()
    here = {**gpu_identity(), "tensorrt_version": trt.__version__}
    for key in ("gpu_name", "compute_capability", "tensorrt_version"):
        if recorded.get(key) != here[key]:
            raise EngineMismatch(
                f"{engine_path} was built for {key} {recorded.get(key)!r}, this machine has {here[key]!r}; "
                "rebuild the engine here with s3f-edge export --trt"
            )
    return recorded
