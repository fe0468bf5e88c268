"""s3f-edge: train, verify and deploy S3F-Net, the spatial-spectral medical image classifier.

``import s3f_edge`` is cheap: the model API (which needs TensorFlow/Keras) loads on first use, so a
deployment machine with the runtime alone can import the package.
"""
import os as _os
import sys as _sys
from importlib import import_module as _import_module

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up messages; the CLI also filters what this setting cannot reach (s3f_edge/logs.py).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

_MODEL_API = ("BilinearFusion", "SpectralFilter", "build_model", "get_preset", "load_model", "set_spectral_mode")
__all__ = [*_MODEL_API, "__version__"]


def __getattr__(name: str):
    if name in _MODEL_API:  # without the train extra: MissingDependencyError naming it (s3f_edge.model.export)
        return _import_module("s3f_edge.model").export(name, f"s3f_edge.{name}")
    raise AttributeError(f"module 's3f_edge' has no attribute {name!r}")


if _sys.modules.get("keras") is not None:  # a Keras user already: register the custom layers for keras.saving now
    _import_module("s3f_edge.model.serialization")
