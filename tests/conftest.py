import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "brain_mri"
SHARED_DATA = REPO.parent / "shared" / "data"


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
