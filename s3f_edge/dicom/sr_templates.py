"""The files of many SRs at the cost of a few: ``write_sr``'s way of writing ``build_sr``'s SR.

highdicom builds an SR in ~25 ms and pydicom writes it in ~7 ms, while ``infer`` answers an image in ~4 ms. Yet
the SRs of one run differ little: one model answers, and of the ~350 elements of an SR only the image's (its
patient, study and UIDs), the numbers and the dates and times change from one image to the next. So highdicom
builds the first SR of each kind of answer (the model, ok with its finding or refused, the numbers present, the
character set) and the file's bytes are kept (``EncodedDataset``) with a slot for each value that changes; a later
SR of that kind is those bytes with its own values written in: the file highdicom and pydicom would write, byte for
byte (tests/test_dicom_sr.py compares them), in ~1.5 ms.

Where highdicom copies from the image, the copy follows highdicom's own rule (``_copied_tags``). A kind whose SR
would not come back byte for byte from its slots (checked once, on the SR it is made from) is built in full every
time.
"""
from __future__ import annotations

import functools
import io
from datetime import datetime

from s3f_edge.dicom.encoded import EncodedDataset
from s3f_edge.dicom.identity import ModelIdentity
from s3f_edge.dicom.sr_content import (
    _SECONDARY_CAPTURE,
    _Answer,
    _answer,
    _charset,
    _check_source,
    _derived_uid,
    _document,
    _evidence,
    _highdicom,
    _instance_number,
    _pydicom,
    _stamp,
    sr_uids,
)

_TEMPLATES: dict[tuple, EncodedDataset | None] = {}  # kind of SR -> its template, or None: built in full
_MAX_TEMPLATES = 64  # a long-lived process meeting many models forgets old ones rather than growing
# The SR's own top-level attributes (_stamp's): each image gives them, like the patient and study.
_INSTANCE_TAGS = frozenset((0x00080012, 0x00080013, 0x00080018, 0x00080023, 0x00080033, 0x00080201, 0x0020000E,
                            0x00200013))
_CONTRIBUTED = 0x0018A002  # Contribution DateTime: when highdicom made the SR


def sr_file(row: dict, source, model: ModelIdentity, when: datetime | None = None) -> tuple[str, bytes]:
    """(SOP Instance UID, file) of the SR ``build_sr`` builds for ``row`` and ``source``, saved as pydicom saves it
    (the same arguments and the same errors)."""
    answer = _answer(row, model)
    _check_source(source)
    when = when or datetime.now()
    key = _kind(answer, source, model)
    try:
        template = _TEMPLATES[key]
    except KeyError:
        template = _template(answer, source, model)
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        _TEMPLATES[key] = template
    series_uid, sop_uid = sr_uids(str(source.SOPInstanceUID), str(source.StudyInstanceUID), model.sha256)
    if template is not None:
        values = {name: value for name, (_, value) in _slot_values(answer, source, sop_uid).items()}
        try:
            return sop_uid, template.write(values, _own(source, when, series_uid, sop_uid), sop_uid)
        except ValueError:  # an attribute of this image's that pydicom must correct first (an ambiguous VR)
            pass
    return sop_uid, _saved(_document(answer, source, model, when))


def _kind(answer: _Answer, source, model: ModelIdentity) -> tuple:
    """What the SRs sharing a template share: the model, the shape of the answer and the character set."""
    charset = _charset(source, model)
    return (model.name, model.version, model.sha256, model.precision, tuple(model.class_names),
            tuple((name, tuple(code)) for name, code in model.class_codes.items()), model.ood_threshold,
            answer.status, answer.finding, answer.score is None, answer.threshold is None,
            charset if charset is None or isinstance(charset, str) else tuple(charset))


