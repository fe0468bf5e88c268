"""s3f-edge bench: FLOP counts, timing statistics, skipped backends, outputs."""
import json
import math

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from s3f_edge import SpectralFilter
from s3f_edge.bench.flops import model_flops, spectral_filter_flops
from s3f_edge.bench.runner import measure, summarise
from s3f_edge.cli import main
from s3f_edge.errors import InputError
from s3f_edge.runtime.formats import unavailable_reason
from s3f_edge.testing import saved_model


def test_flops_of_conv_dense_and_spectral_layers():
    inputs = keras.Input((16, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    spectral = SpectralFilter(2)(conv)
    dense = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(spectral))
    counts = model_flops(keras.Model(inputs, dense))
    assert counts["other"] == 2 * 16 * 8 * 4 * 9 * 1 + 2 * 2 * 5
    n, bins = 16 * 8, 5
    assert counts["spectral_fft"] == pytest.approx(2.5 * n * math.log2(n) * (4 + 2) + 8 * 4 * 2 * 16 * bins)
    assert counts["spectral_matmul"] == spectral_filter_flops(16, 8, 4, 2)["matmul"]
    assert counts["total_fft"] == counts["other"] + counts["spectral_fft"]


def test_timing_statistics_keep_the_tail():
    latencies = np.array([0.010] * 98 + [0.020, 0.500])
    result = summarise("m", "onnx-cpu", "CPU", "compute", 4, latencies, 1.5, 1e9, 100e9)
    assert result.max_ms == 500.0 and result.p50_ms == 10.0 and result.p99_ms > 20.0
    assert result.images_per_second == pytest.approx(4 / latencies.mean(), rel=1e-3)
    assert result.fraction_of_gemm == pytest.approx(result.gflops_per_second / 100, rel=1e-3)
    runs = measure(lambda x: x * 2, np.ones(3), warmup_s=0.0, duration_s=0.05, min_runs=7)
    assert len(runs) >= 7 and (runs > 0).all()


def test_unavailable_backends_say_why():
    import onnxruntime as ort

    assert unavailable_reason("onnx-cpu") is None
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert unavailable_reason("onnx-cuda") is None
    else:
        assert "CUDAExecutionProvider" in unavailable_reason("onnx-cuda")


def test_a_bench_that_can_run_nothing_fails_with_the_reasons(monkeypatch, tmp_path):
    """bench MODEL.keras on a runtime-only install: every backend skipped must not pass as an empty success."""
    import s3f_edge.bench.runner as runner
    from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

    monkeypatch.setattr(runner, "unavailable_reason", lambda backend: f"{backend} is not installed (test)")
    with pytest.raises(InputError,
                       match="nothing could be measured: default_model/model.keras on keras: keras is not installed"):
        runner.bench_models([DEFAULT_MODEL_DIR / "model.keras"], ["keras"], [1], 0.1, 0.0)
    result = CliRunner().invoke(main, ["bench", str(DEFAULT_MODEL_DIR / "model.onnx"), "--no-gemm", "--duration", "0.1",
                                       "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: nothing could be measured"), result.output
    assert not (tmp_path / "b.json").exists()


def test_bench_command_end_to_end(tmp_path, sample_dir):
    from s3f_edge.export.onnx_export import ExportOptions, export_model

    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=["a", "b", "c", "d"])
    export_model(keras_path, ExportOptions(out_dir=tmp_path / "out"))
    result = CliRunner().invoke(main, [
        "bench", str(keras_path), str(tmp_path / "out" / "model.onnx"), "--batch-sizes", "1,4", "--duration", "0.2",
        "--warmup", "0.05", "--no-gemm", "--end-to-end", str(sample_dir / "test"), "--json", str(tmp_path / "b.json"),
        "--plot", str(tmp_path / "b.png")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    combos = {(r["backend"], r["mode"], r["batch"]) for r in report["results"]}
    assert {("keras", "compute", 1), ("keras", "compute", 4), ("onnx-cpu", "compute", 1),
            ("onnx-cpu", "end-to-end", 4)} <= combos
    cuda_here = "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
    assert cuda_here or any("onnx-cuda" in note for note in report["skipped"])
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in report["results"])
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_matrix_command_scores_and_times_every_artefact(tmp_path, sample_dir):
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    # 64x64: at 32x32 this random model's INT8 file misses the 99 % top-1 gate (an honest "failed" row)
    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (64, 64, 1), class_names=classes)
    result = CliRunner().invoke(main, [
        "matrix", str(keras_path), str(sample_dir / "test"), "--out", str(tmp_path / "matrix"), "--calib",
        str(sample_dir / "train"), "--batch-sizes", "1,4", "--duration", "0.2", "--no-trt"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "matrix" / "matrix.json").read_text())
    rows = {(r["artefact"], r["backend"]): r for r in report["rows"]}
    assert set(rows) == {("Keras (TensorFlow)", "keras"), ("ONNX FP32", "onnx-cpu"), ("ONNX FP16", "onnx-cpu"),
                         ("ONNX INT8", "onnx-cpu")} | ({("ONNX FP32", "onnx-cuda"), ("ONNX FP16", "onnx-cuda"),
                                                         ("ONNX INT8", "onnx-cuda")} if len(rows) > 4 else set())
    assert report["images_scored"] == 24
    for row in report["rows"]:
        assert row["status"] == "ok", row
        assert 0 <= row["accuracy"] <= 1 and row["size_mb"] > 0
        assert set(row["p50_ms"]) == {"1", "4"} and all(v > 0 for v in row["p50_ms"].values())
    keras_row, fp32 = rows[("Keras (TensorFlow)", "keras")], rows[("ONNX FP32", "onnx-cpu")]
    assert keras_row["top1_agreement"] == 1.0 and fp32["top1_agreement"] == 1.0
    assert fp32["accuracy"] == keras_row["accuracy"]
    assert "| ONNX INT8 | onnx-cpu |" in (tmp_path / "matrix" / "matrix.md").read_text()
    again = CliRunner().invoke(main, ["matrix", str(keras_path), "--out", str(tmp_path / "matrix"), "--no-trt"])
    assert again.exit_code == 1 and "--overwrite" in again.stderr  # an earlier matrix is never replaced silently
    assert json.loads((tmp_path / "matrix" / "matrix.json").read_text()) == report


def test_matrix_without_calibration_or_data_is_speed_only(tmp_path):
    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1))
    from s3f_edge.bench.matrix import accuracy_speed_matrix

    report = accuracy_speed_matrix(keras_path, tmp_path / "matrix", batches=(1,), duration=0.1, trt=False,
                                   log=lambda message: None)
    statuses = {r["artefact"]: r["status"] for r in report["rows"]}
    assert statuses["ONNX INT8"].startswith("skipped") and statuses["ONNX FP32"] == "ok"
    assert report["images_scored"] == 0 and all(r["accuracy"] is None for r in report["rows"])


