"""DICOM Structured Reports of ``infer``'s answers: one Comprehensive 3D SR (TID 1500 Measurement Report) per
answered DICOM image, which a PACS stores beside the image, in the image's own study.

An SR holds only what the source image's header and the model's answer say: the patient and study copied from
the source (never invented; empty where the source is empty), the image as evidence and as the source of the
measurement group, the model (file name, package version, sha256, precision) and the answer: the finding of an
``ok`` row or an explicit "not evaluated" for a ``refused`` one (unlike the training images), every class's
calibrated probability, the out-of-distribution score and threshold. No path, host or user name. An ``error``
row has no answer, so it gets no SR.

UIDs are derived, not drawn: the same model (sha256) on the same image gives the same SR, and one model's SRs in
a study share one series, so writing again replaces a file instead of adding a copy to the archive.

``write_sr`` writes the file of ``build_sr``'s SR byte for byte, but highdicom builds only the first SR of each kind
of answer; later ones are its bytes with their own values (``s3f_edge.dicom.sr_templates``): ~10 times faster.

pydicom and highdicom (the ``dicom`` extra) are imported only when an SR is built or read.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from s3f_edge.dicom import codes
from s3f_edge.dicom.identity import (  # noqa: F401 (re-exported: the SR's API in one place)
    CODE_FILE_FORMAT,
    PRIVATE_SCHEME,
    ModelIdentity,
    check_class_codes,
    default_class_codes,
    load_class_codes,
)
from s3f_edge.dicom.sr_content import (  # noqa: F401 (re-exported: the SR's API in one place)
    ALGORITHM_NAME,
    MANUFACTURER,
    NOT_ASSESSED,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    _coded,
    _highdicom,
    _pydicom,
    _read,
    build_sr,
    sr_uids,
)
from s3f_edge.errors import DicomSRError as SRError  # re-exported: callers catch it from here
from s3f_edge.errors import InputError, MissingFileError
from s3f_edge.outputs import atomic_path


def write_sr(row: dict, source, out_dir: str | Path, model: ModelIdentity, when: datetime | None = None) -> Path:
    """Write the SR of one row into ``out_dir`` as ``<SR SOP Instance UID>.dcm``, atomically.

    The same model on the same image gives the same file name, so writing again replaces the file.

    Args:
        row: the image's result row (see ``build_sr``).
        source: the DICOM image: a path, or its header as a ``pydicom.Dataset``.
        out_dir: the folder to write into (made if missing).
        model: the model that answered.
        when: the SR's content date and time (default: now).

    Returns:
        The file written.

    Raises:
        DicomSRError: no SR for this row or source (the message names the file and says why).
        MissingFileError: ``source`` names no file.
    """
    from s3f_edge.dicom.sr_templates import sr_file  # build_sr's SR, at a fraction of its cost (it imports this)

    header = source if not isinstance(source, (str, Path)) else _read(source)
    try:
        sop_uid, data = sr_file(row, header, model, when)
    except SRError as error:
        raise SRError(f"{source}: no DICOM SR: {error}" if isinstance(source, (str, Path)) else str(error)) from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{sop_uid}.dcm"
    with atomic_path(target, suffix=".dcm") as temporary:
        temporary.write_bytes(data)
    return target


def _class_of(code, class_codes: dict | None) -> str:
    key = (code.value, code.scheme_designator)
    for name, (value, scheme, _) in (class_codes or {}).items():
        if (value, scheme) == key:
            return name
    return code.value if code.scheme_designator == PRIVATE_SCHEME else code.meaning


def read_sr_finding(path: str | Path, class_codes: dict | None = None) -> dict:
    """What an s3f-edge SR says, read back with highdicom.

    Args:
        path: the SR file.
        class_codes: the model's codes (class -> (value, scheme, meaning)), to name classes by; without them a class
            is its code value in the private scheme, its meaning in any other.

    Returns:
        ``finding`` (a class, or "not assessed"), ``status`` ("ok" or "refused"), ``probability`` (the finding's),
        ``probabilities`` (class -> probability), ``ood_score``, ``ood_threshold``, ``source_sop_class_uid``,
        ``source_sop_instance_uid``, ``study_instance_uid``, ``sop_instance_uid`` and ``model_sha256``.

    Raises:
        MissingFileError: no such file.
        InputError: not an SR that s3f-edge wrote.
    """
    hd = _highdicom()
    if not Path(path).is_file():
        raise MissingFileError(f"{path}: no such DICOM SR file")
    try:
        document = hd.sr.srread(str(path))
        group = document.content.get_image_measurement_groups()[0]
        source = group.source_images[0]
    except (AttributeError, IndexError, RuntimeError, ValueError, _pydicom().errors.InvalidDicomError) as error:
        raise InputError(f"{path} is not an s3f-edge DICOM SR ({error})") from error
    results = group.get_qualitative_evaluations(_coded(codes.RESULT))
    if group.finding_type is None and not any(item.value == _coded(codes.NOT_EVALUATED) for item in results):
        raise InputError(f"{path} is not an s3f-edge DICOM SR (it holds neither a finding nor a refusal)")
    found = {"finding": NOT_ASSESSED, "status": "refused", "probability": None, "probabilities": {},
             "ood_score": None, "ood_threshold": None, "study_instance_uid": str(document.StudyInstanceUID),
             "sop_instance_uid": str(document.SOPInstanceUID), "model_sha256": None,
             "source_sop_class_uid": str(source.referenced_sop_class_uid),
             "source_sop_instance_uid": str(source.referenced_sop_instance_uid)}
    if group.finding_type is not None:
        found.update(finding=_class_of(group.finding_type, class_codes), status="ok")
    class_code = _coded(codes.CLASS)
    for measurement in group.get_measurements():
        modifiers = [item for item in getattr(measurement[0], "ContentSequence", []) if item.name == class_code]
        if measurement.name == _coded(codes.PROBABILITY) and modifiers:
            found["probabilities"][_class_of(modifiers[0].value, class_codes)] = float(measurement.value)
        elif measurement.name == _coded(codes.PROBABILITY):
            found["probability"] = float(measurement.value)
        elif measurement.name in (_coded(codes.OOD_SCORE_CODE), _coded(codes.THRESHOLD)):
            key = "ood_score" if measurement.name == _coded(codes.OOD_SCORE_CODE) else "ood_threshold"
            found[key] = float(measurement.value)
    parameters = hd.sr.CodedConcept("111002", "DCM", "Algorithm Parameters")
    for item in group[0].ContentSequence:
        if item.name == parameters and str(item.value).startswith("model_sha256="):
            found["model_sha256"] = str(item.value).split("=", 1)[1]
    return found
