"""What TensorRT's ONNX parser accepts: a support table kept in the repo, and a checker.

Source: onnx/onnx-tensorrt, docs/operators.md for TensorRT 10.15 ("supports operators in the
inclusive range of opset 9 to opset 24"), read 2026-11. Only operators marked "Y" are listed.
DFT is "N" there; TensorRT parses ONNX DFT only from 11.2 on, through its cuFFT FFT plugin, so
DFT is accepted here only when the caller targets TensorRT >= 11.2.
"""
from __future__ import annotations

import onnx

TABLE_SOURCE = "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9-24)"
TABLE_TRT_VERSION = (10, 15)
OPSET_RANGE = (9, 24)
DFT_MIN_TRT_VERSION = (11, 2)

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding
Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size
Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

SUPPORTED_TENSOR_TYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT32,
    onnx.TensorProto.INT64, onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.BOOL,
})

# Inputs that the table requires to be constants (initializers or Constant outputs).
_CONSTANT_INPUTS = {"Squeeze": 1, "Unsqueeze": 1, "CumSum": 1, "TopK": 1, "OneHot": 1}
_CONSTANT_INPUTS.update({op: 1 for op in SUPPORTED_OPS if op.startswith("Reduce")})


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def tensorrt_problems(model: onnx.ModelProto, trt_version: tuple[int, int] | None = None) -> list[str]:
    """Every node, attribute or type in ``model`` that TensorRT's ONNX parser would refuse."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} is outside TensorRT's range {OPSET_RANGE[0]}-{OPSET_RANGE[1]}")
    dft_ok = trt_version is not None and tuple(trt_version) >= DFT_MIN_TRT_VERSION
    for node in graph.node:
        where = f"node {node.name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r}")
            continue
        if node.op_type == "DFT":
            if not dft_ok:
                problems.append(f"{where}: DFT needs TensorRT >= 11.2 (cuFFT FFT plugin); use --fft matmul")
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: not supported by TensorRT's ONNX parser ({TABLE_SOURCE})")
            continue
        if node.op_type in ("Conv", "MaxPool", "AveragePool", "LpPool"):
            dilations = _attribute(node, "dilations")
            if node.op_type != "Conv" and dilations and any(d != 1 for d in dilations):
                problems.append(f"{where}: dilations must be all ones")
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
            problems.append(f"{where}: is_training must be an initializer")
        if node.op_type == "TopK" and _attribute(node, "sorted", 1) != 1:
            problems.append(f"{where}: sorted must be 1")
        if node.op_type == "ScatterND" and _attribute(node, "reduction", b"none") not in (b"none", "none"):
            problems.append(f"{where}: reduction other than none")
        index = _CONSTANT_INPUTS.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
            problems.append(f"{where}: input {index} must be a build-time constant")
    for tensor in list(graph.initializer):
        if tensor.data_type not in SUPPORTED_TENSOR_TYPES:
            problems.append(f"initializer {tensor.name!r}: type {onnx.TensorProto.DataType.Name(tensor.data_type)}")
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        elem = value.type.tensor_type.elem_type
        if elem and elem not in SUPPORTED_TENSOR_TYPES and elem != onnx.TensorProto.DOUBLE:
            problems.append(f"tensor {value.name!r}: type {onnx.TensorProto.DataType.Name(elem)}")
    return problems
