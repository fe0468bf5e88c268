"""tf2onnx handlers that turn SpectralFilter's "dft" form into standard ONNX DFT nodes.

tf2onnx converts an FFT only when ``abs`` follows it and has no inverse-FFT handler. The
SpectralFilter's ``dft`` form uses only RFFT, FFT, IFFT and IRFFT over the last axis, with complex
values that meet nothing but Complex, Real and Imag. These handlers map each of those seven ops
onto real tensors with a trailing axis of 2 ([real, imag]), ONNX's own layout for DFT:

- Complex(re, im) -> Concat of the two along a new last axis
- Real(z), Imag(z) -> Gather index 0 or 1 of the last axis
- RFFT(x)  -> DFT(onesided=1) on x[..., None]
- FFT(z), IFFT(z) -> DFT(inverse=0|1) (ONNX's inverse scales by 1/N, as TensorFlow's)
- IRFFT(z) -> Hermitian extension of the half spectrum, DFT(inverse=1), real part. (DFT-17 and -18
  define no one-sided inverse; the extension gives exactly the c2r result, which ignores the
  imaginary parts of the DC and Nyquist bins.)

The transforms run over axis -2 of the [..., N, 2] layout, i.e. TensorFlow's last axis.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

COMPLEX_OPS = ("Complex", "Real", "Imag", "RFFT", "FFT", "IFFT", "IRFFT")


def _fft_length(ctx, node) -> int:
    length_node = node.inputs[1]
    if not length_node.is_const():
        raise ValueError(f"{node.name}: the FFT length must be a constant to export as ONNX DFT")
    return int(np.asarray(length_node.get_tensor_value(as_list=True)).reshape(-1)[0])


def _become(ctx, node, source_output: str, shape) -> None:
    """Turn the TensorFlow node into an Identity of ``source_output`` (a real tensor)."""
    ctx.replace_inputs(node, [source_output])
    node.type = "Identity"
    node.domain = ""
    for key in list(node.attr):
        del node.attr[key]
    ctx.set_dtype(node.output[0], TensorProto.FLOAT)
    ctx.set_shape(node.output[0], shape)


def _shape(ctx, name):
    shape = ctx.get_shape(name)
    return list(shape) if shape is not None else None


def _complex_shape(ctx, node, last: int | None = None):
    """Shape of a TF complex tensor as [..., N, 2]."""
    shape = _shape(ctx, node.output[0])
    if shape is None:
        return None
    if last is not None:
        shape[-1] = last
    return shape + [2]


def _unsqueeze_last(ctx, node, name: str) -> str:
    axes = ctx.make_const(_unique(node, "axes"), np.array([-1], np.int64)).output[0]
    return ctx.make_node("Unsqueeze", [name, axes], op_name_scope=node.name).output[0]


_counter = [0]


def _unique(node, prefix: str) -> str:
    """A fresh name under the TensorFlow node's scope, which carries the Keras layer's name."""
    _counter[0] += 1
    return f"{node.name}/s3f_dft_{prefix}_{_counter[0]}"


def complex_handler(ctx, node, name, args):
    real, imag = node.input[0], node.input[1]
    stacked = ctx.make_node("Concat", [_unsqueeze_last(ctx, node, real), _unsqueeze_last(ctx, node, imag)],
                            attr={"axis": -1}, op_name_scope=node.name)
    _become(ctx, node, stacked.output[0], _complex_shape(ctx, node))


def _part_handler(index: int):
    def handler(ctx, node, name, args):
        which = ctx.make_const(_unique(node, "part"), np.array(index, np.int64)).output[0]
        part = ctx.make_node("Gather", [node.input[0], which], attr={"axis": -1}, op_name_scope=node.name)
        _become(ctx, node, part.output[0], _shape(ctx, node.output[0]))

    return handler


def rfft_handler(ctx, node, name, args):
    length = _fft_length(ctx, node)
    input_shape = _shape(ctx, node.input[0])
    if input_shape is not None and input_shape[-1] not in (-1, length):
        raise ValueError(f"{node.name}: RFFT with padding or cropping is not supported")
    dft = ctx.make_node("DFT", [_unsqueeze_last(ctx, node, node.input[0])],
                        attr={"axis": -2, "onesided": 1, "inverse": 0}, op_name_scope=node.name)
    _become(ctx, node, dft.output[0], _complex_shape(ctx, node, length // 2 + 1))


def _full_dft_handler(inverse: int):
    def handler(ctx, node, name, args):
        dft = ctx.make_node("DFT", [node.input[0]], attr={"axis": -2, "onesided": 0, "inverse": inverse},
                            op_name_scope=node.name)
        _become(ctx, node, dft.output[0], _complex_shape(ctx, node))

    return handler


def irfft_handler(ctx, node, name, args):
    length = _fft_length(ctx, node)
    bins = length // 2 + 1
    half = node.input[0]  # [..., bins, 2]
    half_shape = _shape(ctx, half)
    if half_shape is not None and half_shape[-2] not in (-1, bins):
        raise ValueError(f"{node.name}: IRFFT input has {half_shape[-2]} bins, expected {bins} for length {length}")
    # Bins bins..length-1 are the conjugates of bins length-bins..1, in that order.
    mirror_index = ctx.make_const(_unique(node, "mirror"), np.arange(length - bins, 0, -1, dtype=np.int64)).output[0]
    mirrored = ctx.make_node("Gather", [half, mirror_index], attr={"axis": -2}, op_name_scope=node.name).output[0]
    conjugate = ctx.make_const(_unique(node, "conj"), np.array([1.0, -1.0], np.float32)).output[0]
    mirrored = ctx.make_node("Mul", [mirrored, conjugate], op_name_scope=node.name).output[0]
    full = ctx.make_node("Concat", [half, mirrored], attr={"axis": -2}, op_name_scope=node.name).output[0]
    spatial = ctx.make_node("DFT", [full], attr={"axis": -2, "onesided": 0, "inverse": 1},
                            op_name_scope=node.name).output[0]
    real_index = ctx.make_const(_unique(node, "real"), np.array(0, np.int64)).output[0]
    real = ctx.make_node("Gather", [spatial, real_index], attr={"axis": -1}, op_name_scope=node.name)
    _become(ctx, node, real.output[0], _shape(ctx, node.output[0]))


def dft_op_handlers() -> dict:
    """The ``custom_op_handlers`` argument for tf2onnx's convert functions."""
    return {
        "Complex": (complex_handler, []),
        "Real": (_part_handler(0), []),
        "Imag": (_part_handler(1), []),
        "RFFT": (rfft_handler, []),
        "FFT": (_full_dft_handler(0), []),
        "IFFT": (_full_dft_handler(1), []),
        "IRFFT": (irfft_handler, []),
    }
