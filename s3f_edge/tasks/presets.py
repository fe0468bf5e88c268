"""``s3f-edge presets`` as one function: the original configurations, with their models' parameter counts."""
from __future__ import annotations

from s3f_edge.model.presets import PRESETS

KINDS_COUNTED = ("s3f", "baseline", "spectral")  # S3F-Net, the spatial-only baseline, the spectral-only SpectraNet


def preset_rows(count_params: bool = True) -> list[list]:
    """One row per preset: name, input (HxWxC), head, SpectraNet variant, fusion, and the parameters of each kind.

    Args:
        count_params: build every model to count its parameters (needs the training stack); else "-".

    Returns:
        The rows, in the presets' order.

    Raises:
        MissingDependencyError: ``count_params`` without Keras and TensorFlow (the ``train`` extra).
    """
    if count_params:
        from s3f_edge.dependencies import TRAINING_STACK, require

        require("counting parameters (or use --no-count-params)", "train", *TRAINING_STACK)
        from s3f_edge.model import build_model
    rows = []
    for preset in PRESETS.values():
        counts = ["-"] * len(KINDS_COUNTED)
        if count_params:
            counts = [f"{build_model(preset.name, kind=kind).count_params():,}" for kind in KINDS_COUNTED]
        height, width, channels = preset.input_shape
        head = "1 sigmoid" if preset.sigmoid_head else f"{preset.num_classes} softmax"
        rows.append([preset.name, f"{height}x{width}x{channels}", head, preset.variant.upper(), preset.fusion,
                     *counts])
    return rows
