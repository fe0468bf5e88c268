"""DICOM Structured Reports of infer's rows (``s3f_edge.dicom.sr``), judged by tools s3f-edge did not write:
DCMTK's dsrdump and dcmdump read every SR written (and dicom3tools' dciodvfy checks it against the IOD where it is
installed), and highdicom reads each back. Sources: the DICOM files pydicom ships (CT, MR, ultrasound, compressed,
big endian, eleven character sets) and files made from the repository's sample images; bad sources each get an
SRError with a one-line reason, never another exception."""
from __future__ import annotations

import getpass
import json
import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from dicom_judges import DCIODVFY, DCMTK, charset_of, judged, needs_dcmtk, problems, run  # noqa: F401
from pydicom.data import get_charset_files, get_testdata_file

from s3f_edge import __version__
from s3f_edge.dicom.sr import (
    PRIVATE_SCHEME,
    ModelIdentity,
    SRError,
    build_sr,
    check_class_codes,
    load_class_codes,
    read_sr_finding,
    sr_uids,
    write_sr,
)
from s3f_edge.errors import InputError, MissingDependencyError, MissingFileError
from s3f_edge.results import columns
from s3f_edge.testing import CHECKOUT, DICOM3TOOLS_ENV, dicom_from_image

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
MODEL = ModelIdentity(name="model.onnx", version=__version__, sha256="5f" * 32, precision="int8", class_names=CLASSES,
                      ood_threshold=1.25)
PROBABILITIES = {"glioma": 0.812345, "meningioma": 0.1, "notumor": 0.054321, "pituitary": 0.033334}
WHEN = datetime(2025, 3, 4, 5, 6, 7)
MRI = sorted((CHECKOUT / "samples" / "brain_mri" / "test" / "glioma").glob("*.jpg"))[0]
ULTRASOUND = CHECKOUT / "samples" / "ultrasound" / "images" / "benign_10.png"
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
          "AccessionNumber", "StudyID", "ReferringPhysicianName")

def row(status: str = "ok", source: str = "/scans/patient/a.dcm", **changes) -> dict:
    """A result row as infer writes it (CSV cells are text: values given as text must work too)."""
    answer = dict.fromkeys(columns(CLASSES), "")
    answer.update({f"prob_{name}": value for name, value in PROBABILITIES.items()})
    answer.update(path=source, status=status, predicted_class="glioma" if status == "ok" else "",
                  ood_score=0.5 if status == "ok" else 3.75, ood_threshold=1.25, model="model.onnx",
                  model_sha256=MODEL.sha256, file_size=1234, file_mtime_ns=5678)
    if status == "refused":
        answer["reason"] = "unlike the images the model was trained on"
    if status == "error":
        answer.update({key: "" for key in answer if key.startswith("prob_") or key.startswith("ood")})
    answer.update(changes)
    return answer


def evidence_of(document) -> list[tuple[str, str, str, str]]:
    """(study, series, SOP class, SOP instance) of every instance the SR lists as evidence."""
    return [(study.StudyInstanceUID, series.SeriesInstanceUID, item.ReferencedSOPClassUID,
             item.ReferencedSOPInstanceUID)
            for study in document.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence]


def raw_patient_name(path: Path) -> str:
    """The Patient's Name as dcmdump prints its bytes (no conversion): what another reader gets. Trailing empty
    components are dropped, as PS3.5 6.2.1 allows (Wang^XiaoDong=王^小東= is Wang^XiaoDong=王^小東)."""
    return run("dcmdump", "+P", "0010,0010", str(path)).stdout.split("#")[0].strip().rstrip("]").rstrip("=^")


# ---------------------------------------------------------------- sources

def shipped(name: str):
    def make(tmp_path: Path) -> Path:
        found = get_testdata_file(name, download=False) or next(iter(get_charset_files(name)), None)
        assert found, f"pydicom ships no {name}"
        return Path(found)
    return make


def made(image: Path, **attributes):
    return lambda tmp_path: dicom_from_image(image, tmp_path / "source.dcm", **attributes)


def with_private_tags(tmp_path: Path) -> Path:
    """A sample image whose private tags hold its path, the host and the user, and whose station (equipment) is
    named after the host: nothing an SR may carry."""
    path = dicom_from_image(MRI, tmp_path / "private.dcm", StationName=socket.gethostname()[:16],
                            InstitutionName=f"{getpass.getuser()} at {socket.gethostname()}"[:64])
    dataset = pydicom.dcmread(path)
    block = dataset.private_block(0x0011, "S3F-EDGE TEST", create=True)
    block.add_new(0x01, "LO", str(path)[-64:])
    block.add_new(0x02, "LO", socket.gethostname()[:64])
    block.add_new(0x03, "LO", getpass.getuser()[:64])
    dataset.save_as(path, enforce_file_format=True)
    return path


