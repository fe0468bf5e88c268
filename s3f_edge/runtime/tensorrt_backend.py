"""TensorRT backend: runs engines built by ``s3f-edge export --trt`` (TensorRT 10/11 tensor-address API,
CUDA through cuda-python), and the environment checks the builder shares.

The ``tensorrt`` import is guarded: without it every entry point raises TensorRTUnavailable with the
install command. Engines are tied to one GPU model and TensorRT version; a sidecar JSON records both,
and loading refuses an engine built for something else.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from s3f_edge.errors import BackendError, S3FEdgeError
from s3f_edge.contract import OOD_SCORE, PROBS
from s3f_edge.runtime.predictor import ModelContractError, Predictor

INSTALL_HINT = (
    "TensorRT is not installed. On a machine with an NVIDIA GPU and driver, install the gpu extra "
    "in an environment without the CPU onnxruntime: pip install 's3f-edge[gpu]' (CUDA 12, TensorRT 10) or "
    "'s3f-edge[gpu-cu13]' (CUDA 13, TensorRT 11: ONNX DFT nodes)"
)


class TensorRTUnavailable(S3FEdgeError, RuntimeError):
    """TensorRT, cuda-python or an NVIDIA GPU is missing here."""


class EngineMismatch(S3FEdgeError, RuntimeError):
    """The engine was built for another GPU model or TensorRT version (or has no sidecar)."""


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


def check_engine_compatible(engine_path: str | Path) -> dict:
    """Refuse an engine built for another GPU model or TensorRT version (they would fail or be slow)."""
    recorded = read_sidecar(engine_path)
    trt = import_tensorrt()
    here = {**gpu_identity(), "tensorrt_version": trt.__version__}
    for key in ("gpu_name", "compute_capability", "tensorrt_version"):
        if recorded.get(key) != here[key]:
            raise EngineMismatch(
                f"{engine_path} was built for {key} {recorded.get(key)!r}, this machine has {here[key]!r}; "
                "rebuild the engine here with s3f-edge export --trt"
            )
    return recorded


class TensorRTPredictor(Predictor):
    backend = "tensorrt"

    def __init__(self, path: Path, metadata: dict | None = None):
        read_sidecar(path)  # not an engine of ours: say so before asking for TensorRT
        try:
            trt = import_tensorrt()
            self._cudart = cudart = import_cudart()
        except TensorRTUnavailable as error:
            raise TensorRTUnavailable(f"running {Path(path).name} needs TensorRT and a GPU: {error}") from None
        sidecar = check_engine_compatible(path)
        found = sidecar.get("model_metadata")
        if found is None and metadata is None:
            raise ModelContractError(f"{path}: the engine's sidecar has no model metadata; rebuild it with "
                                     "s3f-edge export --trt")
        super().__init__(path, {**(found or {}), **(metadata or {})})
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        register_plugins(trt)
        self.runtime = trt.Runtime(trt_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not (len(outputs) == 1 or sorted(outputs) == sorted((PROBS, OOD_SCORE))):
            raise BackendError(f"{path}: expected one input and the outputs probs (and ood_score), found {inputs} and "
                               f"{outputs}; rebuild the engine with s3f-edge export --trt")
        self.input_name = inputs[0]
        # A single output is the probabilities whatever its name; a calibrated model's are found by name.
        self.output_names = {PROBS: outputs[0]} if len(outputs) == 1 else {name: name for name in outputs}
        self._set_outputs(self.output_names)
        # Take the I/O types from the engine: an engine may take or give FP16 even when the ONNX file was FP32.
        try:
            self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
            self.output_dtypes = {tensor: np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor)))
                                  for tensor in self.output_names.values()}
        except TypeError as error:  # BF16, FP8, INT4 I/O: no numpy type
            raise BackendError(f"{path}: the engine's input/output type has no numpy equivalent ({error})") from error
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"TensorRT could not create an execution context for {path} (GPU memory?)")
        self.stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.max_batch = int(sidecar["batch_profile"][2])
        self.provider = f"tensorrt-{sidecar['precision']}"

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_check(self._cudart.cudaFree(pointer), "cudaFree")
            pointer = int(cuda_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if len(batch) > self.max_batch:
            parts = [self._run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        cudart = self._cudart
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if not self.context.set_input_shape(self.input_name, batch.shape):
            raise BackendError(f"TensorRT refused input shape {batch.shape} (profile max batch {self.max_batch})")
        host = {}
        for tensor in self.output_names.values():
            shape = tuple(self.context.get_tensor_shape(tensor))
            if any(d < 0 for d in shape):
                raise BackendError(f"TensorRT could not infer the shape of {tensor!r} for input {batch.shape}")
            host[tensor] = np.empty(shape, self.output_dtypes[tensor])
        input_ptr = self._device(self.input_name, batch.nbytes)
        pointers = {self.input_name: input_ptr, **{t: self._device(t, array.nbytes) for t, array in host.items()}}
        for name, pointer in pointers.items():
            if not self.context.set_tensor_address(name, pointer):
                raise BackendError(f"TensorRT refused the device address of tensor {name!r}")
        kind = cudart.cudaMemcpyKind
        cuda_check(cudart.cudaMemcpyAsync(input_ptr, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice,
                                          self.stream), "cudaMemcpyAsync (to GPU)")
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execution failed (see TensorRT's messages above)")
        for tensor, array in host.items():
            cuda_check(cudart.cudaMemcpyAsync(array.ctypes.data, pointers[tensor], array.nbytes,
                                              kind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync (from GPU)")
        cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {key: host[tensor].astype(np.float32) for key, tensor in self.output_names.items()}

    def __del__(self):
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for pointer, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(pointer)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
