"""Reduced-precision ONNX: FP16 with the spectral block kept in FP32, and static INT8 for CPUs."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx

from s3f_edge.data.preprocess import Preprocessing


def spectral_node_names(model: onnx.ModelProto, layer_names: list[str]) -> list[str]:
    """Nodes that belong to a SpectralFilter layer (tf2onnx keeps the Keras layer name in node names,
    as ``.../<layer>/...`` or ``.../<layer>_<n>/...``)."""
    patterns = [re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/") for layer in layer_names]
    return [n.name for n in model.graph.node if any(p.search(n.name) for p in patterns)]


def to_float16(model: onnx.ModelProto, keep_fp32_nodes: list[str]) -> onnx.ModelProto:
    """FP16 weights and activations, FP32 inputs/outputs and spectral block.

    An unnormalised forward DFT of a bright image exceeds FP16's range (65504), and the
    full-size complex kernels lose their small coefficients, so the spectral block stays FP32.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "number truncated to 1e-07" for tiny weights
        return float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=keep_fp32_nodes, disable_shape_infer=False
        )


class _ImageCalibrationReader:
    """Feeds preprocessed calibration images to onnxruntime.quantization, a batch at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 8):
        self._batches = iter([{input_name: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self._batches, None)


def to_int8(model_path: Path, out_path: Path, calibration_images: np.ndarray, exclude_nodes: list[str]) -> None:
    """Static INT8 (QDQ, per-channel weights) calibrated on real images; the spectral block stays FP32."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    try:
        quant_pre_process(str(model_path), str(prepared), skip_optimization=False)
        source = prepared
    except Exception:  # pre-processing is an optimisation; quantise the original graph without it
        source = model_path
    try:
        quantize_static(
            str(source), str(out_path), _ImageCalibrationReader(calibration_images, "image"),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=True, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude_nodes,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        )
    finally:
        prepared.unlink(missing_ok=True)
    quantized = onnx.load(out_path)
    restore_float_inputs(quantized, set(exclude_nodes))
    onnx.save(quantized, out_path)


def restore_float_inputs(model: onnx.ModelProto, float_nodes: set[str]) -> int:
    """Feed excluded nodes the original float tensor where QDQ put a Quantize/Dequantize pair in between.

    A tensor read by both a quantized node and an excluded one (the image feeds the first Conv and
    the SpectralFilter) is quantized once for all its readers; the excluded ones must not see that.
    Returns the number of inputs rewired.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.name not in float_nodes:
            continue
        for index, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[index] = quantize.input[0]
                rewired += 1
    return rewired


def calibration_images(folder: str | Path, contract: Preprocessing, limit: int = 256) -> np.ndarray:
    from s3f_edge.runtime.parity import real_batch

    return real_batch(contract, folder, limit)
