"""How an SR is built: its content (TID 1500) from a row and its image's header, with highdicom; ``sr.py`` is the API
(``build_sr``, ``write_sr``, ``read_sr_finding``) and ``sr_templates.py`` the fast path that ``write_sr`` takes.
"""
from __future__ import annotations

import copy
import math
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from s3f_edge.contract import OOD_SCORE
from s3f_edge.dependencies import import_module
from s3f_edge.dicom import codes
from s3f_edge.dicom.identity import PRIVATE_SCHEME, ModelIdentity
from s3f_edge.errors import DicomSRError as SRError
from s3f_edge.errors import MissingFileError
from s3f_edge.results import PROBABILITY_PREFIX

ALGORITHM_NAME = "s3f-edge S3F-Net"
MANUFACTURER = "s3f-edge"
SERIES_NUMBER = 9900
SERIES_DESCRIPTION = "s3f-edge S3F-Net classification (research, unverified)"
NOT_ASSESSED = "not assessed"  # read_sr_finding's finding for a refused row
# The codes the SR says its answer in, and why each was chosen: s3f_edge.dicom.codes.

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "s3f-edge:dicom-sr")  # fixed: derived UIDs never change
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UIDS = (("SOPClassUID", "SOP Class UID (0008,0016)"), ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
         ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
         ("SeriesInstanceUID", "Series Instance UID (0020,000E)"))
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _pydicom():
    return import_module("pydicom", "DICOM Structured Reports", "dicom")


def _highdicom():
    return import_module("highdicom", "DICOM Structured Reports", "dicom")


