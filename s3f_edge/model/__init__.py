"""S3F-Net in Keras 3: layers, builders, presets and loading.

Names load on first use, so ``s3f_edge.model.presets`` (plain data) can be read without Keras.
"""
from importlib import import_module

_EXPORTS = {
    "BilinearFusion": "bilinear_fusion", "FUSIONS": "presets", "KINDS": "presets", "PRESETS": "presets",
    "Preset": "presets", "SPECTRAL_MODES": "presets", "SpectralFilter": "spectral_filter", "VARIANTS": "presets",
    "build_model": "builders", "get_preset": "presets", "load_model": "serialization",
    "set_spectral_mode": "serialization", "spectral_filters": "serialization",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"s3f_edge.model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 's3f_edge.model' has no attribute {name!r}")
