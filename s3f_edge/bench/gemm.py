"""This machine's sustained matrix-multiply rates (float32, and 8-bit integer): the yardsticks for achieved
FLOP/s (and integer OP/s)."""
from __future__ import annotations

import time

import numpy as np


def _rate(run, flops: float, seconds: float) -> float:
    run()  # warm-up (thread pools, page faults)
    runs, started = 0, time.perf_counter()
    while True:
        run()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            return flops * runs / elapsed


def gemm_rates(size: int = 2048, seconds: float = 2.0) -> dict[str, float]:
    """FLOP/s of a size x size float32 GEMM in numpy (BLAS) and ONNX Runtime (CPU), where available."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    flops = 2.0 * size ** 3
    rates = {"numpy": _rate(lambda: a @ b, flops, seconds)}
    try:
        import onnx
        import onnxruntime as ort
        from onnx import helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [size, size]) for n in "ab"],
            [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        rates["onnxruntime"] = _rate(lambda: session.run(None, {"a": a, "b": b}), flops, seconds)
    except ImportError:
        pass
    return rates


def int8_gemm_rate(size: int = 2048, seconds: float = 2.0) -> float | None:
    """OP/s of a size x size uint8 x int8 -> int32 GEMM in ONNX Runtime (MatMulInteger, what its CPU INT8
    kernels run on x86), or None without ONNX Runtime and onnx."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (size, size), dtype=np.uint8)
    b = rng.integers(-127, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "gemm_int8",
        [helper.make_tensor_value_info("a", onnx.TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("b", onnx.TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("c", onnx.TensorProto.INT32, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return _rate(lambda: session.run(None, {"a": a, "b": b}), 2.0 * size ** 3, seconds)
