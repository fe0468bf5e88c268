"""S3F-Net in Keras 3: layers, builders, presets and loading.

Names load on first use, so ``s3f_edge.model.presets`` (plain data) can be read without Keras; the others need the
training stack, and without it say which extra to install (MissingDependencyError) rather than fail on ``import
keras``.
"""
from importlib import import_module

_EXPORTS = {
    "BilinearFusion": "bilinear_fusion", "FUSIONS": "presets", "KINDS": "presets", "PRESETS": "presets",
    "Preset": "presets", "SPECTRAL_MODES": "presets", "SpectralFilter": "spectral_filter", "VARIANTS": "presets",
    "build_model": "builders", "get_preset": "presets", "load_model": "serialization",
    "set_spectral_mode": "serialization", "spectral_filters": "serialization",
}
_PLAIN_DATA = ("presets",)  # modules that import no Keras
__all__ = sorted(_EXPORTS)


def export(name: str, purpose: str | None = None):
    """The public name ``name`` of ``s3f_edge.model``, imported on first use.

    Args:
        name: one of ``__all__``.
        purpose: what the error calls the name (default ``s3f_edge.model.<name>``).

    Returns:
        The class, function or constant.

    Raises:
        MissingDependencyError: the name needs Keras/TensorFlow, which this installation lacks (naming the
            ``train`` extra).
    """
    module = _EXPORTS[name]
    if module not in _PLAIN_DATA:
        from s3f_edge.dependencies import require

        # Checked before the import (find_spec imports nothing), so an ImportError of our own stays a traceback.
        require(purpose or f"s3f_edge.model.{name}", "train", "keras", "tensorflow")
    return getattr(import_module(f"s3f_edge.model.{module}"), name)


def __getattr__(name: str):
    if name in _EXPORTS:
        return export(name)
    raise AttributeError(f"module 's3f_edge.model' has no attribute {name!r}")