def _derived_uid(*parts: str) -> str:
    """A UID under the UUID-derived root 2.25 (PS3.5 B.2), from a name-based UUID of ``parts``."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(0).join(parts)).int}"


def sr_uids(source_sop_instance_uid: str, study_instance_uid: str, model_sha256: str) -> tuple[str, str]:
    """The (Series Instance UID, SOP Instance UID) of the SR of one model's answer to one image.

    The instance follows from the image and the model, so a re-run writes the same SR again; the series from the
    study and the model, so that one model's SRs in a study share a series.
    """
    return (_derived_uid("series", str(study_instance_uid), model_sha256),
            _derived_uid("instance", str(source_sop_instance_uid), model_sha256))


@dataclass
class _Answer:
    status: str
    finding: str | None
    probabilities: dict[str, float]
    score: float | None
    threshold: float | None


def _number(row: dict, key: str) -> float | None:
    value = row.get(key, "")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SRError(f"the row's {key} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise SRError(f"the row's {key} is {value}, not a finite number")
    return number


def _answer(row: dict, model: ModelIdentity) -> _Answer:
    """The answer a result row holds, checked against the model (SRError: no answer, or not this model's)."""
    status = row.get("status")
    if status == "error":
        raise SRError("the row is an error (the image has no answer), so there is nothing to report")
    if status not in ("ok", "refused"):
        raise SRError(f"the row's status {status!r} is not ok or refused")
    sha256 = str(row.get("model_sha256") or "")
    if sha256 and sha256 != model.sha256:
        raise SRError(f"the row was answered by another model (sha256 {sha256[:12]}..., not {model.sha256[:12]}...)")
    classes = [key[len(PROBABILITY_PREFIX):] for key in row if key.startswith(PROBABILITY_PREFIX)]
    if sorted(classes) != sorted(model.class_names):
        raise SRError(f"the row's classes ({', '.join(classes)}) are not the model's ({', '.join(model.class_names)})")
    probabilities = {name: _number(row, PROBABILITY_PREFIX + name) for name in model.class_names}
    wrong = [name for name, value in probabilities.items() if value is None or not 0 <= value <= 1]
    if wrong:
        raise SRError(f"the row has no probability in [0, 1] for {', '.join(wrong)}")
    finding = row.get("predicted_class") if status == "ok" else None
    if status == "ok" and finding not in probabilities:
        raise SRError(f"the row's predicted class {finding!r} is not one of the model's classes")
    score, threshold = _number(row, OOD_SCORE), _number(row, "ood_threshold")
    if status == "refused" and (score is None or threshold is None):
        raise SRError("the refused row lacks its out-of-distribution score or threshold")
    return _Answer(status, finding, probabilities, score, threshold)


def _has_pixels(source) -> bool:
    """Whether the image has pixel data: in the dataset, or in its file when it was read without them."""
    if any(keyword in source for keyword in _PIXELS):
        return True
    filename = getattr(source, "filename", None)
    if isinstance(filename, str) and Path(filename).is_file():
        return any(keyword in _read(filename) for keyword in _PIXELS)
    return False


def _check_source(source) -> None:
    """SRError naming why ``source`` cannot be an SR's evidence: a UID missing or invalid, not an image, ..."""
    pydicom = _pydicom()
    for keyword, label in _UIDS:
        value = str(source.get(keyword) or "").strip()
        if not value:
            raise SRError(f"the source has no {label}")
        if not pydicom.uid.UID(value).is_valid:
            raise SRError(f"the source's {label} {value!r} is not a valid UID")
    sop_class = str(source.SOPClassUID).strip()
    name = pydicom.uid.UID_dictionary.get(sop_class, ("an unknown SOP Class",))[0]
    if "Image Storage" not in name:
        raise SRError(f"the source is {name} ({sop_class}), not an image")
    if not _has_pixels(source):
        raise SRError("the source has no pixel data")
    try:
        frames = int(source.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise SRError(f"the source's Number of Frames {source.get('NumberOfFrames')!r} is not a number") from None
    if frames > 1:
        raise SRError(f"the source has {frames} frames: s3f-edge classifies single-frame images, so which frame an "
                      "answer is about is unknown")


def _decoded(element):
    """``element`` with every text inside decoded while it still belongs to its dataset (sequence items decode
    with their parent's character set, which moving them to the SR would change)."""
    if element.VR == "SQ":
        for item in element.value:
            for tag in list(item.keys()):
                _decoded(item[tag])
    return element


def _evidence(source, tags: frozenset | None = None):
    """The header highdicom builds the SR from: the source's public, decoded attributes (pixel data, private tags
    and the equipment left out; only ``tags`` when given), with the type 2 attributes highdicom requires present
    (empty where the source lacks them) and values it cannot parse emptied (an unknown sex, a malformed date),
    never invented."""
    pydicom = _pydicom()
    evidence = pydicom.Dataset()
    for tag in list(source.keys()):
        if tag.is_private or tag.group >= 0x7FE0 or tag == 0x00080070 or (tags is not None and tag not in tags):
            continue  # 0x00080070: Manufacturer, see below
        evidence.add(copy.deepcopy(_decoded(source[tag])))
    # Without a Manufacturer highdicom does not copy the source's equipment (station and institution names) into
    # the SR. It chooses the patient and study attributes to copy by the evidence's IOD and knows only current image
    # classes; those modules are the same in every image IOD, so it reads Secondary Capture's and the evidence is
    # given the true SOP Class afterwards (_name_true_class).
    evidence.SOPClassUID = _SECONDARY_CAPTURE
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime", "ReferringPhysicianName"):
        if keyword not in evidence or evidence[keyword].value in ("", None):
            setattr(evidence, keyword, None)
    for keyword, kind in (("PatientBirthDate", pydicom.valuerep.DA), ("StudyDate", pydicom.valuerep.DA),
                          ("StudyTime", pydicom.valuerep.TM)):
        text = str(evidence[keyword].value or "")
        try:  # the ACR-NEMA forms 1997.04.24 and 14:04:38 written as DICOM writes them
            value = kind(text.replace(":", "") if kind is pydicom.valuerep.TM else text)
        except ValueError:
            value = None
        if kind is pydicom.valuerep.DA and value is not None:
            value = value.strftime("%Y%m%d")
        setattr(evidence, keyword, value)
    if evidence.PatientSex not in (None, "M", "F", "O"):
        evidence.PatientSex = None
    return evidence


def _charset(source, model: ModelIdentity):
    """The SR's Specific Character Set: the source's, so that names are written as the source wrote them, unless
    it is unknown or cannot hold the model's own text (class meanings, file name): then UTF-8 (ISO_IR 192)."""
    declared = source.get("SpecificCharacterSet")
    values = [str(declared)] if isinstance(declared, str) else [str(value) for value in declared or []]
    ours = [model.name, model.precision, *(part for code in model.class_codes.values() for part in code)]
    known = all(value.strip() in _pydicom().charset.python_encoding for value in values)
    if known and all(text.isascii() for text in ours):
        return declared or None
    return "ISO_IR 192"


def _coded(code: tuple[str, str, str]):
    return _highdicom().sr.CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def _measurements(answer: _Answer, model: ModelIdentity) -> list:
    """The probabilities (the finding's, then each class's, its class as a concept modifier) and the
    out-of-distribution score and threshold, as TID 300 measurements."""
    sr = _highdicom().sr
    unit = _coded(codes.NO_UNITS)
    found = []
    if answer.finding is not None:
        found.append(sr.Measurement(name=_coded(codes.PROBABILITY), value=answer.probabilities[answer.finding],
                                    unit=unit))
    for name, probability in answer.probabilities.items():
        measurement = sr.Measurement(name=_coded(codes.PROBABILITY), value=probability, unit=unit)
        measurement[0].ContentSequence = sr.ContentSequence([sr.CodeContentItem(
            name=_coded(codes.CLASS), value=_coded(model.class_codes[name]),
            relationship_type=sr.RelationshipTypeValues.HAS_CONCEPT_MOD)])
        found.append(measurement)
    for code, value in ((codes.OOD_SCORE_CODE, answer.score), (codes.THRESHOLD, answer.threshold)):
        if value is not None:
            found.append(sr.Measurement(name=_coded(code), value=value, unit=unit))
    return found


def _report(answer: _Answer, source, model: ModelIdentity, sop_instance_uid: str):
    """The TID 1500 Measurement Report: the device observer, one measurement group about the source image."""
    sr = _highdicom().sr
    parameters = [f"model_file={model.name}", f"model_sha256={model.sha256}", f"precision={model.precision}"]
    if model.ood_threshold is not None:
        parameters.append(f"calibrated_ood_threshold={model.ood_threshold:.6g}")
    algorithm = sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=model.version, parameters=parameters,
                                           manufacturer=MANUFACTURER)
    # The finding goes where TID 1501 puts its "Finding" (the content item a Finding qualitative evaluation would
    # be, in the row that the group's measurements are about); a refusal is two qualitative evaluations.
    finding = None if answer.finding is None else _coded(model.class_codes[answer.finding])
    evaluations = [] if finding else [sr.QualitativeEvaluation(_coded(codes.RESULT), _coded(codes.NOT_EVALUATED)),
                                      sr.QualitativeEvaluation(_coded(codes.REASON), _coded(codes.UNLIKE_TRAINING))]
    group = sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=sr.TrackingIdentifier(uid=_derived_uid("tracking", sop_instance_uid),
                                                  identifier="s3f-edge classification"),
        finding_type=finding, algorithm_id=algorithm, qualitative_evaluations=evaluations or None,
        measurements=_measurements(answer, model),
        source_images=[sr.SourceImageForMeasurementGroup(str(source.SOPClassUID), str(source.SOPInstanceUID))])
    observer = sr.ObserverContext(observer_type=_coded(codes.DEVICE), observer_identifying_attributes=(
        sr.DeviceObserverIdentifyingAttributes(uid=_derived_uid("device", model.sha256), name=MANUFACTURER,
                                               manufacturer_name=MANUFACTURER, model_name=model.name)))
    return sr.MeasurementReport(observation_context=sr.ObservationContext(observer_device_context=observer),
                                procedure_reported=_coded(codes.IMAGING_PROCEDURE), imaging_measurements=[group])


