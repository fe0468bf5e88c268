"""Floating-point operations per image, from layer shapes; the spectral layers counted two ways.

Counts multiply-adds as two operations for convolutions, dense layers and the SpectralFilter;
normalisation, activations and pooling (a few percent of the total) are left out.
"""
from __future__ import annotations

import math

import keras

from s3f_edge.model.dft import height_factors, split_factor
from s3f_edge.model.ood_score import OutOfDistributionScore
from s3f_edge.model.spectral_filter import SpectralFilter


def spectral_filter_flops(height: int, width: int, channels: int, filters: int,
                          factor_width: bool = False) -> dict[str, float]:
    """FLOPs of one SpectralFilter call on one image.

    ``fft``: rfft2d of C planes and irfft2d of F planes at 2.5 N log2 N each (half a complex FFT's
    5 N log2 N), plus the complex per-frequency mix (8 flops per complex multiply-add).
    ``matmul``: what the DFT-as-matmul form executes (s3f_edge.model.dft): along W, for even W = 2M,
    an M = p * q point complex DFT (4 real matmuls per stage, a twiddle) plus the real-signal
    combination (with ``factor_width``, as dft_plan), else dense matmuls (the default); along H a complex DFT
    factored as H = a * b from dft.FACTOR_MIN_HEIGHT up, else dense; and the mix.
    """
    n = height * width
    bins = width // 2 + 1
    mix = 8.0 * channels * filters * height * bins
    fft = 2.5 * n * math.log2(n) * (channels + filters) + mix
    a, b = height_factors(height)
    # per plane: one complex H transform over Wr columns
    along_h = 8.0 * (a + b) * height * bins + 6.0 * height * bins if a > 1 else 8.0 * height * height * bins
    if factor_width and width % 2 == 0:
        m = width // 2
        p, q = split_factor(m)
        stages = 8.0 * m * (p + q) + (6.0 * m if p > 1 else 0.0)
        along_w = height * (stages + 14.0 * (m + 1))  # + gathers' combination of Z[k] and Z[M - k]
    else:
        along_w = 4.0 * height * width * bins
    forward = channels * (along_w + along_h)
    mixing = 6.0 * filters * height * bins if channels == 1 else mix
    inverse = filters * (along_h + along_w)
    return {"fft": fft, "matmul": forward + mixing + inverse}


def model_flops(model: keras.Model) -> dict[str, float]:
    """Per-image FLOPs: ``spectral_fft``, ``spectral_matmul``, ``other``, and the two totals."""
    spectral_fft = spectral_matmul = other = 0.0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, SpectralFilter):
            counts = spectral_filter_flops(layer.height, layer.width, layer.channels, layer.filters)
            spectral_fft += counts["fft"]
            spectral_matmul += counts["matmul"]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            other += 2.0 * h * w * c * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, f = layer.output.shape
            kh, kw = layer.kernel_size
            other += 2.0 * h * w * f * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            other += 2.0 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, OutOfDistributionScore):  # pooling, whitening, distances to the class means
            for feature in layer.input:
                spatial = feature.shape[1] * feature.shape[2] if len(feature.shape) == 4 else 1
                size = feature.shape[-1]
                other += spatial * size + 2.0 * size * size + 3.0 * layer.num_classes * size
    return {"spectral_fft": spectral_fft, "spectral_matmul": spectral_matmul, "other": other,
            "total_fft": spectral_fft + other, "total_matmul": spectral_matmul + other}
