"""The original work's four per-dataset configurations (input size, classes, spectral branch, fusion, epochs and
patiences), as the paper's code sets them."""
from __future__ import annotations

from dataclasses import dataclass

from s3f_edge.errors import InputError

# The choices of the model family (plain constants: the CLI reads them without importing Keras).
KINDS = ("s3f", "baseline", "spectral")
FUSIONS = ("concat", "bilinear")
VARIANTS = ("sn1", "sn2")
SPECTRAL_MODES = ("fft", "matmul", "dft")


@dataclass(frozen=True)
class Preset:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int
    variant: str  # "sn1" | "sn2"
    fusion: str  # "concat" | "bilinear"
    sigmoid_head: bool  # one sigmoid unit instead of a softmax (binary chest model)
    epochs: int
    early_stop_patience: int
    lr_patience: int
    class_names: tuple[str, ...]
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("brisc2025", (256, 256, 1), 4, "sn1", "bilinear", False, 200, 40, 20,
               ("glioma", "meningioma", "no_tumor", "pituitary"), "BRISC2025 brain MRI, 4 classes"),
        Preset("chest-xray", (384, 512, 1), 2, "sn1", "concat", True, 100, 20, 10,
               ("NORMAL", "PNEUMONIA"), "Chest X-ray pneumonia, binary (one sigmoid unit)"),
        Preset("busi", (256, 256, 1), 3, "sn2", "concat", False, 200, 60, 40,
               ("benign", "malignant", "normal"), "BUSI breast ultrasound, 3 classes"),
        Preset("ham10000", (225, 300, 3), 7, "sn1", "bilinear", False, 200, 40, 20,
               ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"), "HAM10000 dermoscopy, RGB, 7 classes"),
    )
}


def get_preset(name: str) -> Preset:
    """The preset of that name.

    Args:
        name: one of ``PRESETS``: brisc2025, chest-xray, busi or ham10000.

    Returns:
        Its ``Preset``: input shape, classes, architecture and training schedule.

    Raises:
        InputError: no preset of that name.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
