"""This machine's sustained float32 matrix-multiply rate: the yardstick for achieved FLOP/s."""
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
