"""The SpectralFilter layer: a learned full-size complex filter bank applied in Fourier space."""
from __future__ import annotations

import keras
from keras import ops

from s3f_edge.model.dft import DFTMatrices, dft_matrices

SPECTRAL_MODES = ("fft", "matmul", "dft")


@keras.saving.register_keras_serializable(package="s3f_edge")
class SpectralFilter(keras.layers.Layer):
    """rfft2d over (H, W) -> per-frequency complex channel mix C -> F -> irfft2d -> + bias.

    Equivalent to a circular convolution of the input with ``C * F`` learned kernels of the
    full image size. Weights are ``real_weights`` and ``imag_weights`` of shape
    ``(C, F, H, W // 2 + 1)`` (Glorot-uniform) and ``bias`` of shape ``(F,)`` (zeros), in that
    order, exactly as the original S3F-Net layer.

    Args:
        filters: number of output channels F.
        mode: ``"fft"`` uses ``tf.signal`` (fast for training, TensorFlow backend only);
            ``"matmul"`` computes the same transform as real matrix products with no complex
            tensors (exportable to ONNX and TensorRT, runs on every Keras backend). The mode
            can be changed on a built layer; the weights do not change. ``"dft"`` is an export
            form: 1-D ``tf.signal`` transforms whose complex values never meet any other op, so
            s3f-edge's tf2onnx handlers turn each into a standard ONNX ``DFT`` node.

    Odd widths are supported (the inverse transform is told the true width), unlike the
    original code, whose inferred inverse length drops a column for odd W.
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
        self._dft: DFTMatrices | None = None

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

    def _matrices(self) -> DFTMatrices:
        if self._dft is None:
            self._dft = dft_matrices(self.height, self.width, "float32")
        return self._dft

    def _call_matmul(self, inputs):
        dft = self._matrices()
        h = self.height
        channels_first = ops.transpose(inputs, (0, 3, 1, 2))  # (B, C, H, W)

        # Forward transform, complex values stacked [real; imag] along H: (B, C, 2H, Wr).
        along_w = ops.concatenate(
            [ops.matmul(channels_first, dft.forward_w_cos), ops.matmul(channels_first, dft.forward_w_sin)],
            axis=2,
        )
        spectrum = ops.matmul(dft.forward_h, along_w)
        spec_real, spec_imag = spectrum[:, :, :h], spectrum[:, :, h:]

        out_real, out_imag = self._apply_kernel(spec_real, spec_imag)

        # Inverse along H (complex), then the Hermitian inverse along W to real pixels.
        along_h = ops.matmul(dft.inverse_h, ops.concatenate([out_real, out_imag], axis=2))
        spatial = ops.matmul(along_h[:, :, :h], dft.inverse_w_cos) + ops.matmul(
            along_h[:, :, h:], dft.inverse_w_sin
        )
        return ops.transpose(spatial, (0, 2, 3, 1))

    def _call_dft(self, inputs):
        self._require_tensorflow()
        import tensorflow as tf

        def along_h(real, imag, transform):
            # tf.signal transforms the last axis: bring H there and back around the transform.
            spectrum = transform(tf.complex(tf.transpose(real, [0, 1, 3, 2]), tf.transpose(imag, [0, 1, 3, 2])))
            return tf.transpose(tf.math.real(spectrum), [0, 1, 3, 2]), tf.transpose(tf.math.imag(spectrum), [0, 1, 3, 2])

        spectrum = tf.signal.rfft(tf.transpose(inputs, [0, 3, 1, 2]), fft_length=[self.width])
        spec_real, spec_imag = along_h(tf.math.real(spectrum), tf.math.imag(spectrum), tf.signal.fft)
        out_real, out_imag = self._apply_kernel(spec_real, spec_imag)
        back_real, back_imag = along_h(out_real, out_imag, tf.signal.ifft)
        spatial = tf.signal.irfft(tf.complex(back_real, back_imag), fft_length=[self.width])
        return tf.transpose(spatial, [0, 2, 3, 1])

    def _apply_kernel(self, spec_real, spec_imag):
        """(B, C, H, Wr) spectrum, as real and imaginary parts -> (B, F, H, Wr) filtered spectrum."""
        if self.channels == 1:
            # One input channel: the channel mix is an element-wise complex product per filter.
            k_real, k_imag = self.real_weights[0], self.imag_weights[0]  # (F, H, Wr)
            return spec_real * k_real - spec_imag * k_imag, spec_real * k_imag + spec_imag * k_real
        return self._mix_channels(spec_real, spec_imag)

    def _mix_channels(self, spec_real, spec_imag):
        """Per-frequency complex (B, C) @ (C, F) as one real batched matmul over frequencies."""
        # Frequencies become the batch: (H, Wr, B, 2C) @ (H, Wr, 2C, 2F) -> (H, Wr, B, 2F).
        stacked = ops.transpose(ops.concatenate([spec_real, spec_imag], axis=1), (2, 3, 0, 1))
        k_real = ops.transpose(self.real_weights, (2, 3, 0, 1))
        k_imag = ops.transpose(self.imag_weights, (2, 3, 0, 1))
        kernel = ops.concatenate(
            [ops.concatenate([k_real, k_imag], axis=-1), ops.concatenate([-k_imag, k_real], axis=-1)],
            axis=-2,
        )
        mixed = ops.transpose(ops.matmul(stacked, kernel), (2, 3, 0, 1))  # (B, 2F, H, Wr)
        return mixed[:, : self.filters], mixed[:, self.filters :]

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "mode": self.mode})
        return config