def _name_true_class(document, source) -> None:
    for study in document.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for reference in series.ReferencedSOPSequence:
                reference.ReferencedSOPClassUID = str(source.SOPClassUID)


def build_sr(row: dict, source, model: ModelIdentity, when: datetime | None = None):
    """The DICOM SR of one ``infer`` row for a DICOM image.

    Args:
        row: the image's result row (``ok`` or ``refused``; the columns of ``s3f_edge.results.columns``).
        source: the image's header (a ``pydicom.Dataset``; read without pixels, its file must hold them).
        model: the model that answered.
        when: the SR's content date and time (default: now).

    Returns:
        A Comprehensive 3D SR (``highdicom.sr.Comprehensive3DSR``, a ``pydicom.Dataset``) with its file meta.

    Raises:
        DicomSRError: an ``error`` row, a row of another model, or a source that cannot be evidence (the message
            says why in one line).
    """
    answer = _answer(row, model)
    _check_source(source)
    return _document(answer, source, model, when or datetime.now())


def _document(answer: _Answer, source, model: ModelIdentity, when: datetime):
    """The SR of a checked answer and source, built by highdicom."""
    hd = _highdicom()
    series_uid, sop_uid = sr_uids(str(source.SOPInstanceUID), str(source.StudyInstanceUID), model.sha256)
    with warnings.catch_warnings():  # highdicom's doubt about a one-part name names the patient: not for logs
        warnings.filterwarnings("ignore", "The string .* is unlikely to represent the intended person name")
        document = hd.sr.Comprehensive3DSR(
            evidence=[_evidence(source)], content=_report(answer, source, model, sop_uid),
            series_instance_uid=series_uid, series_number=SERIES_NUMBER, sop_instance_uid=sop_uid,
            instance_number=_instance_number(source), manufacturer=MANUFACTURER, manufacturer_model_name="S3F-Net",
            software_versions=model.version, series_description=SERIES_DESCRIPTION, is_complete=True,
            is_final=False, is_verified=False, content_date=when.date(), content_time=when.time().replace(tzinfo=None),
            specific_character_set=None, coding_schemes=[hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME, name="s3f-edge codes", responsible_organization=MANUFACTURER)])
    _name_true_class(document, source)
    _stamp(document, when, series_uid, sop_uid, _instance_number(source))
    charset = _charset(source, model)
    if charset:
        document.SpecificCharacterSet = charset
    return document


