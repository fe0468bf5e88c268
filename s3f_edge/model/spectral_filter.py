"""The SpectralFilter layer: a learned full-size complex filter bank applied in Fourier space."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from s3f_edge.model.dft import DFTPlan, dft_plan
from s3f_edge.model.presets import SPECTRAL_MODES


@keras.saving.register_keras_serializable(package="s3f_edge")
class SpectralFilter(keras.layers.Layer):
    """rfft2d over (H, W) -> per-frequency complex channel mix C -> F -> irfft2d -> + bias.

    Equivalent to a circular convolution of the input with ``C * F`` learned kernels of the
    full image size. Weights are ``real_weights`` and ``imag_weights`` of shape
    ``(C, F, H, W // 2 + 1)`` (Glorot-uniform) and ``bias`` of shape ``(F,)`` (zeros), in that
    order, exactly as the original S3F-Net layer.

    Odd widths are supported (the inverse transform is told the true width), unlike the
    original code, whose inferred inverse length drops a column for odd W.

    Args:
        filters: number of output channels F (at least 1).
        mode: ``"fft"`` (the default) uses ``tf.signal`` (fast for training, TensorFlow backend only);
            ``"matmul"`` computes the same transform as real matrix products with no complex
            tensors (exportable to ONNX and TensorRT, runs on every Keras backend). The mode
            can be changed on a built layer; the weights do not change. ``"dft"`` is an export
            form: 1-D ``tf.signal`` transforms whose complex values never meet any other op, so
            s3f-edge's tf2onnx handlers turn each into a standard ONNX ``DFT`` node.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...); ``dtype`` defaults to float32, also under
            mixed precision.
    """

    def __init__(self, filters: int, mode: str = "fft", **kwargs):
        # The transform and its weights stay float32 under mixed precision: FFT sums of a
        # whole image overflow float16 and half-precision complex kernels lose the filter.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"SpectralFilter needs filters >= 1, got {filters}")
        self.filters = int(filters)
        self.mode = mode
        self._dft: DFTPlan | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in SPECTRAL_MODES:
            raise ValueError(f"SpectralFilter mode must be one of {SPECTRAL_MODES}, got {value!r}")
        self._mode = value

    def build(self, input_shape):
        if len(input_shape) != 4 or None in tuple(input_shape[1:]):
            raise ValueError(
                "SpectralFilter needs a fixed-size NHWC input (its kernels are full image size); "
                f"got shape {tuple(input_shape)}. Give the model an explicit input_shape."
            )
        _, height, width, channels = (int(d) if d is not None else None for d in input_shape)
        self.height, self.width, self.channels = height, width, channels
        self.bins = width // 2 + 1
        kernel_shape = (channels, self.filters, height, self.bins)
        self.real_weights = self.add_weight(
            name="real_weights", shape=kernel_shape, initializer="glorot_uniform"
        )
        self.imag_weights = self.add_weight(
            name="imag_weights", shape=kernel_shape, initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[2], self.filters)

    def call(self, inputs):
        """Filter ``inputs`` in the current ``mode``.

        Args:
            inputs: (B, H, W, C) images of the size the layer was built for; computed in float32.

        Returns:
            (B, H, W, F) float32 filtered maps, bias added.
        """
        inputs = ops.cast(inputs, "float32")
        if self.mode == "fft":
            return self._call_fft(inputs) + self.bias
        if self.mode == "dft":
            return self._call_dft(inputs) + self.bias
        return self._call_matmul(inputs) + self.bias

    def _require_tensorflow(self) -> None:
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                f"SpectralFilter mode={self.mode!r} uses tf.signal and needs the TensorFlow backend; "
                "use mode='matmul' on other Keras backends (same weights, same outputs)."
            )

    def _call_fft(self, inputs):
        self._require_tensorflow()
        import tensorflow as tf

        channels_first = tf.transpose(inputs, [0, 3, 1, 2])
        spectrum = tf.signal.rfft2d(channels_first)
        kernel = tf.complex(self.real_weights, self.imag_weights)
        filtered = tf.einsum("bchw,cfhw->bfhw", spectrum, kernel)
        # An explicit length keeps odd widths exact (the inferred one would be W - 1).
        spatial = tf.signal.irfft2d(filtered, fft_length=[self.height, self.width])
        return tf.transpose(spatial, [0, 2, 3, 1])

    def _plan(self) -> DFTPlan:
        if self._dft is None:
            self._dft = dft_plan(self.height, self.width, "float32")
        return self._dft

    def _call_matmul(self, inputs):
        if self._plan().half is not None:
            return self._call_matmul_w_major(inputs)
        return self._call_matmul_h_major(inputs)

    def _call_matmul_w_major(self, inputs):
        """Even W: planes laid out (W, H), so that every W-axis step (even/odd split, the half-length DFT's
        stages, the gathers that pair Z[k] with Z[M-k]) works on whole rows of H values, and the H-axis DFT
        is a left- then a right-multiplication on the last axes."""
        plan, half = self._plan(), self._plan().half
        height, bins, channels, filters = self.height, self.bins, self.channels, self.filters
        # H = h_outer * h_inner (the plan's a, b): digits (m1, m2) in space, (k1, k2) in frequency.
        h_outer, h_inner = plan.a, plan.b
        # W = 2 * half_w; the half-length DFT splits half_w = half_outer * half_inner (the half plan's M = p * q).
        half_w, half_outer, half_inner = half.m, half.p, half.q
        by_digits = (-1, channels, bins, h_outer, h_inner)
        # (B, C, W, H), W = (M, 2)
        pixels = ops.reshape(ops.transpose(inputs, (0, 3, 2, 1)), (-1, channels, half_w, 2, height))
        real, imag = ops.take(pixels, 0, axis=-2), ops.take(pixels, 1, axis=-2)  # z = even + i odd rows
        half_grid = (-1, channels, half_outer, half_inner, height)
        if half_outer > 1:
            real, imag = _left_complex(half.forward_p, real, imag, (-1, channels, half_outer, half_inner * height))
            real, imag = _complex_multiply(real, imag, _column(half.forward_twiddle), half_grid)
        else:
            real, imag = real * half.forward_p[0][0, 0], imag * half.forward_p[0][0, 0]
        real, imag = _left_complex(half.forward_q, real, imag, half_grid)
        real, imag = _real_spectrum(half, ops.reshape(real, (-1, channels, half_w, height)),
                                    ops.reshape(imag, (-1, channels, half_w, height)), axis=-2)
        # Complex DFT along H (last axis) = (m1, m2): a left-multiplication over m1, a twiddle, a right one over m2.
        if h_outer > 1:
            real, imag = _left_complex(plan.forward_a, real, imag, by_digits)
            real, imag = _complex_multiply(real, imag,
                                           (plan.forward_twiddle[0][..., 0], plan.forward_twiddle[1][..., 0]),
                                           by_digits)
        real, imag = _right_complex(ops.reshape(real, by_digits), ops.reshape(imag, by_digits), plan.forward_b)
        kernel = self._factored_kernel(h_outer, h_inner, w_major=True)
        real, imag = self._apply_kernel(ops.reshape(real, (-1, channels, bins, height)),
                                        ops.reshape(imag, (-1, channels, bins, height)), kernel)
        filter_digits = (-1, filters, bins, h_outer, h_inner)
        real, imag = _right_complex(ops.reshape(real, filter_digits), ops.reshape(imag, filter_digits),
                                    plan.inverse_b)
        if h_outer > 1:
            real, imag = _complex_multiply(real, imag,
                                           (plan.inverse_twiddle[0][..., 0], plan.inverse_twiddle[1][..., 0]),
                                           filter_digits)
            real, imag = _left_complex(plan.inverse_a, real, imag, filter_digits)
        # c2r along W: pair the bins, then the half-length inverse DFT, then interleave even and odd rows.
        real, imag = _paired_for_inverse(half, ops.reshape(real, (-1, filters, bins, height)),
                                         ops.reshape(imag, (-1, filters, bins, height)), axis=-2)
        filter_half_grid = (-1, filters, half_outer, half_inner, height)
        real, imag = _left_complex(half.inverse_q, real, imag, filter_half_grid)
        if half_outer > 1:
            real, imag = _complex_multiply(real, imag, _column(half.inverse_twiddle), filter_half_grid)
            real, imag = _left_complex(half.inverse_p, real, imag, (-1, filters, half_outer, half_inner * height))
        rows = ops.stack([ops.reshape(real, (-1, filters, half_w, height)),
                          ops.reshape(imag, (-1, filters, half_w, height))], axis=-2)
        # (B, F, W, H) -> (B, H, W, F) as two single-axis moves, each a fast transpose in ONNX Runtime
        # (one (0, 3, 2, 1) transpose takes its slow element-wise path).
        width = 2 * half_w
        planes = ops.transpose(ops.reshape(rows, (-1, filters, width, height)), (0, 1, 3, 2))
        # the two reshapes keep tf2onnx from merging the transposes
        planes = ops.reshape(ops.reshape(planes, (-1, filters * height * width)), (-1, filters, height, width))
        return ops.transpose(planes, (0, 2, 3, 1))

    def _call_matmul_h_major(self, inputs):
        plan = self._plan()
        h, bins, a, b, c, f = self.height, self.bins, plan.a, plan.b, self.channels, self.filters
        # Real DFT along W: (B, C, H, W) -> real and imaginary (B, C, H, Wr).
        real, imag = _real_dft_along_w(plan, ops.transpose(inputs, (0, 3, 1, 2)), c, h)
        # Complex DFT along H = (m1, m2), factored; every stage is a left-multiplication.
        if a > 1:
            real, imag = _left_complex(plan.forward_a, real, imag, (-1, c, a, b * bins))
            real, imag = _complex_multiply(real, imag, plan.forward_twiddle, (-1, c, a, b, bins))
        real, imag = _left_complex(plan.forward_b, real, imag, (-1, c, a, b, bins))  # (.., k1, k2, Wr)

        real, imag = self._apply_kernel(ops.reshape(real, (-1, c, h, bins)), ops.reshape(imag, (-1, c, h, bins)),
                                        self._factored_kernel(a, b))

        real, imag = _left_complex(plan.inverse_b, real, imag, (-1, f, a, b, bins))  # (.., k1, m2, Wr)
        if a > 1:
            real, imag = _complex_multiply(real, imag, plan.inverse_twiddle, (-1, f, a, b, bins))
            real, imag = _left_complex(plan.inverse_a, real, imag, (-1, f, a, b * bins))  # (.., m1, m2 Wr)
        # Hermitian inverse along W: (B, F, H, Wr) x 2 -> (B, F, H, W).
        spatial = _inverse_real_dft_along_w(plan, ops.reshape(real, (-1, f, h, bins)),
                                            ops.reshape(imag, (-1, f, h, bins)), f, h)
        return ops.transpose(spatial, (0, 2, 3, 1))

    def _factored_kernel(self, a: int, b: int, w_major: bool = False):
        """Kernel weights (C, F, H, Wr) with H permuted to the factored spectrum order (k1, k2); with
        ``w_major``, laid out (C, F, Wr, H) instead (constant-folded in an exported graph)."""

        def permute(weights):
            by_digit = ops.reshape(weights, (self.channels, self.filters, b, a, self.bins))  # k = k2 * a + k1
            order = (0, 1, 4, 3, 2) if w_major else (0, 1, 3, 2, 4)
            shape = (self.bins, self.height) if w_major else (self.height, self.bins)
            if a == 1 and not w_major:
                return weights
            return ops.reshape(ops.transpose(by_digit, order), (self.channels, self.filters, *shape))

        return permute(self.real_weights), permute(self.imag_weights)

    def _call_dft(self, inputs):
        self._require_tensorflow()
        import tensorflow as tf

        def along_h(real, imag, transform):
            # tf.signal transforms the last axis: bring H there and back around the transform.
            spectrum = transform(tf.complex(tf.transpose(real, [0, 1, 3, 2]), tf.transpose(imag, [0, 1, 3, 2])))
            return (tf.transpose(tf.math.real(spectrum), [0, 1, 3, 2]),
                    tf.transpose(tf.math.imag(spectrum), [0, 1, 3, 2]))

        spectrum = tf.signal.rfft(tf.transpose(inputs, [0, 3, 1, 2]), fft_length=[self.width])
        spec_real, spec_imag = along_h(tf.math.real(spectrum), tf.math.imag(spectrum), tf.signal.fft)
        out_real, out_imag = self._apply_kernel(spec_real, spec_imag, (self.real_weights, self.imag_weights))
        back_real, back_imag = along_h(out_real, out_imag, tf.signal.ifft)
        spatial = tf.signal.irfft(tf.complex(back_real, back_imag), fft_length=[self.width])
        return tf.transpose(spatial, [0, 2, 3, 1])

    def _apply_kernel(self, spec_real, spec_imag, kernel):
        """Spectrum (B, C, *S) as real and imaginary parts, kernel (C, F, *S) -> (B, F, *S)."""
        k_real, k_imag = kernel
        if self.channels == 1:
            # One input channel: the channel mix is an element-wise complex product per filter.
            k_real, k_imag = k_real[0], k_imag[0]
            return spec_real * k_real - spec_imag * k_imag, spec_real * k_imag + spec_imag * k_real
        # Per frequency, complex (B, C) @ (C, F) as one real batched matmul with frequencies as the batch:
        # (S, B, 2C) @ (S, 2C, 2F) -> (S, B, 2F).
        spatial_shape = tuple(spec_real.shape[2:])
        size = int(np.prod(spatial_shape))
        flat = lambda t, n: ops.transpose(ops.reshape(t, (-1, n, size)), (2, 0, 1))  # noqa: E731
        stacked = ops.concatenate([flat(spec_real, self.channels), flat(spec_imag, self.channels)], axis=-1)
        kr = ops.transpose(ops.reshape(k_real, (self.channels, self.filters, size)), (2, 0, 1))
        ki = ops.transpose(ops.reshape(k_imag, (self.channels, self.filters, size)), (2, 0, 1))
        kernel_matrix = ops.concatenate(
            [ops.concatenate([kr, ki], axis=-1), ops.concatenate([-ki, kr], axis=-1)], axis=-2
        )
        mixed = ops.transpose(ops.matmul(stacked, kernel_matrix), (1, 2, 0))  # (B, 2F, S)
        mixed = ops.reshape(mixed, (-1, 2 * self.filters, *spatial_shape))
        return mixed[:, : self.filters], mixed[:, self.filters:]

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "mode": self.mode})
        return config



def _left_complex(matrix: tuple[np.ndarray, np.ndarray], real, imag, shape: tuple[int, ...]):
    """(Mr + i Mi) @ (real + i imag) over the second-to-last axis of ``shape`` (a free reshape)."""
    m_real, m_imag = (np.reshape(m, (1,) * (len(shape) - 2) + m.shape) for m in matrix)
    real, imag = ops.reshape(real, shape), ops.reshape(imag, shape)
    return (ops.matmul(m_real, real) - ops.matmul(m_imag, imag),
            ops.matmul(m_imag, real) + ops.matmul(m_real, imag))


def _complex_multiply(real, imag, phases: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...]):
    """Element-wise complex product with broadcast ``phases``, after a free reshape to ``shape``."""
    real, imag = ops.reshape(real, shape), ops.reshape(imag, shape)
    return real * phases[0] - imag * phases[1], real * phases[1] + imag * phases[0]


def _right_complex(real, imag, matrix: tuple[np.ndarray, np.ndarray]):
    """(real + i imag) @ (Mr + i Mi) over the last axis."""
    m_real, m_imag = matrix
    return (ops.matmul(real, m_real) - ops.matmul(imag, m_imag),
            ops.matmul(real, m_imag) + ops.matmul(imag, m_real))


def _real_dft_along_w(plan: DFTPlan, pixels, channels: int, height: int):
    """Real DFT of (B, C, H, W) along W, scaled by 1/sqrt(W): real and imaginary (B, C, H, W//2+1)."""
    half = plan.half
    if half is None:  # odd W: dense matrices
        return ops.matmul(pixels, plan.forward_w[0]), ops.matmul(pixels, plan.forward_w[1])
    m, p, q = half.m, half.p, half.q
    pairs = ops.reshape(pixels, (-1, channels, height, m, 2))
    real, imag = ops.take(pairs, 0, axis=-1), ops.take(pairs, 1, axis=-1)  # z = even + i odd pixels
    grid = (-1, channels, height, p, q)
    if p > 1:
        real, imag = _left_complex(half.forward_p, real, imag, grid)
        real, imag = _complex_multiply(real, imag, half.forward_twiddle, grid)
    else:  # a prime M: one dense DFT of length q = M; the 1 x 1 first stage is just the scale
        real, imag = (ops.reshape(real, grid) * half.forward_p[0][0, 0],
                      ops.reshape(imag, grid) * half.forward_p[0][0, 0])
    real, imag = _right_complex(real, imag, half.forward_q)
    real, imag = ops.reshape(real, (-1, channels, height, m)), ops.reshape(imag, (-1, channels, height, m))
    # Z[k] and conj(Z[M - k]) give the DFTs of the even (E) and odd (O) pixels; X[k] = E[k] + e^{-2 pi i k / W} O[k].
    a_real, a_imag = ops.take(real, half.forward_take, axis=-1), ops.take(imag, half.forward_take, axis=-1)
    b_real, b_imag = (ops.take(real, half.forward_take_mirror, axis=-1),
                      ops.take(imag, half.forward_take_mirror, axis=-1))
    even_real, even_imag = (a_real + b_real) * 0.5, (a_imag - b_imag) * 0.5
    odd_real, odd_imag = (a_imag + b_imag) * 0.5, (b_real - a_real) * 0.5
    cos, sin = half.forward_phase
    return (even_real + cos * odd_real - sin * odd_imag, even_imag + cos * odd_imag + sin * odd_real)


def _inverse_real_dft_along_w(plan: DFTPlan, real, imag, filters: int, height: int):
    """c2r of (B, F, H, W//2+1) along W, scaled by 1/sqrt(W): (B, F, H, W); DC's and Nyquist's imaginary parts drop."""
    half = plan.half
    if half is None:  # odd W: dense matrices
        return ops.matmul(real, plan.inverse_w[0]) + ops.matmul(imag, plan.inverse_w[1])
    m, p, q = half.m, half.p, half.q
    imag = imag * half.imag_mask
    # Z = E + i O in the permuted order, where E[k] = Y[k] + conj(Y[M-k]),
    # O[k] = (Y[k] - conj(Y[M-k])) e^{2 pi i k / W}.
    a_real, a_imag = ops.take(real, half.inverse_take, axis=-1), ops.take(imag, half.inverse_take, axis=-1)
    b_real, b_imag = (ops.take(real, half.inverse_take_mirror, axis=-1),
                      ops.take(imag, half.inverse_take_mirror, axis=-1))
    difference_real, difference_imag = a_real - b_real, a_imag + b_imag
    cos, sin = half.inverse_phase
    odd_real, odd_imag = difference_real * cos - difference_imag * sin, difference_real * sin + difference_imag * cos
    grid = (-1, filters, height, p, q)
    real = ops.reshape(a_real + b_real - odd_imag, grid)
    imag = ops.reshape(a_imag - b_imag + odd_real, grid)
    real, imag = _right_complex(real, imag, half.inverse_q)
    if p > 1:
        real, imag = _complex_multiply(real, imag, half.inverse_twiddle, grid)
        real, imag = _left_complex(half.inverse_p, real, imag, grid)
    # z[m] = y[2m] + i y[2m+1]: interleave the two parts back into pixels.
    pixels = ops.stack([ops.reshape(real, (-1, filters, height, m)), ops.reshape(imag, (-1, filters, height, m))],
                       axis=-1)
    return ops.reshape(pixels, (-1, filters, height, 2 * m))


def _column(pair: tuple[np.ndarray, np.ndarray]):
    """A (p, q) constant as (p, q, 1), to broadcast over a trailing axis."""
    return pair[0][..., None], pair[1][..., None]


def _real_spectrum(half, real, imag, axis: int):
    """From the half-length DFT Z (permuted order along ``axis``) to the W//2+1 bins of the real DFT:
    X[k] = E[k] + e^{-2 pi i k / W} O[k], E and O from Z[k] and conj(Z[M - k])."""
    shape = (-1, 1) if axis == -2 else (-1,)
    a_real, a_imag = ops.take(real, half.forward_take, axis=axis), ops.take(imag, half.forward_take, axis=axis)
    b_real, b_imag = (ops.take(real, half.forward_take_mirror, axis=axis),
                      ops.take(imag, half.forward_take_mirror, axis=axis))
    even_real, even_imag = (a_real + b_real) * 0.5, (a_imag - b_imag) * 0.5
    odd_real, odd_imag = (a_imag + b_imag) * 0.5, (b_real - a_real) * 0.5
    cos, sin = (np.reshape(v, shape) for v in half.forward_phase)
    return even_real + cos * odd_real - sin * odd_imag, even_imag + cos * odd_imag + sin * odd_real


def _paired_for_inverse(half, real, imag, axis: int):
    """Bins 0..W//2 along ``axis`` -> Z = E + i O in the permuted order the half-length inverse DFT takes;
    the imaginary parts of DC and Nyquist drop out, as in a c2r transform."""
    shape = (-1, 1) if axis == -2 else (-1,)
    imag = imag * np.reshape(half.imag_mask, shape)
    a_real, a_imag = ops.take(real, half.inverse_take, axis=axis), ops.take(imag, half.inverse_take, axis=axis)
    b_real, b_imag = (ops.take(real, half.inverse_take_mirror, axis=axis),
                      ops.take(imag, half.inverse_take_mirror, axis=axis))
    difference_real, difference_imag = a_real - b_real, a_imag + b_imag
    cos, sin = (np.reshape(v, shape) for v in half.inverse_phase)
    odd_real, odd_imag = difference_real * cos - difference_imag * sin, difference_real * sin + difference_imag * cos
    return a_real + b_real - odd_imag, a_imag - b_imag + odd_real
