"""Serialized TensorRT engines from exported ONNX files (TensorRT 10/11 Python API).

The ``tensorrt`` import is guarded: without it every entry point raises TensorRTUnavailable
with the install command. Engines are tied to one GPU model and TensorRT version; a sidecar JSON
records both, and loading refuses an engine built for something else.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL_HINT = (
    "TensorRT is not installed. On a machine with an NVIDIA GPU and driver, install the gpu extra "
    "in an environment without the CPU onnxruntime: pip install 's3f-edge[gpu]'"
)


class TensorRTUnavailable(RuntimeError):
    pass


class EngineMismatch(RuntimeError):
    pass


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(INSTALL_HINT) from error
    if not hasattr(trt, "Builder"):  # PyPI's stub package that failed to fetch the real libraries
        raise TensorRTUnavailable(INSTALL_HINT + " (the installed 'tensorrt' package has no libraries)")
    return trt


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int(minor)


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, from the CUDA runtime or, failing that, nvidia-smi."""
    try:
        from cuda.bindings import runtime as cudart

        error, properties = cudart.cudaGetDeviceProperties(0)
        if int(error) == 0:
            name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
            return {"gpu_name": name.strip("\x00 "), "compute_capability": f"{properties.major}.{properties.minor}"}
    except ImportError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        name, capability = (part.strip() for part in out.split(","))
        return {"gpu_name": name, "compute_capability": capability}
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise TensorRTUnavailable(f"no NVIDIA GPU found ({error}); TensorRT engines are built on the GPU that runs them") from error


@dataclass
class EngineOptions:
    precision: str = "fp32"  # fp32 | fp16 | int8
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    calibration_images: np.ndarray | None = None  # for int8
    spectral_layer_names: tuple[str, ...] = ()


class _EntropyCalibrator:
    """INT8 entropy calibration over preprocessed images (implicit quantization, TensorRT 10)."""

    def __new__(cls, trt, images: np.ndarray, batch_size: int, cache_path: Path):
        from cuda.bindings import runtime as cudart

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.images, self.batch_size, self.cache_path, self.index = images, batch_size, cache_path, 0
                self.nbytes = int(np.prod(images.shape[1:])) * batch_size * 4
                error, self.device = cudart.cudaMalloc(self.nbytes)
                if int(error) != 0:
                    raise RuntimeError(f"cudaMalloc failed: {error}")

            def get_batch_size(self):
                return self.batch_size

            def get_batch(self, names):
                if self.index + self.batch_size > len(self.images):
                    return None
                batch = np.ascontiguousarray(self.images[self.index:self.index + self.batch_size], np.float32)
                self.index += self.batch_size
                cudart.cudaMemcpy(self.device, batch.ctypes.data, batch.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
                return [int(self.device)]

            def read_calibration_cache(self):
                return self.cache_path.read_bytes() if self.cache_path.exists() else None

            def write_calibration_cache(self, cache):
                self.cache_path.write_bytes(bytes(cache))

        return Calibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, input_shape: tuple[int, int, int],
                 options: EngineOptions, model_metadata: dict | None = None) -> dict:
    """Parse ``onnx_path``, build and serialize an engine to ``engine_path``; write its sidecar JSON.

    FP16 pins every layer of the spectral block to FP32 through layer precision constraints
    (or, on TensorRT versions without weak typing, expects an FP16 ONNX whose spectral block is
    already FP32 and builds it strongly typed). INT8 uses an entropy calibrator where TensorRT
    still has implicit quantization, and the explicitly quantized (QDQ) ONNX otherwise.
    """
    trt = import_tensorrt()
    from s3f_edge.model.metadata import file_sha256

    identity = gpu_identity()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")
    flags = 0
    if not weakly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse the ONNX model:\n  " + "\n  ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (options.min_batch, *input_shape), (options.opt_batch, *input_shape),
                      (options.max_batch, *input_shape))
    config.add_optimization_profile(profile)

    cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    if options.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 matmuls would break the fp32 parity tolerance (1e-4)
    if options.precision in ("fp16", "int8") and weakly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if any(name in layer.name for name in options.spectral_layer_names):
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
    if options.precision == "int8" and weakly_typed and hasattr(trt, "IInt8EntropyCalibrator2"):
        if options.calibration_images is None or len(options.calibration_images) == 0:
            raise ValueError("INT8 engines need calibration images (--calib IMAGES)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _EntropyCalibrator(
            trt, options.calibration_images, min(8, len(options.calibration_images)),
            Path(str(engine_path) + ".calib.cache"),
        )

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the messages above)")
    Path(engine_path).write_bytes(bytes(serialized))
    if options.timing_cache:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    sidecar = {
        **identity, "tensorrt_version": trt.__version__, "onnx_sha256": file_sha256(onnx_path),
        "precision": options.precision, "batch_profile": [options.min_batch, options.opt_batch, options.max_batch],
        "input_shape": list(input_shape), "model_metadata": model_metadata or {},
    }
    Path(str(engine_path) + ".json").write_text(json.dumps(sidecar, indent=2))
    return sidecar


def check_engine_compatible(engine_path: str | Path) -> dict:
    """Refuse an engine built for another GPU model or TensorRT version (they would fail or be slow)."""
    trt = import_tensorrt()
    sidecar_path = Path(str(engine_path) + ".json")
    if not sidecar_path.exists():
        raise EngineMismatch(f"{engine_path} has no sidecar {sidecar_path.name}; rebuild it with s3f-edge export --trt")
    sidecar = json.loads(sidecar_path.read_text())
    here = {**gpu_identity(), "tensorrt_version": trt.__version__}
    for key in ("gpu_name", "compute_capability", "tensorrt_version"):
        if sidecar.get(key) != here[key]:
            raise EngineMismatch(
                f"{engine_path} was built for {key} {sidecar.get(key)!r}, this machine has {here[key]!r}; "
                "rebuild the engine here with s3f-edge export --trt"
            )
    return sidecar
