"""TensorRT engine execution (TensorRT 10/11 tensor-address API, CUDA through cuda-python)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from s3f_edge.runtime.predictor import ModelContractError, Predictor


def _check(result):
    error = result[0] if isinstance(result, tuple) else result
    if int(error) != 0:
        raise RuntimeError(f"CUDA call failed: {error}")
    return result[1] if isinstance(result, tuple) and len(result) == 2 else result


class TensorRTPredictor(Predictor):
    backend = "tensorrt"

    def __init__(self, path: Path, metadata: dict | None = None):
        from s3f_edge.export.tensorrt import check_engine_compatible, import_tensorrt

        trt = import_tensorrt()
        from cuda.bindings import runtime as cudart

        sidecar = check_engine_compatible(path)  # refuses engines built for another GPU or TensorRT
        found = sidecar.get("model_metadata")
        if found is None and metadata is None:
            raise ModelContractError(f"{path}: the engine's sidecar has no model metadata; rebuild it with s3f-edge export --trt")
        super().__init__(path, {**(found or {}), **(metadata or {})})
        self._cudart = cudart
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.max_batch = int(sidecar["batch_profile"][2])
        self.provider = f"tensorrt-{sidecar['precision']}"
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self._cudart.cudaFree(pointer))
            pointer = int(_check(self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > self.max_batch:
            return np.concatenate([self._run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])
        cudart = self._cudart
        self.context.set_input_shape("image", batch.shape)
        out_shape = tuple(self.context.get_tensor_shape("probs"))
        output = np.empty(out_shape, np.float32)
        input_ptr = self._device("image", batch.nbytes)
        output_ptr = self._device("probs", output.nbytes)
        self.context.set_tensor_address("image", input_ptr)
        self.context.set_tensor_address("probs", output_ptr)
        kind = cudart.cudaMemcpyKind
        _check(cudart.cudaMemcpyAsync(input_ptr, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(output.ctypes.data, output_ptr, output.nbytes, kind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return output

    def __del__(self):
        for pointer, _ in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(pointer)


def engine_metadata(engine_path: Path) -> dict:
    return json.loads(Path(str(engine_path) + ".json").read_text()).get("model_metadata", {})
