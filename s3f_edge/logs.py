"""Quiet by default: TensorFlow, XLA and CUDA print start-up lines from native code (absl logging)
that ``TF_CPP_MIN_LOG_LEVEL`` does not reach, e.g. "Could not find cuda drivers" and "failed call to
cuInit" on every CPU-only machine. While a command runs, the process's native stderr (file descriptor
2) goes through a filter that drops those lines and passes everything else on; Python's own stderr
(progress bars, warnings, error messages) bypasses it. ``--verbose`` or S3F_EDGE_VERBOSE=1 turns
the filter off and lets TensorFlow log everything.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading

VERBOSE_ENV = "S3F_EDGE_VERBOSE"

# absl-formatted INFO/WARNING lines ("I0000 00:00:1795568635.629862    2476 file.cc:31] ..."), absl's
# notice about its own initialisation, and the CUDA probing errors of a machine without a GPU.
NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|E\d{4} [\d:.]+\s+\d+ (?:cuda_platform|cuda_executor|cuda_diagnostics|cuda_dnn|cuda_fft|cuda_blas)"
    r"\.cc:\d+\]"
    # Ray's native INFO/WARNING lines, and its notice that a restartable actor keeps its arguments in the object
    # store (Ray Data's map actors always do; the driver holds them for the whole run).
    r"|\[[\d-]+ [\d:,]+ [IW] \d+ \d+\] "
    r"|\[[\d-]+ [\d:,]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in "
    r"the object store and max_restarts > 0"
    # OpenCV's decoder warnings about a damaged file ("PNG input buffer is incomplete"): that file's row already
    # says why it has no answer.
    r"|\[ WARN:\d+@[\d.]+\] global )"
)


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


class NativeLogFilter:
    """Context manager: native writes to fd 2 pass through ``is_noise``; ``sys.stderr`` writes do not."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._saved_fd = self._thread = self._saved_stderr = None
        self._tf_logger, self._tf_level = None, logging.NOTSET

    def __enter__(self):
        if not self.enabled:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
            return self
        # TensorFlow's Python-side warnings too (e.g. "triggered tf.function retracing"): meant for its developers.
        self._tf_logger = logging.getLogger("tensorflow")
        self._tf_level = self._tf_logger.level
        self._tf_logger.setLevel(logging.ERROR)
        try:
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
        except (OSError, ValueError, AttributeError):  # no real stderr (e.g. some embedded interpreters)
            self._saved_fd = None
            return self
        try:
            python_writes_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):  # e.g. captured by a test runner: leave it alone
            python_writes_fd2 = False
        if python_writes_fd2:
            self._saved_stderr = sys.stderr
            sys.stderr = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        self._thread = threading.Thread(target=self._forward, args=(read_end, self._saved_fd), daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _forward(read_end: int, target: int) -> None:
        with os.fdopen(read_end, "rb") as source:
            for raw in source:
                if not is_noise(raw.decode("utf-8", errors="replace")):
                    os.write(target, raw)

    def __exit__(self, *exc):
        if self._tf_logger is not None:
            self._tf_logger.setLevel(self._tf_level)
        if self._saved_fd is None:
            return False
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)  # closes the pipe's last write end: the forwarding thread drains and stops
        self._thread.join(timeout=5)
        if self._saved_stderr is not None:
            sys.stderr.close()
            sys.stderr = self._saved_stderr
        os.close(self._saved_fd)
        return False
