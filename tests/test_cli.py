"""The CLI's contract: user errors are one clean line and exit 1, bugs keep their traceback, and the
native log noise of TensorFlow/CUDA stays out of the output unless --verbose asks for it."""
import csv
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError, MissingDependencyError, S3FEdgeError
from s3f_edge.logs import is_noise
from s3f_edge.testing import interruptible_child

ABSL_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]", re.M)


def test_user_errors_are_one_clean_line(tmp_path, sample_dir):
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--recursive", "--out", "/proc/x/r.csv"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot write --out /proc/x/r.csv") and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    usage = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--out", str(tmp_path / "r.txt")])
    assert usage.exit_code == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert "r.txt: --out must end in .csv, .jsonl or .json" in usage.stderr


def test_old_option_names_still_work_but_help_shows_one_name_per_concept(tmp_path, sample_dir):
    runner = CliRunner()
    for old, new in (("--batch", "--batch-size"), ("--classes", "--class-names")):
        help_text = runner.invoke(main, ["infer", "--help"]).output
        assert new in help_text and f"{old} " not in help_text.replace(new, "")
    result = runner.invoke(main, ["infer", str(sample_dir / "test" / "glioma"), "--batch", "2", "--quiet",
                                  "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    for command in ("train", "evaluate", "infer"):  # one name for one concept across commands
        assert "--batch-size" in runner.invoke(main, [command, "--help"]).output
    for command in ("bench", "matrix"):
        assert "--batch-sizes" in runner.invoke(main, [command, "--help"]).output
    for command in ("infer", "export"):
        assert "--class-names" in runner.invoke(main, [command, "--help"]).output


def test_bugs_keep_their_traceback(monkeypatch, sample_dir, tmp_path):
    import s3f_edge.tasks.infer as infer_task

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(infer_task, "run_inference", broken)
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--out", str(tmp_path / "r.csv")])
    assert isinstance(result.exception, KeyError)  # not swallowed into a one-line message


def test_error_family_keeps_the_old_bases():
    from s3f_edge.errors import (
        DatasetError,
        EngineMismatch,
        ImageDecodeError,
        ModelContractError,
        TensorRTUnavailable,
    )

    for error, base in ((DatasetError, ValueError), (ImageDecodeError, ValueError), (ModelContractError, ValueError),
                        (TensorRTUnavailable, RuntimeError), (EngineMismatch, RuntimeError), (InputError, ValueError),
                        (MissingDependencyError, ImportError)):
        assert issubclass(error, S3FEdgeError) and issubclass(error, base)


@pytest.mark.parametrize("module, name", [
    ("s3f_edge.data.folders", "DatasetError"), ("s3f_edge.data.preprocess", "ImageDecodeError"),
    ("s3f_edge.runtime.predictor", "ModelContractError"), ("s3f_edge.runtime.tensorrt_backend", "EngineMismatch"),
    ("s3f_edge.runtime.tensorrt_backend", "TensorRTUnavailable"), ("s3f_edge.export.checks", "ExportCheckError"),
    ("s3f_edge.export.onnx_export", "ParityError"), ("s3f_edge.train.loop", "WorkersDisagreeError"),
])
def test_errors_live_in_errors_py_and_stay_importable_where_they_were(module, name):
    import importlib

    import s3f_edge.errors

    moved = getattr(importlib.import_module(module), name)
    assert moved is getattr(s3f_edge.errors, name) and moved.__module__ == "s3f_edge.errors"


def test_errors_py_defines_every_exception_class_of_the_package():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "s3f_edge"
    elsewhere = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and path.name != "errors.py" and any(
                    isinstance(base, ast.Name) and (base.id.endswith(("Error", "Exception")) or base.id in (
                        "EngineMismatch", "TensorRTUnavailable")) for base in node.bases):
                elsewhere.append(f"{path.relative_to(package)}:{node.name}")
    assert not elsewhere, f"exception classes outside errors.py: {elsewhere}"


def test_noise_filter_drops_absl_and_cuda_lines_only():
    assert is_noise("I0000 00:00:1795570371.632856    9542 cudart_stub.cc:31] "
                    "Could not find cuda drivers on your machine")
    assert is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_noise("E0000 00:00:1795570396.235683    9556 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert not is_noise("E0000 00:00:1795570396.235683    9556 some_kernel.cc:52] a real error")
    assert not is_noise("Error: output must end in one of ('.csv', '.jsonl', '.json')")
    assert not is_noise("infer: 100%|##########| 24/24")
    assert is_noise("[ WARN:3@0.170] global grfmt_png.cpp:793 readFromStreamOrBuffer PNG input buffer is incomplete")
    assert not is_noise("[ERROR:0@0.1] global a real OpenCV error")


@pytest.mark.parametrize("verbose", [None, "before", "after"])
def test_commands_are_quiet_unless_verbose(verbose, sample_dir):
    """fft-check imports TensorFlow and runs it: its native start-up lines appear only with --verbose, which
    may come before or after the command's name."""
    command = [sys.executable, "-m", "s3f_edge.cli", *(["--verbose"] if verbose == "before" else []), "fft-check",
               str(sample_dir / "test"), "--limit", "1", "--size", "32x32",
               *(["--verbose"] if verbose == "after" else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ok: both forms within" in done.stdout
    assert bool(ABSL_LINE.search(done.stderr)) == bool(verbose), done.stderr
    if not verbose:
        assert done.stderr.strip() == "", done.stderr


def test_ctrl_c_exits_130_and_says_how_to_continue(tmp_path, sample_dir):
    """An interrupted `infer` keeps what it answered, says how to continue, and --resume finishes the job."""
    import os
    import signal
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    images = sorted(sample_dir.rglob("*.jpg"))
    for index in range(2000):  # hard links: a large folder at no cost
        os.link(images[index % len(images)], folder / f"{index:05d}.jpg")
    output = tmp_path / "r.csv"
    journal = tmp_path / ".r.csv.partial.jsonl"
    command = [sys.executable, "-m", "s3f_edge.cli", "infer", str(folder), "--out", str(output), "--batch-size", "4",
               "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible_child)
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr, stderr
    assert not output.exists() and journal.exists()
    done = subprocess.run(command + ["--resume", "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(output, newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    assert len(paths) == len(set(paths)) == 2000


def test_tensorflow_python_warnings_are_quiet_while_a_command_runs_and_restored_after():
    import logging

    from s3f_edge.logs import NativeLogFilter

    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(logging.INFO)
    with NativeLogFilter():  # e.g. "5 out of the last 5 calls ... triggered tf.function retracing"
        assert not tf_logger.isEnabledFor(logging.WARNING)
    assert tf_logger.isEnabledFor(logging.INFO)
    with NativeLogFilter(enabled=False):  # --verbose shows everything
        assert tf_logger.isEnabledFor(logging.INFO)


@pytest.mark.parametrize("size", ["64x", "x64", "64x64x3", "6 4", "64,", "8"])
def test_a_malformed_image_size_is_a_usage_error(size, sample_dir, tmp_path):
    result = CliRunner().invoke(main, ["train", str(sample_dir), "--image-size", size, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--image-size" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_evaluate_shows_its_progress_unless_quiet(tmp_path, sample_dir):
    from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR

    model = str(DEFAULT_MODEL_DIR / "model.onnx")
    shown = CliRunner().invoke(main, ["evaluate", model, str(sample_dir / "test"), "--out", str(tmp_path / "a")])
    assert shown.exit_code == 0, shown.output
    assert "decoding" in shown.stderr and "predicting" in shown.stderr
    quiet = CliRunner().invoke(main, ["evaluate", model, str(sample_dir / "test"), "--out", str(tmp_path / "b"),
                                      "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
