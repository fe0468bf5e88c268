"""pytest-benchmark: Keras/TensorFlow against ONNX Runtime (matmul and DFT lowerings), brisc2025.

Run with `make bench`. Compare groups within one run; absolute times depend on the machine.
"""
import numpy as np
import pytest

from s3f_edge.runtime import load_predictor


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("size", ["256", "128"])
@pytest.mark.parametrize("backend", ["keras", "matmul", "dft"])
def test_predict(benchmark, exported, size, batch, backend):
    predictor = load_predictor(exported[size][backend])
    images = np.random.default_rng(batch).random((batch, *predictor.contract.input_shape), dtype=np.float32)
    predictor.predict(images)  # warm-up: graph tracing, thread pools
    benchmark.group = f"brisc2025 {size}x{size} batch {batch}"
    benchmark.extra_info["backend"] = {"keras": "keras/tensorflow", "matmul": "onnxruntime matmul",
                                       "dft": "onnxruntime dft"}[backend]
    result = benchmark.pedantic(predictor.predict, args=(images,), rounds=10 if batch == 32 else 30, warmup_rounds=2)
    assert result.shape == (batch, 4)
