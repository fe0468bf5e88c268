"""The CLI's contract: user errors are one clean line and exit 1, bugs keep their traceback, and the
native log noise of TensorFlow/CUDA stays out of the output unless --verbose asks for it."""
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from s3f_edge.cli import main
from s3f_edge.errors import InputError, MissingDependencyError, S3FEdgeError
from s3f_edge.logs import is_noise

ABSL_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]", re.M)


def test_user_errors_are_one_clean_line(tmp_path, sample_dir):
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 1
    assert "Error: output must end in one of" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_bugs_keep_their_traceback(monkeypatch, sample_dir, tmp_path):
    import s3f_edge.runtime.infer as infer_module

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(infer_module, "infer_folder", broken)
    result = CliRunner().invoke(main, ["infer", str(sample_dir / "test"), "--out", str(tmp_path / "r.csv")])
    assert isinstance(result.exception, KeyError)  # not swallowed into a one-line message


def test_error_family_keeps_the_old_bases():
    from s3f_edge.data.folders import DatasetError
    from s3f_edge.data.preprocess import ImageDecodeError
    from s3f_edge.runtime.predictor import ModelContractError
    from s3f_edge.runtime.tensorrt_backend import EngineMismatch, TensorRTUnavailable

    for error, base in ((DatasetError, ValueError), (ImageDecodeError, ValueError), (ModelContractError, ValueError),
                        (TensorRTUnavailable, RuntimeError), (EngineMismatch, RuntimeError), (InputError, ValueError),
                        (MissingDependencyError, ImportError)):
        assert issubclass(error, S3FEdgeError) and issubclass(error, base)


def test_noise_filter_drops_absl_and_cuda_lines_only():
    assert is_noise("I0000 00:00:1795570371.632856    9542 cudart_stub.cc:31] Could not find cuda drivers on your machine")
    assert is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_noise("E0000 00:00:1795570396.235683    9556 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert not is_noise("E0000 00:00:1795570396.235683    9556 some_kernel.cc:52] a real error")
    assert not is_noise("Error: output must end in one of ('.csv', '.jsonl', '.json')")
    assert not is_noise("infer: 100%|##########| 24/24")


@pytest.mark.parametrize("verbose", [False, True])
def test_commands_are_quiet_unless_verbose(verbose, sample_dir):
    """fft-check imports TensorFlow and runs it: its native start-up lines appear only with --verbose."""
    command = [sys.executable, "-m", "s3f_edge.cli", *(["--verbose"] if verbose else []), "fft-check",
               str(sample_dir / "test"), "--limit", "1", "--size", "32x32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ok: both forms within" in done.stdout
    assert bool(ABSL_LINE.search(done.stderr)) == verbose, done.stderr
    if not verbose:
        assert done.stderr.strip() == "", done.stderr