def test_a_speed_only_matrix_times_files_that_failed_parity_and_says_so(tmp_path, sample_dir, monkeypatch):
    from s3f_edge.bench.matrix import TIMED_ONLY, accuracy_speed_matrix
    from s3f_edge.runtime import parity

    monkeypatch.setattr(parity, "REDUCED_MIN_TOP1", 1.01)  # every FP16/INT8 file now fails its top-1 gate
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    keras_path = saved_model(tmp_path / "m.keras", "brisc2025", (32, 32, 1), class_names=classes)
    quiet = dict(batches=(1,), duration=0.1, trt=False, log=lambda message: None)
    speed = accuracy_speed_matrix(keras_path, tmp_path / "speed", calib=sample_dir / "train", **quiet)
    rows = {r["artefact"]: r for r in speed["rows"] if r["backend"] == "onnx-cpu"}
    assert rows["ONNX FP32"]["status"] == "ok"
    for name in ("ONNX FP16", "ONNX INT8"):
        assert rows[name]["status"] == TIMED_ONLY and rows[name]["file"].endswith(".parity-failed.onnx")
        assert rows[name]["p50_ms"]["1"] > 0
    scored = accuracy_speed_matrix(keras_path, tmp_path / "scored", sample_dir / "test", **quiet)
    fp16 = next(r for r in scored["rows"] if r["artefact"] == "ONNX FP16")
    assert fp16["status"].startswith("failed") and not fp16["p50_ms"]  # scored matrices never time a failed file


class SteppedClock:
    """A clock that only the timed functions move: each call takes exactly what it says, however busy the machine."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_contenders_timed_in_turns_keep_their_fastest_round_and_a_failure_is_reported():
    from s3f_edge.bench.runner import measure_in_turns

    clock = SteppedClock()
    calls = {"steady": 0, "throttled first": 0}

    def steady(_):
        calls["steady"] += 1
        clock.spend(0.002)

    def throttled_first(_):  # slow during the first round only, as if the machine were throttled then
        calls["throttled first"] += 1
        clock.spend(0.02 if calls["throttled first"] <= 6 else 0.002)

    def broken(_):
        raise RuntimeError("engine lost")

    latencies, errors = measure_in_turns({"steady": steady, "throttled first": throttled_first, "broken": broken},
                                         np.zeros(1), warmup_s=0.0, duration_s=0.3, rounds=3, clock=clock)
    assert set(latencies) == {"steady", "throttled first"} and errors == {"broken": "RuntimeError: engine lost"}
    assert np.median(latencies["throttled first"]) == pytest.approx(0.002)  # a later, unthrottled round
    assert np.median(latencies["steady"]) == pytest.approx(0.002)
    assert calls["steady"] > 3 and calls["throttled first"] > 6


def test_a_backend_that_fails_to_load_a_real_model_is_a_row_and_the_others_go_on(monkeypatch):
    import s3f_edge.runtime.formats as formats
    from s3f_edge.bench.runner import bench_models
    from s3f_edge.errors import ModelContractError
    from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

    load = formats.load_predictor

    def refusing(path, backend=None, **kwargs):
        if backend == "onnx-cpu":  # as an 8-bit INT8 file is refused on a CPU without VNNI
            raise ModelContractError("refused on this CPU (test)")
        return load(path, backend=backend, **kwargs)

    monkeypatch.setattr(formats, "load_predictor", refusing)
    results, _ = bench_models([DEFAULT_MODEL_DIR / "model.keras", DEFAULT_MODEL_DIR / "model.onnx"],
                              ["keras", "onnx-cpu"], [1], 0.1, 0.0)
    status = {r.backend: r.status for r in results}
    assert status["keras"] == "ok" and status["onnx-cpu"].startswith("failed: ModelContractError: refused")


def test_a_text_file_given_as_a_model_stops_the_bench_before_any_measurement(tmp_path):
    from s3f_edge.bench.runner import bench_models
    from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

    (tmp_path / "fake.onnx").write_text("not a model")
    with pytest.raises(InputError, match="fake.onnx is not an ONNX model"):
        bench_models([DEFAULT_MODEL_DIR / "model.onnx", tmp_path / "fake.onnx"], ["onnx-cpu"], [1], 0.1, 0.0)
