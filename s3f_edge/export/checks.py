"""Hard checks on an exported ONNX graph: the command fails on any of them."""
from __future__ import annotations

import onnx

from s3f_edge.errors import ExportCheckError
from s3f_edge.export.graph_outputs import output_order_problems

COMPLEX_TYPES = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def standard_op_problems(model: onnx.ModelProto, opset: int) -> list[str]:
    """Nodes outside the default ONNX domain, or not defined at ``opset``."""
    problems = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node {node.name!r}: non-standard op {node.domain}::{node.op_type}")
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            problems.append(f"node {node.name!r}: {node.op_type} is not a standard ONNX op at opset {opset}")
    return problems


def complex_tensor_problems(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    problems = [f"initializer {t.name!r} is complex" for t in graph.initializer if t.data_type in COMPLEX_TYPES]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type in COMPLEX_TYPES:
            problems.append(f"tensor {value.name!r} is complex")
    return problems


def tensorrt_support_problems(model: onnx.ModelProto, trt_version: tuple[int, int] | None = None) -> list[str]:
    """What TensorRT would refuse: its own ONNX parser's answer where TensorRT and a GPU are installed, else
    the op table kept in tensorrt_ops.py (for ``trt_version``; None means a version before DFT support)."""
    from s3f_edge.runtime.formats import unavailable_reason

    if unavailable_reason("trt") is None:
        from s3f_edge.export.tensorrt import parser_problems

        return parser_problems(model.SerializeToString(),
                               node_names=[f"{n.name} ({n.op_type})" for n in model.graph.node])
    from s3f_edge.export.tensorrt_ops import tensorrt_problems

    return tensorrt_problems(model, trt_version)


def check_onnx(model: onnx.ModelProto, opset: int, tensorrt: bool = False,
               trt_version: tuple[int, int] | None = None, quantized: bool = False) -> None:
    """Full onnx.checker, standard ops only, no complex tensors, outputs in the contract's order (probs, then
    ood_score); optionally what TensorRT's parser refuses, and (``quantized``) the Q/DQ rules both ONNX Runtime and
    TensorRT need (zero points 0).

    tf2onnx's Python API can write an invalid graph without raising, so nothing is trusted before this passes.

    Args:
        model: the ONNX model to check.
        opset: the opset at which every node must be a standard ONNX op.
        tensorrt: also check what TensorRT would refuse: its own parser where TensorRT and a GPU are installed,
            else s3f-edge's op table.
        trt_version: (major, minor) of the TensorRT to check against with the op table; None: a version before
            DFT support.
        quantized: also check the Q/DQ nodes (positive constant scales, int8 zero points 0, per-tensor activations).

    Raises:
        ExportCheckError: listing every problem (the first 20 in full).
    """
    problems = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        problems.append(f"onnx.checker: {str(error).strip().splitlines()[0]}")
    problems += standard_op_problems(model, opset)
    problems += output_order_problems(model)
    inferred = onnx.shape_inference.infer_shapes(model) if not problems else model
    problems += complex_tensor_problems(inferred)
    if quantized:
        from s3f_edge.export.precision import quantization_problems

        problems += quantization_problems(model)
    if tensorrt:
        problems += tensorrt_support_problems(inferred, trt_version)
    if problems:
        listed = "\n  - ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ExportCheckError(f"the exported ONNX graph fails {len(problems)} check(s):\n  - {listed}")
