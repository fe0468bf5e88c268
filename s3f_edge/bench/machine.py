"""The machine a measurement ran on, described once for every table that reports speed (`bench`, `matrix`).

Standard library only: `bench` on an ONNX file must not load the training stack.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def describe_machine() -> dict:
    """What a speed table says about the machine it was measured on.

    Returns:
        ``processor`` (the CPU's model name, e.g. "Intel(R) Xeon(R) ..."), ``cpus`` (logical CPUs, as
        ``os.cpu_count()``) and ``python`` (the interpreter's version).
    """
    return {"processor": processor_name(), "cpus": os.cpu_count(), "python": platform.python_version()}


def processor_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name: from ``cpuinfo`` on Linux, else what ``platform`` knows.

    ``platform.processor()`` is just the architecture on Linux ("x86_64"), and empty on some systems, so it is
    the fallback rather than the answer.

    Args:
        cpuinfo: the file to read the "model name" line from.

    Returns:
        The model name, else ``platform.processor()``, else ``platform.machine()``.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
