"""The options of a training run (``TrainOptions``): what `train` is asked to do, and what config.json records."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from s3f_edge.model.presets import get_preset


@dataclass
class TrainOptions:
    """Every option of a run; defaults are the original recipe, with a held-out validation split."""

    data_dir: str
    out_dir: str
    preset: str = "brisc2025"
    model: str = "s3f"  # s3f | baseline | spectral
    image_size: tuple[int, int] | None = None  # (H, W); default: the preset's
    variant: str | None = None
    fusion: str | None = None
    epochs: int | None = None
    batch_size: int = 16
    learning_rate: float = 3e-4
    lr_factor: float = 0.2
    min_learning_rate: float = 1e-6
    lr_patience: int | None = None
    patience: int | None = None
    val_fraction: float = 0.15
    seed: int = 0
    paper_protocol: bool = False
    class_weights: bool = True
    precise_bn: bool = True  # population BatchNorm statistics before every selection and checkpoint
    precise_bn_images: int = 1024  # training images sampled (seeded) for those statistics
    augment: bool = False
    mixed_precision: bool = False  # float16 compute; every SpectralFilter stays float32
    strategy: str = "auto"  # auto | mirrored | multiworker (TF_CONFIG)
    workers: int = 4
    cache: str = "memory"  # memory | disk (memory-mapped, reused by later runs)
    cache_dir: str | None = None  # default: s3f_edge.data.cache.default_cache_dir()
    class_codes: str | None = None  # a class-code file: how DICOM reports code each class (model.class_codes)
    calibrate: bool = True  # fit the temperature and the out-of-distribution score at the end (clean protocol)
    verbose: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_saved(cls, saved: dict, **overrides) -> "TrainOptions":
        """The options of a run from its config.json (for --resume); runs from before an option existed
        keep the behaviour they were trained with."""
        values = {"precise_bn": False, **saved, **overrides}
        values["image_size"] = tuple(values["image_size"]) if values.get("image_size") else None
        return cls(**values)

    def resolved(self) -> "TrainOptions":
        """Fill preset defaults (epochs, patiences, size) so config.json states every value used."""
        preset = get_preset(self.preset)
        values = asdict(self)
        values["image_size"] = tuple(self.image_size or preset.input_shape[:2])
        values["variant"] = self.variant or preset.variant
        values["fusion"] = self.fusion or preset.fusion
        values["epochs"] = self.epochs if self.epochs is not None else preset.epochs
        values["lr_patience"] = self.lr_patience if self.lr_patience is not None else preset.lr_patience
        values["patience"] = self.patience if self.patience is not None else preset.early_stop_patience
        return TrainOptions(**values)
