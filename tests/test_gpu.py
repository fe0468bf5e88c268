"""What only an NVIDIA machine can check (ONNX Runtime with CUDA or TensorRT, TensorRT engines).

Skipped with the reason elsewhere (markers in conftest.py); `bash benchmarks/gpu_check.sh` runs them
with the rest of the suite and the GPU benchmarks, and writes one report.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from s3f_edge.export.onnx_export import ExportOptions, export_model
from s3f_edge.runtime import load_predictor
from s3f_edge.runtime.parity import compare, parity_failures, real_batch
from s3f_edge.testing import saved_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    keras_path = saved_model(root / "m.keras", "brisc2025", (64, 64, 1))
    export_model(keras_path, ExportOptions(out_dir=root / "out", precision="fp16"))
    return keras_path, root / "out" / "model.onnx", root / "out" / "model.fp16.onnx"


def _parity(keras_path, deployed, backend, precision):
    reference = load_predictor(keras_path)
    batch = real_batch(reference.contract)
    candidate = load_predictor(deployed, backend=backend)
    result = compare(reference.predict_all(batch), candidate.predict_all(batch), "real images")
    return candidate, result, parity_failures([result], precision)


@pytest.mark.gpu
def test_onnx_runtime_cuda_matches_keras(exported):
    keras_path, fp32, fp16 = exported
    candidate, result, failures = _parity(keras_path, fp32, "onnx-cuda", "fp32")
    assert candidate.provider == "CUDAExecutionProvider"
    assert not failures, result
    candidate, result, failures = _parity(keras_path, fp16, "onnx-cuda", "fp16")
    assert not failures, result


@pytest.mark.tensorrt
def test_onnx_runtime_tensorrt_provider_caches_its_engine(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("S3F_EDGE_CACHE", str(tmp_path))
    keras_path, fp32, _ = exported
    candidate, result, _ = _parity(keras_path, fp32, "onnx-trt", "fp32")
    assert candidate.provider == "TensorrtExecutionProvider"
    assert result.nonfinite_candidate == 0 and result.top1_agreement == 1.0, result
    # TensorRT may use TF32 inside this provider; the bound is looser than s3f-edge's own engines' 1e-4.
    assert result.max_abs_diff < 1e-3, result
    assert list((tmp_path / "ort-tensorrt").glob("*.engine")), "no cached engine: every start would rebuild it"


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_from_each_onnx_precision(tmp_path, sample_dir, precision):
    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1))
    result = export_model(keras_path, ExportOptions(out_dir=tmp_path / "out", precision=precision, trt=True,
                                                    trt_batch=(1, 4, 8), calib=sample_dir / "train"))
    engine = tmp_path / "out" / f"model.{precision}.engine"
    assert engine.is_file() and result.parity[f"tensorrt {precision}"]
    predictor = load_predictor(engine)
    outputs = predictor.predict(np.random.default_rng(0).random((8, 64, 64, 1), dtype=np.float32))
    assert np.isfinite(outputs).all() and outputs.shape == (8, 4)
    np.testing.assert_allclose(outputs.sum(1), 1.0, atol=1e-3)
    _runs_in_a_fresh_process(engine, outputs)


def _runs_in_a_fresh_process(engine, expected: np.ndarray) -> None:
    """Load and run the engine where nothing was built before (plugins registered by the runner itself), on a
    batch above the profile's maximum (chunked) and then a smaller one (device buffers reused)."""
    script = (
        "import json, sys, numpy as np\n"
        "from s3f_edge.runtime import load_predictor\n"
        "p = load_predictor(sys.argv[1])\n"
        "x = np.random.default_rng(0).random((8, 64, 64, 1), dtype=np.float32)\n"
        "big = p.predict(np.concatenate([x, x, x[:4]]))\n"
        "small = p.predict(x[:3])\n"
        "print(json.dumps({'big': big.tolist(), 'small': small.tolist()}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(engine)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    big, small = np.array(result["big"]), np.array(result["small"])
    assert big.shape == (20, 4) and np.isfinite(big).all()
    np.testing.assert_allclose(big[:8], expected, atol=1e-5)
    np.testing.assert_allclose(big[8:16], expected, atol=1e-5)
    np.testing.assert_allclose(small, expected[:3], atol=1e-5)


@pytest.mark.tensorrt
def test_tensorrt_engine_with_onnx_dft_nodes(tmp_path):
    """--fft dft: TensorRT >= 11.2 parses ONNX DFT into its cuFFT plugin; the engine must load elsewhere too."""
    from s3f_edge.runtime.tensorrt_env import installed_version

    if installed_version() < (11, 2):
        pytest.skip(f"TensorRT {installed_version()} has no ONNX DFT support (11.2 and later)")
    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1))
    result = export_model(keras_path, ExportOptions(out_dir=tmp_path / "out", fft="dft", opset=18, trt=True,
                                                    trt_batch=(1, 4, 8)))
    engine = tmp_path / "out" / "model.fp32.engine"
    assert not parity_failures(result.parity["tensorrt fp32"], "fp32")
    outputs = load_predictor(engine).predict(np.random.default_rng(0).random((8, 64, 64, 1), dtype=np.float32))
    _runs_in_a_fresh_process(engine, outputs)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_calibrated_model_keeps_its_ood_score_in_a_tensorrt_engine(tmp_path, sample_dir, precision):
    """The bundled model is calibrated: its engine has the outputs probs and ood_score, held to Keras's by the
    export's parity gate, and refuses what Keras refuses on real and random images."""
    from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

    result = export_model(DEFAULT_MODEL_DIR / "model.keras", ExportOptions(
        out_dir=tmp_path / "out", precision=precision, trt=True, trt_batch=(1, 4, 8), calib=sample_dir / "train",
        copy_calibration=True))  # the score's parity is tested here; fitting per file: tests/test_ood.py
    parity = result.parity[f"tensorrt {precision}"]
    assert all(p.score_max_rel_diff is not None and p.score_decision_agreement >= 0.99 for p in parity), parity
    engine = load_predictor(tmp_path / "out" / f"model.{precision}.engine")
    keras_model = load_predictor(DEFAULT_MODEL_DIR / "model.keras")
    batch = real_batch(keras_model.contract)
    _, engine_scores = engine.predict_scored(batch)
    _, keras_scores = keras_model.predict_scored(batch)
    assert np.isfinite(engine_scores).all() and engine_scores.shape == keras_scores.shape
    threshold = keras_model.ood_threshold
    assert ((engine_scores > threshold) == (keras_scores > threshold)).mean() >= 0.99