EMPTY_PATIENT = dict.fromkeys(COPIED[:4] + COPIED[5:])
# source -> (maker, expected attributes where the SR does not copy the source's value verbatim)
VALID = {
    "CT_small": (shipped("CT_small.dcm"), {}),
    "MR_small": (shipped("MR_small.dcm"), {}),
    "MR_small_implicit": (shipped("MR_small_implicit.dcm"), {}),
    "MR_small_RLE": (shipped("MR_small_RLE.dcm"), {}),
    "JPEG2000": (shipped("JPEG2000.dcm"), {}),
    "JPEG-lossy": (shipped("JPEG-lossy.dcm"), {}),
    "SC_rgb_jpeg": (shipped("SC_rgb_jpeg.dcm"), {}),
    "big-endian-ultrasound": (shipped("ExplVR_BigEnd.dcm"),  # ACR-NEMA 1997.04.24 and 14:04:38 as DICOM writes them
                              {"StudyDate": "19970424", "StudyTime": "140438"}),
    "latin1-german": (shipped("chrGerm.dcm"), {}),
    "latin1-french": (shipped("chrFren.dcm"), {}),
    "cyrillic": (shipped("chrRuss.dcm"), {}),
    "greek": (shipped("chrGreek.dcm"), {}),
    "arabic": (shipped("chrArab.dcm"), {}),
    "hebrew": (shipped("chrHbrw.dcm"), {}),
    "utf8-chinese": (shipped("chrX1.dcm"), {}),
    "gb18030": (shipped("chrX2.dcm"), {}),
    "japanese-iso2022": (shipped("chrH31.dcm"), {}),
    "japanese-katakana": (shipped("chrH32.dcm"), {}),
    "korean-iso2022": (shipped("chrI2.dcm"), {}),
    "sample-mri-as-MR": (made(MRI), {}),
    "sample-ultrasound-as-SC": (made(ULTRASOUND, modality="US"), {}),
    "japanese-name": (made(MRI, SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName="やまだ^たろう=山田^太郎"),
                      {}),
    "utf8-name": (made(MRI, SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jürgen=王^小東"), {}),
    "latin1-name": (made(ULTRASOUND, modality="US", SpecificCharacterSet="ISO_IR 100", PatientName="Buc^Jérôme",
                         ReferringPhysicianName="Ørsted^Hans"), {}),
    "short-uids": (made(MRI, StudyInstanceUID="1.2.3.4.5", SeriesInstanceUID="1.2.3.4.5.6",
                        SOPInstanceUID="1.2.3.4.5.6.7"), {}),
    "64-character-uid": (made(MRI, SOPInstanceUID="1.2." + "9" * 60), {}),
    "empty-patient-module": (made(MRI, **EMPTY_PATIENT), dict.fromkeys(EMPTY_PATIENT, "")),
    "malformed-values": (made(MRI, StudyDate="2025-01-02", PatientSex="X", PatientBirthDate="yesterday"),
                         {"StudyDate": "", "PatientSex": "", "PatientBirthDate": ""}),
    "private-tags": (with_private_tags, {}),
}


def expected_value(source, keyword: str, expected: dict) -> str:
    return expected[keyword] if keyword in expected else str(source.get(keyword) or "")


@needs_dcmtk
@pytest.mark.parametrize("status", ["ok", "refused"])
@pytest.mark.parametrize("name", VALID)
def test_a_valid_source_gets_an_sr_that_dcmtk_reads_and_highdicom_reads_back(name, status, tmp_path, recwarn):
    maker, expected = VALID[name]
    source_path = maker(tmp_path)
    recwarn.clear()
    written = write_sr(row(status, str(source_path)), source_path, tmp_path / "sr", MODEL, when=WHEN)
    source, document = pydicom.dcmread(source_path, stop_before_pixels=True), pydicom.dcmread(written)
    if source.get("PatientName"):  # no warning puts the patient's name into a log
        assert not [w for w in recwarn if str(source.PatientName) in str(w.message)]
    assert judged(written) == []
    assert evidence_of(document) == [(source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPClassUID,
                                      source.SOPInstanceUID)]
    assert {key: str(document.get(key) or "") for key in COPIED} == {
        key: expected_value(source, key, expected) for key in COPIED}
    if source.get("PatientName") and "PatientName" not in expected:  # the same bytes as the source: names survive
        assert raw_patient_name(written) == raw_patient_name(source_path)
    assert (document.Modality, document.VerificationFlag, document.CompletionFlag, document.Manufacturer,
            document.SoftwareVersions, str(document.ContentDate), str(document.ContentTime)) == (
        "SR", "UNVERIFIED", "COMPLETE", "s3f-edge", __version__, "20250304", "050607")
    assert document.SeriesInstanceUID != source.SeriesInstanceUID and "s3f-edge" in document.SeriesDescription
    assert written.name == f"{document.SOPInstanceUID}.dcm"
    assert sorted(p.name for p in written.parent.iterdir()) == [written.name]  # no temporary file left
    assert_reads_back(read_sr_finding(written), status, source)


def assert_reads_back(found: dict, status: str, source) -> None:
    assert found["status"] == status
    assert found["finding"] == ("glioma" if status == "ok" else "not assessed")
    assert found["probability"] == (pytest.approx(PROBABILITIES["glioma"], abs=1e-6) if status == "ok" else None)
    assert found["probabilities"].keys() == PROBABILITIES.keys()
    assert found["probabilities"] == pytest.approx(PROBABILITIES, abs=1e-6)
    assert (found["ood_score"], found["ood_threshold"]) == (pytest.approx(0.5 if status == "ok" else 3.75), 1.25)
    assert (found["source_sop_instance_uid"], found["source_sop_class_uid"], found["study_instance_uid"]) == (
        source.SOPInstanceUID, source.SOPClassUID, source.StudyInstanceUID)
    assert found["model_sha256"] == MODEL.sha256


@needs_dcmtk
def test_the_sr_of_a_sample_image_passes_the_iod_check_with_no_warning_of_its_own(tmp_path):
    """dciodvfy's only words about the SR of a clean source: that it does not know s3f-edge's private scheme."""
    if DCIODVFY:
        if os.environ.get(DICOM3TOOLS_ENV):
            pytest.fail(f"{DICOM3TOOLS_ENV} is set but {DCIODVFY}")
        pytest.skip(f"no dciodvfy: {DCIODVFY}")
    source = dicom_from_image(MRI, tmp_path / "mri.dcm")
    for status in ("ok", "refused"):
        written = write_sr(row(status), source, tmp_path / status, MODEL)
        done = run("dciodvfy", str(written))
        said = [line for line in (done.stdout + done.stderr).splitlines()[1:]
                if line != f"Warning - Unrecognized defined term <{PRIVATE_SCHEME}> for value 1 of attribute "
                           "<Coding Scheme Designator>"]
        assert done.returncode == 0 and said == [], said


@needs_dcmtk
def test_the_judges_reject_broken_srs(tmp_path):
    """The checks above can fail: an SR without its evidence, with a relationship SR forbids, with a malformed
    date or without its verification flag is caught."""
    source = pydicom.dcmread(dicom_from_image(MRI, tmp_path / "mri.dcm"))

    def broken(change) -> tuple[list[str], list]:
        document = build_sr(row(), source, MODEL)
        change(document)
        path = tmp_path / "broken.dcm"
        document.save_as(path, enforce_file_format=True)
        return judged(path), evidence_of(pydicom.dcmread(path))

    assert broken(lambda document: None) == ([], [(source.StudyInstanceUID, source.SeriesInstanceUID,
                                                   source.SOPClassUID, source.SOPInstanceUID)])
    assert broken(lambda document: delattr(document, "CurrentRequestedProcedureEvidenceSequence"))[1] == []
    group = lambda document: document.ContentSequence[-1].ContentSequence[0].ContentSequence  # noqa: E731
    modified = lambda document: next(i for i in group(document) if i.ValueType == "NUM" and "ContentSequence" in i)  # noqa: E731,E501
    assert any("Invalid by-value Relationship" in line for line in broken(
        lambda document: setattr(modified(document).ContentSequence[0], "RelationshipType", "CONTAINS"))[0])
    with pytest.warns(UserWarning):
        assert any("ContentDate" in line for line in broken(lambda document: setattr(document, "ContentDate",
                                                                                      "2025-01-02"))[0])
    assert any("VerificationFlag" in line for line in broken(lambda d: delattr(d, "VerificationFlag"))[0])


# ---------------------------------------------------------------- sources and rows without an SR

def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("not an image\n")
    return path


# source -> (maker, what the one-line reason says)
NO_SR = {
    "no-sop-instance-uid": (made(MRI, SOPInstanceUID=None), "no SOP Instance UID"),
    "no-sop-class-uid": (made(MRI, SOPClassUID=None), "no SOP Class UID"),
    "no-study-instance-uid": (made(MRI, StudyInstanceUID=None), "no Study Instance UID"),
    "no-series-instance-uid": (made(MRI, SeriesInstanceUID=None), "no Series Instance UID"),
    "invalid-uid": (made(MRI, StudyInstanceUID="1.2.03.4"), "is not a valid UID"),
    "no-pixel-data": (made(ULTRASOUND, modality="US", PixelData=None), "no pixel data"),
    "charset-file-without-pixels": (shipped("chrJapMulti.dcm"), "no pixel data"),
    "rt-plan": (shipped("rtplan.dcm"), "RT Plan Storage (1.2.840.10008.5.1.4.1.1.481.5), not an image"),
    "structured-report": (shipped("test-SR.dcm"), "Comprehensive SR Storage"),
    "waveform": (shipped("waveform_ecg.dcm"), "not an image"),
    "segmentation": (shipped("liver_1frame.dcm"), "Segmentation Storage"),
    "multi-frame-rgb": (shipped("SC_rgb_rle_2frame.dcm"), "has 2 frames"),
    "multi-frame-ultrasound": (shipped("examples_ybr_color.dcm"), "has 30 frames"),
    "no-file-meta": (shipped("no_meta.dcm"), "not a DICOM file"),
    "private-sequence-only": (shipped("priv_SQ.dcm"), "no SOP Class UID"),
    "text-file": (text_file, "not a DICOM file"),
}


@pytest.mark.parametrize("name", NO_SR)
def test_a_source_without_an_sr_gets_one_line_saying_why(name, tmp_path):
    maker, why = NO_SR[name]
    source = maker(tmp_path)
    with pytest.raises(SRError) as caught:
        write_sr(row(), source, tmp_path / "sr", MODEL)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{source}: ") and why in message, message
    assert not (tmp_path / "sr").exists() or not any((tmp_path / "sr").iterdir())
    if why != "not a DICOM file":  # the header itself: the same reason, without a file to name
        with pytest.raises(SRError, match=why.replace("(", r"\(").replace(")", r"\)")):
            build_sr(row(), pydicom.dcmread(source, stop_before_pixels=True), MODEL)


def test_a_header_read_without_pixels_is_enough_when_its_file_has_them(tmp_path):
    path = dicom_from_image(MRI, tmp_path / "mri.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert build_sr(row(), header, MODEL).SOPInstanceUID == sr_uids(header.SOPInstanceUID, header.StudyInstanceUID,
                                                                     MODEL.sha256)[1]
    header.filename = None  # a dataset made in memory: nothing says it has pixels
    with pytest.raises(SRError, match="no pixel data"):
        build_sr(row(), header, MODEL)
    with pytest.raises(MissingFileError, match="no such DICOM file"):
        write_sr(row(), tmp_path / "gone.dcm", tmp_path / "sr", MODEL)


@pytest.mark.parametrize("changes, why", [
    ({"status": "error", "reason": "corrupt"}, "is an error"),
    ({"status": "maybe"}, "status 'maybe' is not ok or refused"),
    ({"model_sha256": "00" * 32}, "answered by another model"),
    ({"prob_notumor": "0.5x"}, "prob_notumor '0.5x' is not a number"),
    ({"prob_notumor": "nan"}, "not a finite number"),
    ({"prob_notumor": 1.5}, "no probability in [0, 1] for notumor"),
    ({"prob_notumor": ""}, "no probability in [0, 1] for notumor"),
    ({"predicted_class": "astrocytoma"}, "predicted class 'astrocytoma' is not one of the model's classes"),
    ({"prob_extra": 0.1}, "are not the model's"),
    ({"status": "refused", "ood_score": ""}, "lacks its out-of-distribution score or threshold"),
])
def test_a_row_without_an_answer_of_this_model_gets_no_sr(changes, why, mri_header):
    with pytest.raises(SRError) as caught:
        build_sr(row(**changes), mri_header, MODEL)
    assert why in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def mri_header(tmp_path_factory):
    """The header of one sample MR file, for tests that need some valid source."""
    return pydicom.dcmread(dicom_from_image(MRI, tmp_path_factory.mktemp("mri") / "mri.dcm"))


def test_rows_as_csv_text_and_a_model_that_cannot_refuse_round_trip(tmp_path):
    source = dicom_from_image(MRI, tmp_path / "mri.dcm")
    text = {key: str(value) for key, value in row().items()}  # every cell as a CSV reader gives it
    found = read_sr_finding(write_sr(text, source, tmp_path / "csv", MODEL))
    assert found["probabilities"] == pytest.approx(PROBABILITIES, abs=1e-6) and found["finding"] == "glioma"
    plain = ModelIdentity("plain.onnx", __version__, "77" * 32, class_names=CLASSES)
    found = read_sr_finding(write_sr(row(ood_score="", ood_threshold="", model_sha256=plain.sha256), source,
                                     tmp_path / "plain", plain))
    assert (found["finding"], found["ood_score"], found["ood_threshold"]) == ("glioma", None, None)


def test_reading_back_what_is_not_an_s3f_edge_sr_is_one_line(tmp_path, mri_header):
    with pytest.raises(MissingFileError):
        read_sr_finding(tmp_path / "absent.dcm")
    for path in (Path(mri_header.filename), Path(get_testdata_file("test-SR.dcm", download=False)),
                 text_file(tmp_path)):
        with pytest.raises(InputError, match="is not an s3f-edge DICOM SR") as caught:
            read_sr_finding(path)
        assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- UIDs

def test_the_same_image_and_model_give_the_same_uids_and_file(tmp_path):
    series, instance = sr_uids("1.2.3.4.5.6.7", "1.2.3.4.5", MODEL.sha256)
    assert (series, instance) == sr_uids("1.2.3.4.5.6.7", "1.2.3.4.5", MODEL.sha256)
    for uid in (series, instance):
        assert uid.startswith("2.25.") and pydicom.uid.UID(uid).is_valid
    other = sr_uids("1.2.3.4.5.6.7", "1.2.3.4.5", "00" * 32)
    assert other[0] != series and other[1] != instance  # another model: its own series and SR
    neighbour = sr_uids("1.2.3.4.5.6.8", "1.2.3.4.5", MODEL.sha256)
    assert neighbour[0] == series and neighbour[1] != instance  # another image of the study: the same series

    source = dicom_from_image(MRI, tmp_path / "mri.dcm")
    first = write_sr(row(), source, tmp_path / "sr", MODEL, when=WHEN)
    again = write_sr(row("refused"), source, tmp_path / "sr", MODEL, when=WHEN + timedelta(days=1))
    assert again == first and sorted(p.name for p in (tmp_path / "sr").iterdir()) == [first.name]
    assert read_sr_finding(first)["status"] == "refused"  # the rewrite replaced the file
    dataset = pydicom.dcmread(source)
    assert first.stem == sr_uids(dataset.SOPInstanceUID, dataset.StudyInstanceUID, MODEL.sha256)[1]
    assert write_sr(row(model_sha256="00" * 32), source, tmp_path / "sr",
                    ModelIdentity("other.onnx", __version__, "00" * 32, class_names=CLASSES)) != first


def test_the_content_time_is_the_one_given_with_its_timezone(tmp_path):
    source = pydicom.dcmread(dicom_from_image(MRI, tmp_path / "mri.dcm"))
    document = build_sr(row(), source, MODEL, when=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))))
    assert (str(document.ContentDate), str(document.ContentTime), document.TimezoneOffsetFromUTC) == (
        "20250102", "030405", "-0500")
    before = datetime.now().strftime("%Y%m%d")
    assert str(build_sr(row(), source, MODEL).ContentDate) in (before, datetime.now().strftime("%Y%m%d"))


