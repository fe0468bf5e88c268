"""DICOM outputs of s3f-edge's answers: a Structured Report per answered DICOM image (``s3f_edge.dicom.sr``).

Names load on first use, and pydicom and highdicom (the ``dicom`` extra) only when an SR is built or read, so
``import s3f_edge.dicom`` is cheap and works on a runtime-only installation.
"""
from importlib import import_module

_EXPORTS = {name: "s3f_edge.dicom.sr" for name in (
    "ModelIdentity", "SRError", "build_sr", "check_class_codes", "default_class_codes", "load_class_codes",
    "read_sr_finding", "sr_uids", "write_sr", "PRIVATE_SCHEME")}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's3f_edge.dicom' has no attribute {name!r}")
