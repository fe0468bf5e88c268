"""Reduced-precision ONNX: FP16 with the spectral block kept in FP32, and static INT8 for CPUs."""
from __future__ import annotations

import io
import logging
import re
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import onnx

from s3f_edge.data.preprocess import Preprocessing
from s3f_edge.errors import InputError
from s3f_edge.export.choices import CALIBRATION_METHODS, INT8_WEIGHT_BITS


def fp16_float_nodes(model: onnx.ModelProto, keras_model) -> list[str]:
    """ONNX nodes an FP16 export keeps in float: every SpectralFilter's (full-size FFT sums overflow FP16) and, for
    a calibrated model, the out-of-distribution score's (its squared distances overflow FP16 too)."""
    from s3f_edge.model import spectral_filters
    from s3f_edge.model.calibration import SCORE, is_calibrated

    named = [layer.name for layer in spectral_filters(keras_model)] + ([SCORE] if is_calibrated(keras_model) else [])
    return layer_node_names(model, named)


def int8_float_nodes(model: onnx.ModelProto, keras_model) -> list[str]:
    """ONNX nodes an INT8 export keeps in float, chosen by measurement (benchmarks/int8_variants.py): every
    SpectralFilter's (full-size FFT sums need float's range), the first convolution's (it reads the raw image)
    and the classifier head's. The first convolution's nodes are found by following the graph from it to the
    next convolution or pooling, because tf2onnx renames a convolution it fuses with a BatchNorm."""
    import keras

    from s3f_edge.model import spectral_filters
    from s3f_edge.model.calibration import head_layer_names

    named = [layer.name for layer in spectral_filters(keras_model)] + head_layer_names(keras_model)
    first_conv = next((layer.name for layer in keras_model.layers if isinstance(layer, keras.layers.Conv2D)
                       and layer.name.startswith("spatial_block1_")), None)
    first_conv = first_conv or next((layer.name for layer in keras_model.layers
                                     if isinstance(layer, keras.layers.Conv2D)), None)
    kept = set(layer_node_names(model, named))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    start = [n for n in model.graph.node if first_conv and n.name in layer_node_names(model, [first_conv])]
    frontier = list(start)
    while frontier:
        node = frontier.pop()
        stop = node.op_type in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool") and node not in start
        if node.name in kept or stop:
            continue
        kept.add(node.name)
        frontier += [c for output in node.output for c in consumers.get(output, [])]
    return [node.name for node in model.graph.node if node.name in kept]


def layer_node_names(model: onnx.ModelProto, layer_names: list[str]) -> list[str]:
    """Nodes that belong to the named Keras layers (tf2onnx keeps the Keras layer name in node names, as
    ``.../<layer>/...`` or ``.../<layer>_<n>/...``): the SpectralFilters, the head and the score that reduced
    precision keeps in float."""
    patterns = [re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/") for layer in layer_names]
    return [n.name for n in model.graph.node if any(p.search(n.name) for p in patterns)]


def to_float16(model: onnx.ModelProto, keep_fp32_nodes: list[str]) -> onnx.ModelProto:
    """FP16 weights and activations, FP32 inputs/outputs and spectral block.

    An unnormalised forward DFT of a bright image exceeds FP16's range (65504), and the
    full-size complex kernels lose their small coefficients, so the spectral block stays FP32.

    Args:
        model: the FP32 ONNX model (left unchanged).
        keep_fp32_nodes: names of the nodes kept in FP32 (the spectral block, and the score of a calibrated model).

    Returns:
        A new ONNX model with FP16 weights and compute, FP32 input and outputs (in the contract's order), and the
        kept nodes in FP32.
    """
    from onnxconverter_common import float16

    from s3f_edge.export.graph_outputs import order_outputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "number truncated to 1e-07" for tiny weights
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=keep_fp32_nodes, disable_shape_infer=False
        )
    return order_outputs(converted)  # the converter rewrites the graph's outputs (Casts for keep_io_types)


def equal_batch_size(count: int, largest: int = 8) -> int:
    """The largest batch size up to ``largest`` that divides ``count`` (1 for a prime count above it).

    ONNX Runtime's histogram calibrators (percentile, entropy) stack every batch's activations into one array, so
    a short last batch makes it ragged ("inhomogeneous shape"); batches of one size take any number of images.

    Args:
        count: the number of calibration images (at least 1).
        largest: the batch size wanted when ``count`` allows it.

    Returns:
        A batch size from 1 to ``largest`` that divides ``count``.
    """
    return next(size for size in range(max(1, min(largest, count)), 0, -1) if count % size == 0)