# ---------------------------------------------------------------- write_sr's templates: build_sr's bytes

class FrozenNow(datetime):
    """highdicom stamps its contribution with now(): one instant for both ways of making an SR."""

    @classmethod
    def now(cls, tz=None):
        return cls(2025, 6, 7, 8, 9, 10, 111213, tzinfo=tz)


@pytest.fixture
def frozen_now(monkeypatch):
    import datetime as datetime_module

    import highdicom.base_content

    from s3f_edge.dicom import sr_templates

    monkeypatch.setattr(highdicom.base_content, "datetime", SimpleNamespace(**{
        **vars(datetime_module), "datetime": FrozenNow}))
    monkeypatch.setattr(sr_templates, "datetime", FrozenNow)
    monkeypatch.setattr(sr_templates, "_TEMPLATES", {})  # this test's templates, made from its first sources
    return sr_templates


def full_build(row_: dict, source: Path, model: ModelIdentity, when: datetime) -> bytes:
    """The file of highdicom's SR of the row, saved by pydicom: what write_sr's file must be, byte for byte."""
    document = build_sr(row_, pydicom.dcmread(source, stop_before_pixels=True), model, when)
    buffer = __import__("io").BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def varied_rows(index: int, source: Path) -> list[dict]:
    """Rows of every kind: each class the finding, refusals, no score, numbers as CSV text, numbers of every size."""
    finding = CLASSES[index % len(CLASSES)]
    numbers = {f"prob_{name}": (index + 3 * position + 1) / (7 + 13 * index) % 1 for position, name in
               enumerate(CLASSES)}
    return [row("ok", str(source), predicted_class=finding, **numbers, ood_score=index / 3),
            row("refused", str(source), **numbers, ood_score=1.25 + 10 ** -index, ood_threshold=1.25 + index),
            row("ok", str(source), ood_score="", ood_threshold=""),
            {key: str(value) for key, value in row("refused", str(source), prob_glioma=1e-9).items()}]


