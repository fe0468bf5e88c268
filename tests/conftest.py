"""Fixtures and the hardware markers, defined once.

Markers: ``gpu`` (ONNX Runtime with CUDA), ``tensorrt`` (TensorRT, cuda-python and an NVIDIA GPU),
``slow`` (over ~30 s). Tests marked gpu/tensorrt skip, with the reason, where the hardware is
absent; `pytest -m "gpu or tensorrt"` runs exactly them on a GPU machine (benchmarks/gpu_check.sh).

The suite runs with a home directory of its own (``HOME`` set to a new empty folder before anything is
imported), so that no test depends on, or changes, what a developer's home holds: Ray tokens, Keras and
matplotlib settings, caches. At the end, the session fails if the home it was started with changed.
"""
import os
import shutil
import tempfile
import time
from functools import cache
from pathlib import Path

STARTED_HOME = Path(os.environ.get("HOME") or Path("~").expanduser())
SUITE_HOME = Path(tempfile.mkdtemp(prefix="s3f-edge-tests-home-"))
os.environ["HOME"] = str(SUITE_HOME)
for _variable in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "KERAS_HOME", "MPLCONFIGDIR",
                  "S3F_EDGE_CACHE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
    os.environ.pop(_variable, None)  # each would point a library at the developer's own files or cluster

import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "brain_mri"


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


def home_changes(home: Path, since_ns: int, apart: tuple[Path, ...] = ()) -> list[str]:
    """Paths under ``home`` created or modified since ``since_ns`` (a folder's time changes when an entry is added
    to it or removed from it), leaving out the trees ``apart`` (the checkout itself, when it lies in the home)."""
    changed = []
    for folder, folders, files in os.walk(home):
        if any(Path(folder) == tree or tree in Path(folder).parents for tree in apart):
            folders[:] = []
            continue
        for name in [".", *folders, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            try:
                if path.lstat().st_mtime_ns > since_ns:
                    changed.append(str(path))
            except OSError:
                continue
        folders[:] = [name for name in folders if not (Path(folder) / name).is_symlink()]
    return sorted(set(changed))


def pytest_sessionstart(session):
    session.config.stash[_HOME_CHECK] = time.time_ns()


def pytest_sessionfinish(session, exitstatus):
    started = session.config.stash.get(_HOME_CHECK, None)
    shutil.rmtree(SUITE_HOME, ignore_errors=True)
    if started is None or not STARTED_HOME.is_dir() or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)  # pytest's tmp_path root, when it lies in the home
    trees = [session.config.rootpath] + ([factory.getbasetemp()] if factory is not None else [])
    apart = tuple(Path(tree).resolve() for tree in trees)
    changed = home_changes(STARTED_HOME.resolve(), started, apart)
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        listing = "\n  ".join(changed[:20])
        message = (f"the test session changed the home directory it was started with ({STARTED_HOME}); tests must "
                   f"use their own (HOME is {SUITE_HOME} while they run):\n  {listing}")
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_HOME_CHECK = pytest.StashKey[int]()
