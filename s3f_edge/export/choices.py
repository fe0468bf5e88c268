"""What `s3f-edge export` can produce (plain constants: the CLI reads them without importing ONNX)."""
from __future__ import annotations

FFT_LOWERINGS = ("matmul", "dft")  # DFT as matrix products (every runtime) or ONNX DFT nodes (TensorRT >= 11.2)
PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # INT8 activation ranges (ONNX Runtime calibrators)
INT8_WEIGHT_BITS = (8, 7)  # 7: exact on x86 CPUs without VNNI too (see export/precision.py:to_int8)
MAX_TF2ONNX_OPSET = 18  # tf2onnx 1.17 writes up to opset 18


def onnx_file_name(precision: str) -> str:
    """model.onnx for FP32, model.<precision>.onnx otherwise."""
    return "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"


def engine_file_name(precision: str) -> str:
    return f"model.{precision}.engine"