def test_write_sr_writes_the_bytes_of_build_sr_for_every_kind_of_row_and_source(frozen_now, tmp_path):
    """write_sr makes later SRs of a kind from the first's bytes: the files are highdicom's and pydicom's exactly,
    for every source (character sets, big endian, empty patient, private tags) and every kind of row."""
    sources = [maker(tmp_path / name) for name, (maker, _) in VALID.items() if not (tmp_path / name).mkdir()]
    sources += [dicom_from_image(image, tmp_path / f"extra{index}.dcm", modality=("MR", "US", "OT")[index % 3],
                                 InstanceNumber=index, **({"PatientName": None} if index % 2 else {}))
                for index, image in enumerate(sorted((CHECKOUT / "samples" / "brain_mri" / "test").glob("*/*"))[:8])]
    whens = [WHEN, datetime(2025, 1, 2, 3, 4, 5, 670000, tzinfo=timezone(timedelta(hours=5, minutes=30)))]
    compared = 0
    for index, source in enumerate(sources):
        for number, answer in enumerate(varied_rows(index, source)):
            when = whens[(index + number) % 2]
            written = write_sr(answer, source, tmp_path / "sr", MODEL, when=when)
            assert written.read_bytes() == full_build(answer, source, MODEL, when), (source.name, answer["status"])
            compared += 1
    templates = frozen_now._TEMPLATES
    assert compared == 4 * len(sources) and templates and None not in templates.values()  # made, and all used
    assert len(templates) <= compared / 2  # most SRs were made from an earlier SR's template


