"""The two towers of S3F-Net as functional-API building blocks, as in the original code: the spatial CNN (four
convolution blocks; alone, the spatial-only baseline) and SpectraNet, the spectral branch (SN1 or SN2)."""
from __future__ import annotations

from keras import layers

from s3f_edge.model.presets import VARIANTS
from s3f_edge.model.spectral_filter import SpectralFilter

SPATIAL_BLOCKS = ((32, 0.2), (64, 0.3), (128, 0.4), (256, 0.4))


def spatial_branch(inputs):
    """Four conv blocks, GAP, Dense(512)+BN+Dropout: the 512-d spatial vector s."""
    x = inputs
    for index, (filters, dropout) in enumerate(SPATIAL_BLOCKS, start=1):
        prefix = f"spatial_block{index}"
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{prefix}_conv1")(x)
        # BN sits between the second conv and its ReLU, as in the code (not the paper figure).
        x = layers.Conv2D(filters, 3, padding="same", name=f"{prefix}_conv2")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
        x = layers.Activation("relu", name=f"{prefix}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
        x = layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="spatial_gap")(x)
    x = layers.Dense(512, activation="relu", name="spatial_dense")(x)
    x = layers.BatchNormalization(name="spatial_dense_bn")(x)
    return layers.Dropout(0.5, name="spatial_vector")(x)


def _depthwise_separable(x, filters: int, name: str):
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_pw_relu")(x)


def _spectral_filter_block(x, filters: int, index: int, mode: str):
    x = SpectralFilter(filters, mode=mode, name=f"spectral_filter{index}")(x)
    x = layers.BatchNormalization(name=f"spectral_filter{index}_bn")(x)
    return layers.ReLU(name=f"spectral_filter{index}_relu")(x)


def _funnel(x):
    """GAP -> 16 -> 4 summary head: the 4-d spectral vector f."""
    x = layers.GlobalAveragePooling2D(name="spectral_gap")(x)
    x = layers.Dense(16, activation="relu", name="spectral_dense16")(x)
    x = layers.BatchNormalization(name="spectral_dense16_bn")(x)
    x = layers.Dropout(0.1875, name="spectral_dense16_dropout")(x)
    x = layers.Dense(4, activation="relu", name="spectral_dense4")(x)
    x = layers.BatchNormalization(name="spectral_dense4_bn")(x)
    return layers.Dropout(0.3125, name="spectral_vector")(x)


def spectral_branch(inputs, variant: str = "sn1", mode: str = "fft"):
    """SpectraNet SN1 (one SpectralFilter) or SN2 (two stacked), then the funnel."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    x = _spectral_filter_block(inputs, 32, 1, mode)
    if variant == "sn1":
        x = _depthwise_separable(x, 64, "spectral_dws1")
        x = layers.MaxPooling2D(2, name="spectral_dws1_pool")(x)
    else:
        x = _spectral_filter_block(x, 64, 2, mode)
    x = _depthwise_separable(x, 128, "spectral_dws2")
    x = layers.MaxPooling2D(2, name="spectral_dws2_pool")(x)
    return _funnel(x)
