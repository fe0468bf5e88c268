"""S3F-Net in Keras 3: layers, builders, presets and loading."""
from s3f_edge.model.bilinear_fusion import BilinearFusion
from s3f_edge.model.builders import FUSIONS, KINDS, build_model
from s3f_edge.model.presets import PRESETS, Preset, get_preset
from s3f_edge.model.serialization import load_model, set_spectral_mode, spectral_filters
from s3f_edge.model.spectral_filter import SPECTRAL_MODES, SpectralFilter

__all__ = [
    "BilinearFusion", "FUSIONS", "KINDS", "PRESETS", "Preset", "SPECTRAL_MODES", "SpectralFilter",
    "build_model", "get_preset", "load_model", "set_spectral_mode", "spectral_filters",
]
