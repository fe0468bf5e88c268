"""s3f-edge: train, verify and deploy S3F-Net, the spatial-spectral medical image classifier."""
import os as _os

# Quiet TensorFlow's C++ start-up banner unless the user asked for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from s3f_edge.model import (  # noqa: E402
    BilinearFusion,
    SpectralFilter,
    build_model,
    get_preset,
    load_model,
    set_spectral_mode,
)

__version__ = "0.1.0"

__all__ = ["BilinearFusion", "SpectralFilter", "__version__", "build_model", "get_preset", "load_model", "set_spectral_mode"]
