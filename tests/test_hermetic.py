"""The suite depends on nothing in a developer's home and writes nothing there (tests/conftest.py gives it a
home of its own and fails the session when the home it was started with changed)."""
import os
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

PROBE = "S3F_EDGE_HOME_PROBE"


def test_tests_run_in_a_home_of_their_own():
    assert Path.home() == conftest.SUITE_HOME != conftest.STARTED_HOME
    assert os.path.expanduser("~/.ray/auth_token").startswith(str(conftest.SUITE_HOME))
    assert not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "KERAS_HOME", "XDG_CACHE_HOME"} & set(os.environ)


@pytest.mark.skipif(not os.environ.get(PROBE), reason="run only by the test below, in its own session")
def test_probe_writes_into_the_started_home():
    (conftest.STARTED_HOME / ".written-by-a-test").write_text("a test must not do this")


def test_a_session_that_writes_into_the_home_fails(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), PROBE: "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::test_probe_writes_into_the_started_home"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "changed the home directory it was started with" in done.stdout
    assert str(home / ".written-by-a-test") in done.stdout
    other = tmp_path / "other"
    other.mkdir()
    clean = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_tests_run_in_a_home_of_their_own"],
                           env={**env, "HOME": str(other)}, capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).parent.parent)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert list(other.iterdir()) == []


def test_the_checkout_may_lie_in_the_home(tmp_path):
    """pytest's cache and the screenshots are written in the checkout, which is not the home's business."""
    import time

    home = tmp_path / "home"
    (home / "project" / ".pytest_cache").mkdir(parents=True)
    started = time.time_ns() - 1
    (home / "project" / ".pytest_cache" / "nodeids").write_text("[]")
    (home / ".keras").mkdir()
    changed = conftest.home_changes(home, started, apart=(home / "project",))
    assert changed == [str(home), str(home / ".keras")]