def test_write_sr_of_other_models_and_without_a_template_is_build_srs_too(frozen_now, tmp_path, monkeypatch):
    """A model with SNOMED codes, one whose class meanings need UTF-8, one that cannot refuse; and a kind of SR
    whose template could not be made: built in full."""
    snomed = ModelIdentity("model.onnx", __version__, MODEL.sha256, class_names=CLASSES,
                           class_codes={name: tuple(code) for name, code in SNOMED.items()}, ood_threshold=2.0)
    utf8 = ModelIdentity("model.onnx", __version__, MODEL.sha256, class_names=CLASSES,
                         class_codes={name: (name, PRIVATE_SCHEME, f"{name} (腫瘍)") for name in CLASSES})
    plain = ModelIdentity("plain.onnx", __version__, "77" * 32, class_names=CLASSES)
    sources = [made(ULTRASOUND, modality="US", SpecificCharacterSet="ISO_IR 100", PatientName="Buc^Jérôme")(tmp_path),
               shipped("chrX2.dcm")(tmp_path), shipped("CT_small.dcm")(tmp_path)]
    for model in (snomed, utf8, plain):
        for source in sources:
            changes = {"model_sha256": model.sha256} if model is plain else {}
            for answer in (row("ok", str(source), **changes, **({"ood_score": "", "ood_threshold": ""} if model is
                                                                 plain else {})),
                           *([] if model is plain else [row("refused", str(source))])):
                written = write_sr(answer, source, tmp_path / "sr", model, when=WHEN)
                assert written.read_bytes() == full_build(answer, source, model, WHEN)
    assert None not in frozen_now._TEMPLATES.values()
    monkeypatch.setattr(frozen_now, "_TEMPLATES", {})
    monkeypatch.setattr(frozen_now, "_template", lambda *arguments: None)  # no template: highdicom every time
    written = write_sr(row(), sources[0], tmp_path / "full", MODEL, when=WHEN)
    assert written.read_bytes() == full_build(row(), sources[0], MODEL, WHEN)