class _ImageCalibrationReader:
    """Feeds preprocessed calibration images to onnxruntime.quantization (its ``CalibrationDataReader`` protocol),
    every image once, in batches of one shape (``equal_batch_size``)."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 8):
        size = equal_batch_size(len(images), batch_size)
        self._batches = iter([{input_name: images[i:i + size]} for i in range(0, len(images), size)])

    def get_next(self):
        return next(self._batches, None)


def to_int8(model_path: Path, out_path: Path, calibration_images: np.ndarray, exclude_nodes: list[str],
            method: str = "percentile", weight_bits: int = 8, fold_batchnorm: bool = True) -> None:
    """Static INT8 in the one form both ONNX Runtime and TensorRT's explicit quantization take: QDQ with
    symmetric int8 activations (zero point 0, one scale per tensor), symmetric per-channel int8 weights,
    float biases (TensorRT dequantizes only activation types), calibrated on real images.
    ``exclude_nodes`` (the spectral block and the layers measured to matter) stay in float.

    ``weight_bits=7`` keeps every weight within +-64 (``reduce_range``): on x86 CPUs without VNNI, ONNX
    Runtime multiplies uint8 activations (int8 + 128) by int8 weights with VPMADDUBSW, whose 16-bit pair
    sums saturate unless 2 * 255 * |w| < 2^15. 7-bit files run correctly on every CPU but lost 0.7-1.7
    points on brain MRI (benchmarks/int8_variants.py); 8-bit files are refused by the runtime on such CPUs
    (runtime/onnx_backend.py). With symmetric activations ONNX Runtime keeps every Relu (onnxruntime#11660);
    the export's parity check verifies the outputs regardless. ``fold_batchnorm=False`` skips the graph
    optimisation below (for the benchmark that measured it).

    Args:
        model_path: the FP32 ONNX file.
        out_path: where the INT8 file is written (a temporary ``<stem>.prep.onnx`` beside it is removed).
        calibration_images: preprocessed images (N, H, W, C) float32 that set the activation ranges.
        exclude_nodes: names of the nodes kept in float.
        method: how activation ranges are calibrated: ``"minmax"``, ``"percentile"`` (99.999th) or ``"entropy"``.
        weight_bits: 8, or 7 to keep every weight within +-64 (see above).
        fold_batchnorm: fold each BatchNorm into its convolution before quantizing.

    Raises:
        InputError: an unknown ``method`` or ``weight_bits``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from s3f_edge.export.graph_outputs import order_outputs

    if method not in CALIBRATION_METHODS:
        raise InputError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if weight_bits not in INT8_WEIGHT_BITS:
        raise InputError(f"INT8 weights use {' or '.join(map(str, INT8_WEIGHT_BITS))} bits, got {weight_bits}")
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    # Pre-processing runs ONNX Runtime's basic graph optimisations first, which fold each BatchNorm (tf2onnx
    # leaves it as Mul + Add) into the convolution before it: otherwise every quantized convolution's output
    # is dequantized for the BatchNorm and quantized again. The batch axis is symbolic, so ONNX's own shape
    # inference suffices (ONNX Runtime's symbolic one needs sympy).
    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    source = model_path
    if fold_batchnorm:
        try:
            quant_pre_process(str(model_path), str(prepared), skip_optimization=False, skip_symbolic_shape=True)
            source = prepared
        except Exception as error:  # an optimisation only: the unoptimised graph quantizes to the same function
            warnings.warn(f"INT8: ONNX Runtime's pre-processing failed ({type(error).__name__}: {error}); quantizing "
                          "the graph as exported, which runs slower", RuntimeWarning, stacklevel=2)
    try:
        with _library_chatter_silenced():
            quantize_static(
                str(source), str(out_path), _ImageCalibrationReader(calibration_images, "image"),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=True, reduce_range=weight_bits == 7, calibrate_method=calibrate,
                nodes_to_exclude=exclude_nodes, op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                               "CalibPercentile": 99.999},
            )
    finally:
        prepared.unlink(missing_ok=True)
    quantized = onnx.load(out_path)
    restore_float_inputs(quantized, set(exclude_nodes))
    order_outputs(quantized)  # whatever order pre-processing and the quantizer left, output 0 is probs
    onnx.save(quantized, out_path)


@contextmanager
def _library_chatter_silenced():
    """ONNX Runtime's calibrators print their progress to stdout ("Collecting tensor data and making histogram ...")
    and log warnings meant for their developers; neither belongs in an export's output."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantization_problems(model: onnx.ModelProto) -> list[str]:
    """What keeps a QDQ model from being TensorRT explicit quantization: a non-zero or non-int8 zero point,
    a non-positive or non-constant scale, an activation (non-constant input) quantized per channel."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} {node.name!r}"
        scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None or not np.all(scale > 0):
            problems.append(f"{where}: scale must be a positive constant")
        if zero is None:
            problems.append(f"{where}: zero point must be given (int8, all zeros)")
        elif zero.dtype != np.int8 or np.any(zero != 0):
            problems.append(f"{where}: zero point must be int8 zeros (symmetric), got {zero.dtype} "
                            f"{np.unique(zero)[:4]}")
        activation = node.input[0] not in constants
        if activation and scale is not None and np.size(scale) != 1:
            problems.append(f"{where}: activations must be quantized per tensor")
    return problems


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


def calibration_images(folder: str | Path, contract: Preprocessing, limit: int = 256, seed: int = 0) -> np.ndarray:
    """A seeded random sample of ``limit`` images from anywhere under ``folder`` (the first files in path
    order would all come from one class folder), preprocessed by the model's contract."""
    from s3f_edge.data.files import image_files
    from s3f_edge.data.preprocess import ImageDecodeError, load_image

    files = image_files(folder)
    if not files:
        raise InputError(f"no images to calibrate INT8 with under {folder}; give a folder of training images "
                         "(--calib)")
    picked = np.random.default_rng(seed).permutation(len(files))[:limit]
    images = []
    for index in sorted(picked):
        try:
            images.append(load_image(files[index], contract))
        except ImageDecodeError:
            continue
    if not images:
        raise InputError(f"none of the sampled calibration images under {folder} could be read")
    return np.stack(images)
