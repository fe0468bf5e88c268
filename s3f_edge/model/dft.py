"""Real matrices that let the SpectralFilter run as plain matrix products, FFT-factored along H.

The 2-D real FFT of an H x W image is a real DFT along W (W -> W//2+1 bins) followed by a complex
DFT along H. Written as matrices, the layer needs only MatMul, Mul, Add, Sub, Reshape and
Transpose — ops every ONNX runtime and TensorRT version runs — and no complex tensors: real and
imaginary parts travel as two real tensors.

The complex DFT along H is factored once, Cooley-Tukey style, as H = a * b: a size-a DFT, a
twiddle multiply, a size-b DFT, each a left-multiplication on a contiguous reshape of the tensor,
so no transpose is needed. That costs O(H (a + b)) per column instead of the dense O(H^2). The
spectrum comes out in the factored order (k1, k2) for k = k1 + a * k2, the kernel weights are
permuted to match, and the inverse returns to natural order. A prime H, or one below
FACTOR_MIN_HEIGHT (where the small stages ran slower than the dense product), uses one dense DFT.

Along W the default is one dense real-DFT matrix (W x (W//2+1)). The optional factored path
(``factor_width=True``) sends an even width W = 2M through one complex DFT of half the length (the
classic trick for real signals): the even and odd pixels become the real and imaginary parts of an
M-point complex signal, whose DFT is factored M = p * q in the same way; a few element-wise operations
and two gathers then give the W//2+1 bins of the real DFT, and the inverse runs the same steps
backwards (imaginary parts of DC and Nyquist dropped, as a c2r transform does). That is O(W (p + q))
work per row instead of O(W^2); in ONNX Runtime on the CPU it was faster at batch 1 and slower at batch
32 (see dft_plan).

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


# Measured in ONNX Runtime on the CPU (bundled 64x64 model and brisc2025 at 128 and 256): the factored H
# transform ran 7-10 % slower than the dense one at H = 64 (its 8 x 8 stages are too small to run near the
# GEMM rate), 2-6 % faster at 128 and 20-30 % faster at 256.
FACTOR_MIN_HEIGHT = 128


def height_factors(height: int, factor: bool | None = None) -> tuple[int, int]:
    """(a, b) with H = a * b for the H transform; (1, H) is the dense DFT. ``factor=None``: factored from
    FACTOR_MIN_HEIGHT up."""
    factor = height >= FACTOR_MIN_HEIGHT if factor is None else factor
    return split_factor(height) if factor else (1, height)


def split_factor(n: int) -> tuple[int, int]:
    """n = a * b with a the largest divisor <= sqrt(n) (a = 1 for primes: a dense DFT)."""
    a = int(np.sqrt(n))
    while n % a:
        a -= 1
    return a, n // a


@dataclass(frozen=True)
class HalfLengthPlan:
    """The real DFT along an even W = 2M as an M = p * q point complex DFT, and its c2r inverse.

    Forward: z = x[0::2] + i x[1::2] in natural order on a (p, q) reshape; P (left), twiddle, Q (right)
    leave frequency f at flat position (f % p) * q + f // p; gathers and element-wise terms give X[0..M].
    Inverse: bins 0..M are gathered into that same permuted order (position r * q + s holds frequency
    r + p * s), then Q (right), twiddle, P (left) return z in natural order: y[2m] + i y[2m+1].
    """

    m: int
    p: int
    q: int
    forward_p: tuple[np.ndarray, np.ndarray]  # (p, p), carries 1/sqrt(W)
    forward_twiddle: tuple[np.ndarray, np.ndarray]  # (p, q)
    forward_q: tuple[np.ndarray, np.ndarray]  # (q, q)
    forward_take: np.ndarray  # (M+1,) positions of Z[k mod M]
    forward_take_mirror: np.ndarray  # (M+1,) positions of Z[(M - k) mod M]
    forward_phase: tuple[np.ndarray, np.ndarray]  # (M+1,) cos, sin of -2 pi k / W
    inverse_take: np.ndarray  # (M,) the bin k held at each permuted position
    inverse_take_mirror: np.ndarray  # (M,) the bin M - k
    inverse_phase: tuple[np.ndarray, np.ndarray]  # (M,) cos, sin of +2 pi k / W
    imag_mask: np.ndarray  # (M+1,) 0 at DC and Nyquist, whose imaginary parts a c2r transform ignores
    inverse_q: tuple[np.ndarray, np.ndarray]  # (q, q), carries 1/sqrt(W)
    inverse_twiddle: tuple[np.ndarray, np.ndarray]  # (p, q)
    inverse_p: tuple[np.ndarray, np.ndarray]  # (p, p)


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
    half: HalfLengthPlan | None = None  # even W: the factored path replaces forward_w / inverse_w

    @property
    def bins(self) -> int:
        return self.width // 2 + 1


def dft_plan(height: int, width: int, dtype: str | np.dtype = "float32", factor_height: bool | None = None,
             factor_width: bool = False) -> DFTPlan:
    """Build the DFT-as-matmul constants for an image of ``height`` x ``width`` pixels.

    The default factors H from FACTOR_MIN_HEIGHT up and keeps W dense. Measured in ONNX Runtime on the CPU
    (benchmarks/ratios.py), the factored W path does 2.7x fewer FLOPs at 256 x 256 and ran the block faster at
    batch 1, but slower at
    batch 32 (the batch `infer` uses), where its gathers, small matrix products and extra element-wise passes
    over large tensors cost more than the dense product saves. ``factor_width=True`` selects it
    (for runtimes where it may pay, and for the benchmarks); ``factor_height`` True/False forces the H
    transform's form (False with a dense W: the first, fully dense form). Every form computes the same outputs.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    bins = width // 2 + 1
    a, b = height_factors(height, factor_height)
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
        half=half_length_plan(width, pair) if factor_width and width % 2 == 0 else None,
    )


