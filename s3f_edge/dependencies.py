"""Optional packages: what each part of s3f-edge needs, and one clear line when it is missing.

A deployment machine installs only the runtime (numpy, OpenCV, click, tqdm and an inference engine);
training and export need the ``train`` extra. Checks use ``find_spec`` (nothing is imported), and
errors name the extra to install, as Keras's ``LazyModule`` and Polygraphy's ``lazy_import`` do.
"""
from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version

from s3f_edge.errors import MissingDependencyError

TRAINING_STACK = ("tensorflow", "keras", "sklearn", "matplotlib")
EXPORT_STACK = TRAINING_STACK + ("tf2onnx", "onnx", "onnxconverter_common")
EXTRA_HINTS = {
    "train": "pip install 's3f-edge[train,cpu]' (or [train,gpu] on an NVIDIA machine)",
    "cpu": "pip install 's3f-edge[cpu]'",
    "gpu": "pip install 's3f-edge[gpu]' (CUDA 12; or [gpu-cu13] for CUDA 13) in an environment without the CPU "
           "onnxruntime",
    "dicom": "pip install 's3f-edge[dicom]'",
    "cluster": "pip install 's3f-edge[cluster]' (Ray; on the driver and every node)",
}


def missing(*modules: str) -> list[str]:
    """The named top-level modules that cannot be imported here (none is imported to find out)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(purpose: str, extra: str, *modules: str) -> None:
    """Raise MissingDependencyError naming ``extra`` unless every module in ``modules`` is installed."""
    absent = missing(*modules)
    if absent:
        raise MissingDependencyError(
            f"{purpose} needs {', '.join(absent)}, which this installation lacks: {EXTRA_HINTS[extra]}")


def import_module(name: str, purpose: str, extra: str):
    """``importlib.import_module(name)``, or MissingDependencyError naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingDependencyError(f"{purpose} needs {name.split('.')[0]} ({error}): {EXTRA_HINTS[extra]}") from error


def onnxruntime_conflict() -> str | None:
    """Why the ONNX Runtime installation is broken, if the CPU and GPU packages were both installed
    (they ship the same module and overwrite each other's files)."""
    installed = []
    for distribution in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{distribution} {version(distribution)}")
        except PackageNotFoundError:
            pass
    if len(installed) > 1:
        return (f"both {' and '.join(installed)} are installed and overwrite each other; keep one: "
                "pip uninstall -y onnxruntime onnxruntime-gpu, then reinstall the cpu or the gpu extra")
    return None
