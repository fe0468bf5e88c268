"""The model an SR names (``ModelIdentity``) and the codes of its classes.

A class is written into an SR as a code (value, coding scheme designator, meaning). Without a class-code file
every class gets a code in s3f-edge's private scheme (``99S3FEDGE``; PS3.16 section 8.2: private designators start
with "99"), its name being its code value and meaning; a site that wants SNOMED CT or its own codes gives a small
JSON or CSV file (``load_class_codes``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from s3f_edge import __version__
from s3f_edge.model.class_codes import (  # noqa: F401 (the codes' API, re-exported for the DICOM writer's users)
    CODE_FILE_FORMAT,
    PRIVATE_SCHEME,
    check_class_codes,
    default_class_codes,
    load_class_codes,
)


@dataclass
class ModelIdentity:
    """The model an SR names, and the codes of its classes.

    Attributes:
        name: the model file's name (never its path).
        version: the s3f-edge package version that answered.
        sha256: the model file's sha256.
        precision: "fp32", "fp16", "int8", "engine", ...
        class_names: the model's classes, in output order.
        class_codes: class -> (code value, coding scheme designator, meaning); default: the private scheme.
        ood_threshold: the model's calibrated refusal threshold (None: it cannot refuse).
    """

    name: str
    version: str
    sha256: str
    precision: str = "fp32"
    class_names: list[str] = field(default_factory=list)
    class_codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    ood_threshold: float | None = None

    def __post_init__(self):
        self.class_names = list(self.class_names)
        self.class_codes = check_class_codes(self.class_codes or default_class_codes(self.class_names),
                                             self.class_names)

    @classmethod
    def from_predictor(cls, predictor, class_codes: dict | None = None) -> ModelIdentity:
        """The identity of a loaded ``Predictor`` (its metadata may hold "precision" and "class_codes").

        Args:
            predictor: a ``s3f_edge.runtime.Predictor``.
            class_codes: codes to use instead of the metadata's (e.g. from ``load_class_codes``).
        """
        metadata = predictor.metadata or {}
        codes = class_codes if class_codes is not None else metadata.get("class_codes") or {}
        return cls(name=predictor.name, version=__version__, sha256=predictor.sha256,
                   precision=str(metadata.get("precision") or "fp32"), class_names=list(predictor.class_names),
                   class_codes=codes, ood_threshold=predictor.ood_threshold)

