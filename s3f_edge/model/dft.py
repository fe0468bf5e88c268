"""Real matrices that let the SpectralFilter run as plain matrix products, FFT-factored along H.

The 2-D real FFT of an H x W image is a real DFT along W (W -> W//2+1 bins) followed by a complex
DFT along H. Written as matrices, the layer needs only MatMul, Mul, Add, Sub, Reshape and
Transpose — ops every ONNX runtime and TensorRT version runs — and no complex tensors: real and
imaginary parts travel as two real tensors.

The complex DFT along H is factored once, Cooley-Tukey style, as H = a * b: a size-a DFT, a
twiddle multiply, a size-b DFT, each a left-multiplication on a contiguous reshape of the tensor,
so no transpose is needed. That costs O(H (a + b)) per column instead of the dense O(H^2). The
spectrum comes out in the factored order (k1, k2) for k = k1 + a * k2, the kernel weights are
permuted to match, and the inverse returns to natural order. A prime H uses one dense DFT.

Forward and inverse are each scaled by 1/sqrt(H * W), which gives TensorFlow's 1/(H * W) on the
round trip while keeping intermediate values at the input's magnitude (no FP16 overflow).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _phases(rows: int, cols: int, size: int, sign: float) -> np.ndarray:
    """exp(sign * 2 pi i * (r * c mod size) / size), complex128 (the modulo keeps angles exact)."""
    products = np.outer(np.arange(rows, dtype=np.int64), np.arange(cols, dtype=np.int64)) % size
    return np.exp(sign * 2j * np.pi * products / size)


def split_factor(n: int) -> tuple[int, int]:
    """n = a * b with a the largest divisor <= sqrt(n) (a = 1 for primes: a dense DFT)."""
    a = int(np.sqrt(n))
    while n % a:
        a -= 1
    return a, n // a


@dataclass(frozen=True)
class DFTPlan:
    """Constants for an H x W real image; complex matrices as (real, imaginary) pairs."""

    height: int
    width: int
    a: int  # H = a * b; a = 1 means a dense DFT of size b = H
    b: int
    forward_w: tuple[np.ndarray, np.ndarray]  # (W, Wr): x @ them = Re, Im of the real DFT along W
    forward_a: tuple[np.ndarray, np.ndarray]  # (a, a): left-multiplies the m1 axis -> k1
    forward_twiddle: tuple[np.ndarray, np.ndarray]  # (a, b, 1): phases at (k1, m2)
    forward_b: tuple[np.ndarray, np.ndarray]  # (b, b): left-multiplies the m2 axis -> k2
    inverse_b: tuple[np.ndarray, np.ndarray]  # (b, b): k2 -> m2
    inverse_twiddle: tuple[np.ndarray, np.ndarray]  # (a, b, 1): phases at (k1, m2)
    inverse_a: tuple[np.ndarray, np.ndarray]  # (a, a): k1 -> m1
    inverse_w: tuple[np.ndarray, np.ndarray]  # (Wr, W): zr @ first + zi @ second = c2r along W

    @property
    def bins(self) -> int:
        return self.width // 2 + 1


def dft_plan(height: int, width: int, dtype: str | np.dtype = "float32") -> DFTPlan:
    """Build the factored DFT-as-matmul constants for an image of ``height`` x ``width`` pixels."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    bins = width // 2 + 1
    a, b = split_factor(height)
    scale_w, scale_h = 1.0 / np.sqrt(width), 1.0 / np.sqrt(height)

    def pair(matrix):
        return (np.ascontiguousarray(matrix.real.astype(dtype)), np.ascontiguousarray(matrix.imag.astype(dtype)))

    # c2r along W: bins other than DC (and Nyquist, for even W) stand for a conjugate pair, so they
    # count twice; the imaginary parts of DC and Nyquist drop out (their sine row is zero).
    multiplicity = np.full(bins, 2.0)
    multiplicity[0] = 1.0
    if width % 2 == 0:
        multiplicity[-1] = 1.0
    back_w = multiplicity[:, None] * _phases(bins, width, width, 1.0) * scale_w  # (Wr, W)
    return DFTPlan(
        height=height, width=width, a=a, b=b,
        forward_w=pair(_phases(width, bins, width, -1.0) * scale_w),
        forward_a=pair(_phases(a, a, a, -1.0)),
        forward_twiddle=pair(_phases(a, b, height, -1.0)[:, :, None]),
        # The size-b stages always run (for a prime H they are the whole DFT), so they carry 1/sqrt(H).
        forward_b=pair(_phases(b, b, b, -1.0) * scale_h),
        inverse_b=pair(_phases(b, b, b, 1.0) * scale_h),
        inverse_twiddle=pair(_phases(a, b, height, 1.0)[:, :, None]),
        inverse_a=pair(_phases(a, a, a, 1.0)),
        inverse_w=(np.ascontiguousarray(back_w.real.astype(dtype)), np.ascontiguousarray(-back_w.imag.astype(dtype))),
    )
