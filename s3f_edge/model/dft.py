"""Real DFT matrices that let the SpectralFilter run as plain matrix products.

The 2-D real FFT of an H x W image is a product of two dense transforms: one along
W (W -> W//2+1 bins, real input) and one along H (complex). Each is written here as
real cos/sin matrices so that the whole layer needs only MatMul, Mul, Add, Sub,
Slice, Concat and Transpose — the ops every ONNX runtime and TensorRT version run.

Both transforms are scaled by 1/sqrt(N) per axis (forward and inverse alike), which
gives exactly TensorFlow's overall 1/(H*W) on the round trip while keeping every
intermediate value at the magnitude of the input, so FP16 engines do not overflow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _angles(n: int, k: int, size: int) -> np.ndarray:
    """2*pi*(i*j mod size)/size for i < n, j < k, in float64 (the modulo keeps cos/sin exact)."""
    products = np.outer(np.arange(n, dtype=np.int64), np.arange(k, dtype=np.int64)) % size
    return 2.0 * np.pi * products / size


@dataclass(frozen=True)
class DFTMatrices:
    """Matrices for an H x W real image. Complex values are stacked [real; imag] along H."""

    forward_w_cos: np.ndarray  # (W, Wr): x @ it = Re(rfft along W)
    forward_w_sin: np.ndarray  # (W, Wr): x @ it = Im(rfft along W)
    forward_h: np.ndarray  # (2H, 2H): [[C, S], [-S, C]] applied to [Ar; Ai]
    inverse_h: np.ndarray  # (2H, 2H): [[C, -S], [S, C]] applied to [Yr; Yi]
    inverse_w_cos: np.ndarray  # (Wr, W): Re part of the Hermitian (c2r) inverse along W
    inverse_w_sin: np.ndarray  # (Wr, W): Im part of the same


def dft_matrices(height: int, width: int, dtype: str | np.dtype = "float32") -> DFTMatrices:
    """Build the DFT-as-matmul matrices for an image of ``height`` x ``width`` pixels."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    bins = width // 2 + 1
    scale_h = 1.0 / np.sqrt(height)
    scale_w = 1.0 / np.sqrt(width)

    angle_w = _angles(width, bins, width)  # (W, Wr)
    forward_w_cos = np.cos(angle_w) * scale_w
    forward_w_sin = -np.sin(angle_w) * scale_w

    angle_h = _angles(height, height, height)  # symmetric (H, H)
    cos_h, sin_h = np.cos(angle_h) * scale_h, np.sin(angle_h) * scale_h
    forward_h = np.block([[cos_h, sin_h], [-sin_h, cos_h]])
    inverse_h = np.block([[cos_h, -sin_h], [sin_h, cos_h]])

    # c2r inverse: bins other than DC (and Nyquist, for even W) stand for a conjugate pair,
    # so they count twice; the imaginary parts of DC and Nyquist drop out (sin is zero there).
    multiplicity = np.full(bins, 2.0)
    multiplicity[0] = 1.0
    if width % 2 == 0:
        multiplicity[-1] = 1.0
    angle_inv = _angles(bins, width, width)  # (Wr, W)
    inverse_w_cos = multiplicity[:, None] * np.cos(angle_inv) * scale_w
    inverse_w_sin = -multiplicity[:, None] * np.sin(angle_inv) * scale_w

    cast = lambda a: np.ascontiguousarray(a.astype(dtype))  # noqa: E731
    return DFTMatrices(
        forward_w_cos=cast(forward_w_cos),
        forward_w_sin=cast(forward_w_sin),
        forward_h=cast(forward_h),
        inverse_h=cast(inverse_h),
        inverse_w_cos=cast(inverse_w_cos),
        inverse_w_sin=cast(inverse_w_sin),
    )
