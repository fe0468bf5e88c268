"""TensorRT backend: runs engines built by ``s3f-edge export --trt`` (TensorRT 10/11 tensor-address API, CUDA
through cuda-python). Engines are tied to one GPU model and TensorRT version; loading refuses an engine built
for something else (``tensorrt_env.check_engine_compatible``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from s3f_edge.errors import (
    BackendError,
    EngineMismatch,  # noqa: F401 (re-exported: callers import it from here)
    TensorRTUnavailable,
)
from s3f_edge.runtime.predictor import Predictor
from s3f_edge.runtime.tensorrt_env import (
    check_engine_compatible,
    cuda_check,
    engine_metadata,
    import_cudart,
    import_tensorrt,
    read_sidecar,
    register_plugins,
    trt_logger,
)


class TensorRTPredictor(Predictor):
    backend = "tensorrt"

    def __init__(self, path: Path, metadata: dict | None = None):
        sidecar = read_sidecar(path)  # not an engine of ours: say so before asking for TensorRT
        try:
            trt = import_tensorrt()
            self._cudart = cudart = import_cudart()
        except TensorRTUnavailable as error:
            raise TensorRTUnavailable(f"running {Path(path).name} needs TensorRT and a GPU: {error}") from None
        check_engine_compatible(path, sidecar)
        super().__init__(path, engine_metadata(path, metadata, sidecar))
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        register_plugins(trt)
        self.runtime = trt.Runtime(trt_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not self._bind_outputs(outputs):
            raise BackendError(f"{path}: expected one input and the outputs probs (and ood_score), found {inputs} and "
                               f"{outputs}; rebuild the engine with s3f-edge export --trt")
        self.input_name = inputs[0]
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

    def _outputs_by_name(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if len(batch) > self.max_batch:
            parts = [self._outputs_by_name(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
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