def _template(answer: _Answer, source, model: ModelIdentity) -> EncodedDataset | None:
    """The template of ``answer``'s kind, from highdicom's SR of ``source``, or None when that SR does not come
    back byte for byte from the template (then this kind's SRs are built in full)."""
    sample = _sample(answer)
    when = datetime.now()
    series_uid, sop_uid = sr_uids(str(source.SOPInstanceUID), str(source.StudyInstanceUID), model.sha256)
    document = _document(sample, source, model, when)
    values = _slot_values(sample, source, sop_uid)
    places = {(tag, str(value)): name for name, (tag, value) in values.items() if tag != _CONTRIBUTED}

    def slot_of(element) -> str | None:
        if element.tag == _CONTRIBUTED:
            return "contributed"
        return None if element.VR == "SQ" else places.get((element.tag, str(element.value)))

    try:
        template = EncodedDataset(document, slot_of, _copied_tags() | _INSTANCE_TAGS)
        same = template.write(template.values, _own(source, when, series_uid, sop_uid), sop_uid) == _saved(document)
    except ValueError:
        return None
    return template if same and template.values.keys() == values.keys() else None


def _sample(answer: _Answer) -> _Answer:
    """``answer`` with numbers of its own (k / 1024: exact, and each a distinct text), so that the template finds
    each number's place by its value."""
    numbers = iter(range(1, len(answer.probabilities) + 3))
    probabilities = {name: next(numbers) / 1024 for name in answer.probabilities}
    score, threshold = next(numbers) / 1024, next(numbers) / 1024
    return _Answer(answer.status, answer.finding, probabilities, None if answer.score is None else score,
                   None if answer.threshold is None else threshold)


def _slot_values(answer: _Answer, source, sop_uid: str) -> dict[str, tuple[int, object]]:
    """Name -> (tag, value) of each value inside the SR that changes from one SR of a kind to the next: the image
    (the evidence and the measurements' source), the tracking UID, highdicom's time, each number."""
    valuerep = _pydicom().valuerep
    values = {"study": (0x0020000D, str(source.StudyInstanceUID)),
              "series": (0x0020000E, str(source.SeriesInstanceUID)),
              "class": (0x00081150, str(source.SOPClassUID)), "instance": (0x00081155, str(source.SOPInstanceUID)),
              "tracking": (0x0040A124, _derived_uid("tracking", sop_uid)),
              "contributed": (_CONTRIBUTED, valuerep.DT(datetime.now()))}  # as highdicom stamps its contribution
    numbers = {**{f"p:{name}": value for name, value in answer.probabilities.items()},
               "score": answer.score, "threshold": answer.threshold}
    for name, number in numbers.items():
        if number is not None:  # a NUM item holds its number twice: binary, and as text (highdicom's NumContentItem)
            values[f"{name}.fd"] = (0x0040A161, number)
            values[f"{name}.ds"] = (0x0040A30A, valuerep.DS(number, auto_format=True))
    return values


def _own(source, when: datetime, series_uid: str, sop_uid: str) -> list:
    """The SR's top-level elements that are the image's: the patient and study highdicom copies from the evidence
    (_evidence's, only the attributes it copies), and the SR's UIDs, number, dates and times (_stamp's)."""
    copied = _copied_tags()
    own = _pydicom().Dataset()
    for element in _evidence(source, copied):
        if element.tag in copied:
            own.add(element)
    _stamp(own, when, series_uid, sop_uid, _instance_number(source))
    return list(own)


@functools.cache
def _copied_tags() -> frozenset:
    """The top-level attributes highdicom copies from the evidence into an SR (the Patient and Study modules of
    Secondary Capture, the class _evidence gives), asked of highdicom once with evidence holding every attribute."""
    hd, pydicom = _highdicom(), _pydicom()

    class Copier(hd.SOPClass):
        def __init__(self):  # only highdicom's copying, none of the attributes of an instance of its own
            pydicom.Dataset.__init__(self)

    probe = pydicom.Dataset()
    for tag in pydicom.datadict.DicomDictionary:
        if tag not in (0x00080016, 0x00080018):
            probe.add_new(tag, "UN", None)
    probe.SOPClassUID, probe.SOPInstanceUID = _SECONDARY_CAPTURE, "1.2"
    copier = Copier()
    copier.copy_patient_and_study_information(probe)
    return frozenset(int(tag) for tag in copier.keys())


def _saved(document) -> bytes:
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
