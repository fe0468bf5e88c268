"""pytest-benchmark: the `infer` pipeline end to end, and export time."""
import pytest

from s3f_edge.export.onnx_export import ExportOptions, export_model
from s3f_edge.runtime import infer_folder, load_predictor


@pytest.mark.parametrize("backend", ["matmul", "dft"])
def test_infer_folder_end_to_end(benchmark, exported, sample_dir, tmp_path, backend):
    predictor = load_predictor(exported["128"][backend])
    counter = iter(range(10_000))

    def run():
        return infer_folder(sample_dir, predictor, tmp_path / f"r{next(counter)}.csv", batch_size=32,
                            recursive=True, progress=False)

    benchmark.group = "infer 72 sample images, 128x128, batch 32"
    summary = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert summary.succeeded == 72


@pytest.mark.parametrize("fft", ["matmul", "dft"])
def test_export_time(benchmark, exported, tmp_path, fft):
    counter = iter(range(100))
    benchmark.group = "export brisc2025 256x256"
    result = benchmark.pedantic(
        lambda: export_model(exported["256"]["keras"], ExportOptions(out_dir=tmp_path / str(next(counter)), fft=fft)),
        rounds=1, iterations=1)
    # What was timed must be a good export: the file exists and passed its fp32 parity checks.
    assert result.onnx_path.is_file() and result.rows[0]["status"] == "ok"
    for parity in result.parity["fp32"]:
        assert parity.nonfinite_candidate == 0 and parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0
