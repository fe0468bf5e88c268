"""build_model: S3F-Net, the spatial-only baseline and the spectral-only model."""
from __future__ import annotations

import keras
from keras import layers

from s3f_edge.errors import InputError
from s3f_edge.model.bilinear_fusion import BilinearFusion
from s3f_edge.model.blocks import spatial_branch, spectral_branch
from s3f_edge.model.presets import FUSIONS, KINDS, SPECTRAL_MODES, VARIANTS, get_preset


def build_model(
    preset: str | None = None,
    *,
    kind: str = "s3f",
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    variant: str | None = None,
    fusion: str | None = None,
    sigmoid_head: bool | None = None,
    spectral_mode: str = "fft",
    name: str | None = None,
) -> keras.Model:
    """Build an S3F-Net family model.

    A ``preset`` (brisc2025, chest-xray, busi, ham10000) fills every option; explicit
    arguments override it. Without a preset, ``input_shape`` and ``num_classes`` are required
    and the defaults are SN1 with concatenation and a softmax head.

    Args:
        preset: a preset name (``presets.PRESETS``); None: every option is given explicitly.
        kind: ``"s3f"`` (both towers), ``"baseline"`` (spatial only) or ``"spectral"`` (spectral only).
        input_shape: (H, W, C), H and W at least 16; the SpectralFilter is tied to this size. None: the preset's.
        num_classes: K, at least 2. With ``sigmoid_head`` (binary only) the head is one sigmoid unit. None: the
            preset's.
        variant: ``"sn1"`` or ``"sn2"`` SpectraNet. None: the preset's, else ``"sn1"``.
        fusion: ``"concat"`` (516-d) or ``"bilinear"`` (2048-d), for ``kind="s3f"``. None: the preset's, else
            ``"concat"``.
        sigmoid_head: one sigmoid unit instead of a softmax (``num_classes=2`` only). None: the preset's choice for
            a binary model, else False.
        spectral_mode: ``"fft"``, ``"matmul"`` or ``"dft"`` for every SpectralFilter (same weights).
        name: the model's name. None: one derived from ``kind``, ``fusion`` and ``variant``.

    Returns:
        An uncompiled ``keras.Model`` with input ``image`` and output layer ``probs``: (N, K) softmax
        probabilities, or (N, 1) for a sigmoid head.

    Raises:
        InputError: an unknown preset or option, no input shape or class count, or an invalid one.
    """
    base = get_preset(preset) if preset else None
    input_shape = tuple(input_shape) if input_shape is not None else (base.input_shape if base else None)
    num_classes = num_classes if num_classes is not None else (base.num_classes if base else None)
    variant = variant or (base.variant if base else "sn1")
    fusion = fusion or (base.fusion if base else "concat")
    if sigmoid_head is None:
        sigmoid_head = bool(base and base.sigmoid_head and num_classes == 2)

    _check_options(input_shape, num_classes, kind, variant, fusion, spectral_mode, sigmoid_head)
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = _head(_features(inputs, kind, variant, fusion, spectral_mode), num_classes, sigmoid_head)
    if name is None:
        name = {"s3f": f"s3f_net_{fusion}_{variant}", "baseline": "spatial_baseline",
                "spectral": f"spectranet_{variant}"}[kind]
    return keras.Model(inputs, outputs, name=name)


def _check_options(input_shape: tuple | None, num_classes: int | None, kind: str, variant: str, fusion: str,
                   spectral_mode: str, sigmoid_head: bool) -> None:
    """Refuse what ``build_model`` cannot build, each with its own message (its arguments, resolved).

    Raises:
        InputError: no input shape or class count, or an invalid option.
    """
    if input_shape is None or num_classes is None:
        raise InputError("build_model needs a preset, or both input_shape=(H, W, C) and num_classes")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise InputError(f"input_shape must be (H, W, C) with positive sizes, got {input_shape}")
    height, width, _ = input_shape
    if height < 16 or width < 16:
        raise InputError(f"input must be at least 16x16 (four 2x2 poolings), got {height}x{width}")
    for option, value, allowed in (("kind", kind, KINDS), ("variant", variant, VARIANTS), ("fusion", fusion, FUSIONS),
                                   ("spectral_mode", spectral_mode, SPECTRAL_MODES)):
        if value not in allowed:
            raise InputError(f"{option} must be one of {allowed}, got {value!r}")
    if num_classes < 2:
        raise InputError(f"num_classes must be at least 2, got {num_classes}")
    if sigmoid_head and num_classes != 2:
        raise InputError("a sigmoid head is only for binary models (num_classes=2)")


def _features(inputs, kind: str, variant: str, fusion: str, spectral_mode: str):
    """The feature vector of ``kind``: the spatial tower, the spectral tower, or both fused."""
    if kind == "baseline":
        return spatial_branch(inputs)
    if kind == "spectral":
        return spectral_branch(inputs, variant, spectral_mode)
    spatial = spatial_branch(inputs)
    spectral = spectral_branch(inputs, variant, spectral_mode)
    if fusion == "bilinear":
        return BilinearFusion(name="bilinear_fusion")([spatial, spectral])
    return layers.Concatenate(name="concat_fusion")([spatial, spectral])


def _head(features, num_classes: int, sigmoid_head: bool):
    """The ``probs`` layer: one sigmoid unit, or a softmax over ``num_classes``."""
    # Under a mixed-precision policy the probabilities are still computed in float32.
    head_dtype = "float32" if keras.mixed_precision.global_policy().name.startswith("mixed") else None
    if sigmoid_head:
        return layers.Dense(1, activation="sigmoid", name="probs", dtype=head_dtype)(features)
    return layers.Dense(num_classes, activation="softmax", name="probs", dtype=head_dtype)(features)
