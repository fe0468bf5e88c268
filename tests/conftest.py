"""Fixtures and the hardware markers, defined once.

Markers: ``gpu`` (ONNX Runtime with CUDA), ``tensorrt`` (TensorRT, cuda-python and an NVIDIA GPU),
``slow`` (over ~30 s). Tests marked gpu/tensorrt skip, with the reason, where the hardware is
absent; `pytest -m "gpu or tensorrt"` runs exactly them on a GPU machine (benchmarks/gpu_check.sh).
"""
import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from s3f_edge.testing import data_root

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "brain_mri"
SHARED_DATA = data_root()


@cache
def hardware_missing(marker: str) -> str | None:
    """Why tests with ``marker`` cannot run here, or None."""
    from s3f_edge.runtime.formats import unavailable_reason

    backend = {"gpu": "onnx-cuda", "tensorrt": "trt"}[marker]
    return unavailable_reason(backend)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs ONNX Runtime with CUDA and an NVIDIA GPU")
    config.addinivalue_line("markers", "tensorrt: needs TensorRT, cuda-python and an NVIDIA GPU")
    config.addinivalue_line("markers", "slow: takes more than about 30 seconds")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker in ("gpu", "tensorrt"):
            if marker in item.keywords:
                reason = hardware_missing(marker)
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    assert SAMPLES.is_dir(), f"bundled sample images missing at {SAMPLES}"
    return SAMPLES


@pytest.fixture(scope="session")
def sample_images(sample_dir) -> list[Path]:
    return sorted(p for p in sample_dir.rglob("*.jpg"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
