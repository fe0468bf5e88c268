"""Fixtures for the pytest-benchmark suite: brisc2025 models at 256x256 and 128x128, exported both ways."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from s3f_edge.export.onnx_export import ExportOptions, export_model  # noqa: E402
from s3f_edge.testing import saved_model  # noqa: E402

SIZES = {"256": (256, 256, 1), "128": (128, 128, 1)}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """{size: {"keras": path, "matmul": path, "dft": path}} for the brisc2025 preset."""
    root = tmp_path_factory.mktemp("bench-models")
    models = {}
    for size, shape in SIZES.items():
        keras_path = saved_model(root / f"brisc-{size}.keras", "brisc2025", shape,
                                 class_names=["glioma", "meningioma", "notumor", "pituitary"])
        entry = {"keras": keras_path}
        for fft in ("matmul", "dft"):
            export_model(keras_path, ExportOptions(out_dir=root / f"{size}-{fft}", fft=fft))
            entry[fft] = root / f"{size}-{fft}" / "model.onnx"
        models[size] = entry
    return models


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "samples" / "brain_mri"