# ---------------------------------------------------------------- privacy

def strings_of(dataset) -> list[str]:
    """Every text value in a dataset and its file meta, sequences included."""
    found = []
    for element in [*getattr(dataset, "file_meta", []), *dataset]:
        if element.VR == "SQ":
            found += [text for item in element.value for text in strings_of(item)]
        elif isinstance(element.value, bytes):
            found.append(element.value.decode("latin-1"))
        else:
            several = isinstance(element.value, (list, pydicom.multival.MultiValue))
            found += [str(value) for value in (element.value if several else [element.value])]
    return found


@pytest.mark.parametrize("status", ["ok", "refused"])
def test_no_path_host_or_user_name_in_the_sr(status, tmp_path):
    source = with_private_tags(tmp_path)
    written = write_sr(row(status, str(source)), source, tmp_path / "sr", MODEL)
    document = pydicom.dcmread(written)
    texts = strings_of(document)
    assert texts and any(MODEL.sha256 in text for text in texts)  # the search sees the SR's text
    secrets = [str(source), source.name, str(tmp_path), str(Path.home()), socket.gethostname(), getpass.getuser()]
    leaks = {secret: [text for text in texts if re.search(rf"(?<![\w.]){re.escape(secret)}(?![\w])", text)]
             for secret in secrets}  # as a word: a host named "vm" is not in "vmax"
    assert not any(leaks.values()), leaks
    assert not [element.tag for element in document.iterall() if element.tag.is_private]


