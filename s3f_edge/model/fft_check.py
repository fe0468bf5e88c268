"""Check both SpectralFilter forms against a float64 numpy reference on given inputs."""
from __future__ import annotations

import numpy as np

from s3f_edge.model.spectral_filter import SpectralFilter


def numpy_spectral_filter(x: np.ndarray, layer: SpectralFilter) -> np.ndarray:
    """rfft2 -> per-frequency complex channel mix -> irfft2 at the true size -> + bias, in float64."""
    spectrum = np.fft.rfft2(np.asarray(x, np.float64).transpose(0, 3, 1, 2))
    kernel = layer.real_weights.numpy().astype(np.float64) + 1j * layer.imag_weights.numpy().astype(np.float64)
    mixed = np.einsum("bchw,cfhw->bfhw", spectrum, kernel)
    spatial = np.fft.irfft2(mixed, s=x.shape[1:3])
    return spatial.transpose(0, 2, 3, 1) + layer.bias.numpy().astype(np.float64)


def relative_l2_error(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(actual, np.float64) - expected) / np.linalg.norm(expected))


def compare_forms(x: np.ndarray, filters: int = 32, seed: int = 0) -> dict[str, float]:
    """Relative L2 error of the 'fft' and 'matmul' forms of a fresh layer on ``x``, against float64 numpy.

    Args:
        x: inputs (B, H, W, C); the layer is built for their (H, W, C) and run on them as float32.
        filters: the layer's output channels F.
        seed: Keras's global random seed, set before the layer's Glorot-uniform weights are drawn.

    Returns:
        ``{"fft": error, "matmul": error}``, each ``||y - y_ref|| / ||y_ref||`` over the whole output.
    """
    import keras

    keras.utils.set_random_seed(seed)
    layer = SpectralFilter(filters)
    layer.build((None, *x.shape[1:]))
    reference = numpy_spectral_filter(x, layer)
    errors = {}
    for mode in ("fft", "matmul"):
        layer.mode = mode
        errors[mode] = relative_l2_error(layer(x.astype(np.float32)), reference)
    return errors