def half_length_plan(width: int, pair) -> HalfLengthPlan:
    """Constants of the half-length complex path along an even ``width``; ``pair`` splits complex matrices."""
    m = width // 2
    p, q = split_factor(m)
    scale = 1.0 / np.sqrt(width)
    frequencies = np.arange(m + 1)
    position = lambda f: (f % p) * q + f // p  # noqa: E731  (where the forward leaves frequency f)
    permuted = np.add.outer(np.arange(p), p * np.arange(q)).reshape(-1)  # frequency at position r * q + s
    forward_angle, inverse_angle = -2 * np.pi * frequencies / width, 2 * np.pi * permuted / width
    mask = np.ones(m + 1)
    mask[[0, m]] = 0.0
    real = lambda values: np.ascontiguousarray(values, dtype=pair(np.zeros(1))[0].dtype)  # noqa: E731
    return HalfLengthPlan(
        m=m, p=p, q=q,
        forward_p=pair(_phases(p, p, p, -1.0) * scale),
        forward_twiddle=pair(_phases(p, q, m, -1.0)),
        forward_q=pair(_phases(q, q, q, -1.0)),
        forward_take=position(frequencies % m).astype(np.int64),
        forward_take_mirror=position((m - frequencies) % m).astype(np.int64),
        forward_phase=(real(np.cos(forward_angle)), real(np.sin(forward_angle))),
        inverse_take=permuted.astype(np.int64),
        inverse_take_mirror=(m - permuted).astype(np.int64),
        inverse_phase=(real(np.cos(inverse_angle)), real(np.sin(inverse_angle))),
        imag_mask=real(mask),
        inverse_q=pair(_phases(q, q, q, 1.0) * scale),
        inverse_twiddle=pair(_phases(p, q, m, 1.0)),
        inverse_p=pair(_phases(p, p, p, 1.0)),
    )