# ---------------------------------------------------------------- class codes

SNOMED = {"glioma": ["393564001", "SCT", "Glioma"], "meningioma": ["302820008", "SCT", "Meningioma"],
          "notumor": ["NOTUMOR", "99LOCAL", "No tumour"], "pituitary": ["254956000", "SCT", "Pituitary adenoma"]}


def test_class_codes_from_json_and_csv_name_the_finding(tmp_path):
    (tmp_path / "codes.json").write_text(json.dumps(SNOMED))
    (tmp_path / "codes.csv").write_text("class,code_value,scheme,meaning\n" + "".join(
        f"{name},{','.join(code)}\n" for name, code in SNOMED.items()))
    codes = load_class_codes(tmp_path / "codes.json")
    assert codes == load_class_codes(tmp_path / "codes.csv") == {name: tuple(code) for name, code in SNOMED.items()}
    coded = ModelIdentity("model.onnx", __version__, MODEL.sha256, class_names=CLASSES, class_codes=codes)
    written = write_sr(row(), dicom_from_image(MRI, tmp_path / "mri.dcm"), tmp_path / "sr", coded)
    assert read_sr_finding(written, codes)["finding"] == "glioma"
    found = read_sr_finding(written)  # without the codes: their meanings
    assert found["finding"] == "Glioma" and sorted(found["probabilities"]) == sorted(c[2] for c in SNOMED.values())
    group = pydicom.dcmread(written).ContentSequence[-1].ContentSequence[0]
    finding = next(item for item in group.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121071")
    assert finding.ConceptCodeSequence[0].CodeValue == "393564001"


@pytest.mark.parametrize("name, text, why", [
    ("bad.json", "{not json", "not JSON"),
    ("list.json", "[1, 2]", "not a JSON object"),
    ("short.json", '{"glioma": ["1", "SCT"]}', "class 'glioma': not a list"),
    ("slash.json", '{"glioma": ["1\\\\2", "SCT", "Glioma"]}', "backslash"),
    ("long.json", json.dumps({"glioma": ["1", "SCT", "G" * 65]}), "at most 64 characters"),
    ("empty.json", '{"glioma": ["", "SCT", "Glioma"]}', "non-empty"),
    ("header.csv", "name,code,scheme,meaning\n", "its header is name,code,scheme,meaning"),
    ("cells.csv", "class,code_value,scheme,meaning\nglioma,1,SCT\n", "line 2: 3 cells, not 4"),
    ("twice.csv", "class,code_value,scheme,meaning\nglioma,1,SCT,G\nglioma,2,SCT,G\n", "line 3: a class given twice"),
    ("codes.txt", "glioma 1", "a class-code file is"),
])
def test_a_bad_class_code_file_is_one_line_naming_the_fault(name, text, why, tmp_path):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as caught:
        load_class_codes(tmp_path / name)
    assert why in str(caught.value) and "\n" not in str(caught.value) and str(tmp_path / name) in str(caught.value)
    with pytest.raises(MissingFileError):
        load_class_codes(tmp_path / "absent.json")


def test_class_codes_must_cover_the_model_exactly_and_stay_distinct():
    codes = {name: tuple(code) for name, code in SNOMED.items()}
    assert check_class_codes(codes, CLASSES) == codes
    with pytest.raises(InputError, match="no code for pituitary"):
        check_class_codes({k: v for k, v in codes.items() if k != "pituitary"}, CLASSES)
    with pytest.raises(InputError, match="codes for astrocytoma, which the model does not have"):
        check_class_codes({**codes, "astrocytoma": ("1", "SCT", "A")}, CLASSES)
    with pytest.raises(InputError, match="have the same code SCT 393564001"):
        check_class_codes({**codes, "meningioma": ("393564001", "SCT", "Glioma again")}, CLASSES)
    with pytest.raises(InputError, match="give the classes' codes"):
        ModelIdentity("m.onnx", __version__, MODEL.sha256, class_names=["a\\b"])  # no default code for that name


def test_the_identity_of_a_predictor():
    predictor = SimpleNamespace(name="model.int8.onnx", sha256="ab" * 32, class_names=CLASSES, ood_threshold=2.5,
                                metadata={"precision": "int8", "class_codes": SNOMED})
    identity = ModelIdentity.from_predictor(predictor)
    assert (identity.name, identity.version, identity.sha256, identity.precision, identity.ood_threshold) == (
        "model.int8.onnx", __version__, "ab" * 32, "int8", 2.5)
    assert identity.class_codes["glioma"] == ("393564001", "SCT", "Glioma")
    plain = ModelIdentity.from_predictor(SimpleNamespace(name="m.keras", sha256="cd" * 32, class_names=["a", "b"],
                                                         ood_threshold=None, metadata={}))
    assert plain.precision == "fp32" and plain.class_codes == {"a": ("a", PRIVATE_SCHEME, "a"),
                                                               "b": ("b", PRIVATE_SCHEME, "b")}


@needs_dcmtk
def test_a_class_meaning_outside_the_sources_character_set_makes_the_sr_utf8(tmp_path):
    source = dicom_from_image(ULTRASOUND, tmp_path / "us.dcm", modality="US", SpecificCharacterSet="ISO_IR 100",
                              PatientName="Buc^Jérôme")
    codes = {name: (name, PRIVATE_SCHEME, f"{name} (腫瘍)") for name in CLASSES}
    model = ModelIdentity("model.onnx", __version__, MODEL.sha256, class_names=CLASSES, class_codes=codes)
    written = write_sr(row(), source, tmp_path / "sr", model)
    assert judged(written) == [] and charset_of(written) == "ISO_IR 192"
    name = [run("dcmdump", "+U8", "+P", "0010,0010", str(path)).stdout.split("#")[0] for path in (source, written)]
    assert name[0] == name[1] and "Jérôme" in name[1]  # the same name, read by DCMTK through each file's charset
    assert read_sr_finding(written, codes)["finding"] == "glioma"


# ---------------------------------------------------------------- packaging

def test_the_dicom_package_loads_without_pydicom_and_says_which_extra_is_missing(monkeypatch, tmp_path):
    code = ("import sys, s3f_edge.dicom, s3f_edge.dicom.sr; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydicom', 'highdicom')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    source = pydicom.dcmread(dicom_from_image(MRI, tmp_path / "mri.dcm"))
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"s3f-edge\[dicom\]"):
        build_sr(row(), source, MODEL)


@pytest.mark.parametrize("image, modality", [(MRI, "MR"), (ULTRASOUND, "US"), (MRI, "OT")])
def test_dicom_from_image_keeps_the_pixels(image, modality, tmp_path):
    import cv2
    import numpy as np

    path = dicom_from_image(image, tmp_path / "image.dcm", modality=modality)
    dataset = pydicom.dcmread(path)
    pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:
        grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
        same = all(np.array_equal(pixels[..., 0], pixels[..., i]) for i in (1, 2))
        pixels = grey if modality == "MR" or same else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    assert dataset.Modality == modality and np.array_equal(dataset.pixel_array, pixels)
    assert dataset.SOPClassUID == (pydicom.uid.MRImageStorage if modality == "MR" else
                                   pydicom.uid.SecondaryCaptureImageStorage)
    assert dicom_from_image(image, tmp_path / "again.dcm", modality=modality).read_bytes() == path.read_bytes()
    if not DCMTK:
        done = run("dcmdump", str(path))
        assert done.returncode == 0 and problems(done.stdout + done.stderr, "") == []