def _stamp(dataset, when: datetime, series_uid: str, sop_uid: str, number: int) -> None:
    """The SR's own UIDs and number, and its content and creation date and time (``when``, with its timezone)."""
    valuerep = _pydicom().valuerep
    dataset.SOPInstanceUID, dataset.SeriesInstanceUID, dataset.InstanceNumber = sop_uid, series_uid, number
    dataset.ContentDate = dataset.InstanceCreationDate = valuerep.DA(when.date())
    dataset.ContentTime = dataset.InstanceCreationTime = valuerep.TM(when.time().replace(tzinfo=None))
    if when.utcoffset() is not None:
        dataset.TimezoneOffsetFromUTC = when.strftime("%z")  # +HHMM, as DICOM writes it


def _instance_number(source) -> int:
    """The source's Instance Number, so that a series of SRs sorts as its images do (1 when it has none)."""
    number = str(source.get("InstanceNumber") or "").strip()
    return max(1, int(number)) if number.lstrip("-").isdigit() else 1


def _read(path: str | Path):
    """A DICOM file's header, large values (pixel data) left unread, or SRError naming why it cannot be read."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, defer_size=1024)
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such DICOM file") from None
    except pydicom.errors.InvalidDicomError:
        raise SRError(f"{path}: no DICOM SR: not a DICOM file (no file meta information)") from None
    except (OSError, EOFError, ValueError) as error:
        raise SRError(f"{path}: no DICOM SR: it cannot be read as DICOM ({error})") from error
