"""A deployment machine installs the runtime only: `pip install s3f-edge[cpu]`, no TensorFlow.

The test builds that environment for real (a separate venv, packages from the pip cache; kept in
.venv-runtime/ and rebuilt when pyproject.toml changes, the package itself reinstalled when its files
change), then runs `infer` with the bundled model and `bench` on an ONNX file there. TensorFlow and
Keras are not installed in it, and the commands also report that they never tried to import them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from runtime_footprint import ensure_runtime_venv  # noqa: E402

RUNTIME_VENV = REPO / ".venv-runtime"
FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime_python() -> Path:
    """The venv's python, with `s3f-edge[cpu]` installed from this checkout (not editable)."""
    return ensure_runtime_venv(RUNTIME_VENV)


PROBE = """
import json, sys
from s3f_edge.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="s3f-edge")
except SystemExit as stop:
    code = stop.code or 0
print(json.dumps({"exit": code, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in %r)}))
""" % (FORBIDDEN,)


def run(python: Path, *arguments: str, cwd: Path) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-c", PROBE, *arguments], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


def test_the_runtime_installs_without_the_training_stack(runtime_python):
    code = "import importlib.util as u; print([m for m in %r if u.find_spec(m)])" % (FORBIDDEN,)
    installed = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, check=True).stdout
    assert installed.strip() == "[]"


def test_infer_and_bench_run_on_the_runtime_alone(runtime_python, tmp_path, sample_dir):
    report, output = run(runtime_python, "infer", str(sample_dir / "test"), "--recursive", "--out",
                         str(tmp_path / "results.csv"), "--report", str(tmp_path / "review.html"), "--quiet",
                         cwd=tmp_path)
    assert report == {"exit": 0, "loaded": []}, output
    assert (tmp_path / "review.html").stat().st_size > 10_000  # the review page needs nothing beyond the runtime
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 25 and sum(",ok," in row or ",refused," in row for row in rows) == 24
    assert sum(",ok," in row for row in rows) >= 22 and all(",error," not in row for row in rows)
    assert "cuda" not in output.lower() and "absl" not in output  # quiet by default
    bundled = REPO / "s3f_edge" / "assets" / "default_model" / "model.onnx"
    report, output = run(runtime_python, "bench", str(bundled), "--batch-sizes", "1,4", "--duration", "0.2",
                         "--warmup", "0.05", "--json", str(tmp_path / "bench.json"), cwd=tmp_path)
    assert report == {"exit": 0, "loaded": []}, output
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert {(r["backend"], r["batch"], r["status"]) for r in results} >= {("onnx-cpu", 1, "ok"), ("onnx-cpu", 4, "ok")}


def test_training_commands_name_the_extra_to_install(runtime_python, tmp_path, sample_dir):
    for arguments in (["train", str(sample_dir)], ["export", str(tmp_path / "m.keras")],
                      ["infer", str(sample_dir / "test"), "--model", str(tmp_path / "m.keras")]):
        (tmp_path / "m.keras").write_bytes(b"not needed: the check comes first")
        report, output = run(runtime_python, *arguments, cwd=tmp_path)
        assert report["exit"] == 1, output
        assert "s3f-edge[train" in output and "Traceback" not in output, output


def test_the_model_api_names_the_extra_to_install(runtime_python, tmp_path):
    """``s3f_edge.build_model`` on the runtime alone: MissingDependencyError naming the train extra, not a raw
    ModuleNotFoundError (tests/test_serialization.py checks every name of the model API the same way)."""
    code = ("import s3f_edge\nfrom s3f_edge.errors import MissingDependencyError\ntry:\n    s3f_edge.build_model\n"
            "except MissingDependencyError as error:\n    print(error)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert done.returncode == 0 and "s3f_edge.build_model" in done.stdout and "s3f-edge[train" in done.stdout, (
        done.stdout + done.stderr)
