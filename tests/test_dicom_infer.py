"""`infer --dicom-sr`: DICOM versions of the brain MRI test images and of breast ultrasound images get one
Structured Report each, which DCMTK accepts and which reads back to its row; a run killed with SIGKILL and
resumed leaves exactly one SR per image; a re-run of the same model gives the same UIDs."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dicom_judges import judged, needs_dcmtk

from s3f_edge.cli import main
from s3f_edge.results import read_journal, read_results
from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR
from s3f_edge.testing import dicom_from_image

pytest.importorskip("highdicom", reason="the dicom extra (make installs it)")

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL_DIR / "model.onnx"
MRI = sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))
ULTRASOUND = sorted((REPO / "samples" / "ultrasound" / "images").glob("*.png"))[:3]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """24 MR and 3 ultrasound DICOM images, a JPEG (answered, no SR), a DICOM file with no pixels (no answer)."""
    folder = tmp_path_factory.mktemp("scans")
    for image in MRI:
        dicom_from_image(image, folder / "mri" / image.parent.name / f"{image.stem}.dcm", modality="MR")
    for image in ULTRASOUND:
        dicom_from_image(image, folder / "us" / f"{image.stem}.dcm", modality="US")
    (folder / "mri" / "plain.jpg").write_bytes(MRI[0].read_bytes())
    dicom_from_image(MRI[1], folder / "broken" / "no-pixels.dcm", PixelData=None)
    return folder


def infer(scans: Path, tmp_path: Path, *extra: str):
    return CliRunner().invoke(main, ["infer", str(scans), "--recursive", "--model", str(MODEL), "--out",
                                     str(tmp_path / "r.csv"), "--dicom-sr", str(tmp_path / "sr"), "--quiet", *extra])


def reports_of(folder: Path) -> dict[str, dict]:
    """The SRs in ``folder``, read back with highdicom, by the SOP Instance UID of the image each is about."""
    from s3f_edge.dicom.sr import read_sr_finding

    found = {}
    for path in sorted(folder.glob("*.dcm")):
        finding = read_sr_finding(path)
        assert finding["source_sop_instance_uid"] not in found, "two SRs for one image"
        found[finding["source_sop_instance_uid"]] = {**finding, "file": path}
    return found


def sop_uid(path: str) -> str:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


@needs_dcmtk
def test_every_answered_dicom_image_gets_one_sr_that_reads_back_to_its_row(scans, tmp_path):
    result = infer(scans, tmp_path)
    assert result.exit_code == 3, result.output  # the DICOM file without pixels has no answer
    assert "DICOM reports: 27 written" in result.output
    rows = read_results(tmp_path / "r.csv")
    answered = [row for row in rows if row["status"] != "error" and row["path"].endswith(".dcm")]
    assert len(answered) == 27 and {row["status"] for row in answered} == {"ok", "refused"}
    reports = reports_of(tmp_path / "sr")
    assert len(reports) == 27
    for row in answered:
        report = reports[sop_uid(row["path"])]
        assert judged(report["file"]) == []
        assert report["model_sha256"] == row["model_sha256"]
        if row["status"] == "ok":
            assert report["finding"] == row["predicted_class"]
        else:
            assert report["finding"] == "not assessed"
        for name, probability in report["probabilities"].items():
            assert abs(probability - float(row[f"prob_{name}"])) <= 1e-6
        assert abs(report["ood_score"] - float(row["ood_score"])) <= 1e-6
    assert sum(row["status"] == "refused" for row in answered) >= 3  # the ultrasound images are refused
    error = next(row for row in rows if row["path"].endswith("no-pixels.dcm"))
    assert error["status"] == "error"

    again = infer(scans, tmp_path / "again")  # the same model on the same images: the same UIDs
    assert again.exit_code == 3, again.output
    assert sorted(p.name for p in (tmp_path / "sr").glob("*.dcm")) == sorted(
        p.name for p in (tmp_path / "again" / "sr").glob("*.dcm"))


def test_existing_reports_are_refused_without_overwrite_or_resume(scans, tmp_path):
    (tmp_path / "sr").mkdir()
    (tmp_path / "sr" / "1.2.3.dcm").write_bytes(b"an earlier report")
    refused = infer(scans, tmp_path)
    assert refused.exit_code == 1 and "--dicom-sr" in refused.stderr and "--overwrite" in refused.stderr
    assert not (tmp_path / "r.csv").exists()


@needs_dcmtk
def test_a_run_killed_mid_way_and_resumed_leaves_one_sr_per_image(scans, tmp_path):
    out, reports = tmp_path / "r.csv", tmp_path / "sr"
    command = [str(Path(sys.executable).parent / "s3f-edge"), "infer", str(scans), "--recursive", "--model",
               str(MODEL), "--out", str(out), "--dicom-sr", str(reports), "--batch-size", "1", "--quiet"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / ".r.csv.partial.jsonl"
    deadline = time.time() + 120
    while (not journal.exists() or len(read_journal(journal)[1]) < 8) and run.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert 8 <= len(read_journal(journal)[1]) < 29 and not out.exists()
    resumed = infer(scans, tmp_path, "--resume")
    assert resumed.exit_code == 3, resumed.output
    rows = read_results(out)
    answered = [row for row in rows if row["status"] != "error" and row["path"].endswith(".dcm")]
    found = reports_of(reports)
    assert len(answered) == 27 and len(list(reports.glob("*.dcm"))) == 27
    assert set(found) == {sop_uid(row["path"]) for row in answered}
    assert not [p for p in reports.iterdir() if p.name.startswith(".")], "a temporary file was left"
    assert all(judged(path) == [] for path in reports.glob("*.dcm"))


def test_the_runtime_without_highdicom_names_the_extra(scans, tmp_path):
    probe = ("import sys; sys.modules['highdicom'] = None\n"
             "from s3f_edge.cli import main\n"
             "main(sys.argv[1:], prog_name='s3f-edge')")
    done = subprocess.run([sys.executable, "-c", probe, "infer", str(scans), "--recursive", "--model", str(MODEL),
                           "--out", str(tmp_path / "r.csv"), "--dicom-sr", str(tmp_path / "sr"), "--quiet"],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "s3f-edge[dicom]" in lines[0], done.stderr
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "sr").exists()


@needs_dcmtk
def test_the_class_codes_given_to_export_code_the_findings(tmp_path):
    import json

    from s3f_edge.dicom.sr import read_sr_finding
    from s3f_edge.export.onnx_export import ExportOptions, export_model
    from s3f_edge.runtime import load_predictor
    from s3f_edge.testing import saved_model

    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    codes = {"glioma": ["GLI", "99MYSITE", "Glioma"], "meningioma": ["MEN", "99MYSITE", "Meningioma"],
             "notumor": ["NOTUMOR", "99MYSITE", "No tumour"],
             "pituitary": ["PIT", "99MYSITE", "Pituitary tumour"]}
    (tmp_path / "codes.json").write_text(json.dumps(codes))
    keras = saved_model(tmp_path / "m.keras", "brisc2025", (48, 48, 1), class_names=classes)
    onnx = export_model(keras, ExportOptions(out_dir=tmp_path / "x", class_codes=tmp_path / "codes.json")).onnx_path
    assert load_predictor(onnx).metadata["class_codes"] == codes
    dicom_from_image(MRI[0], tmp_path / "scans" / "a.dcm")
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "scans"), "--model", str(onnx), "--out",
                                       str(tmp_path / "r.csv"), "--dicom-sr", str(tmp_path / "sr"), "--quiet"])
    assert result.exit_code == 0, result.output
    row = read_results(tmp_path / "r.csv")[0]
    report = next((tmp_path / "sr").glob("*.dcm"))
    assert judged(report) == []
    assert read_sr_finding(report, {k: tuple(v) for k, v in codes.items()})["finding"] == row["predicted_class"]
    text = subprocess.run(["dsrdump", str(report)], capture_output=True, text=True).stdout
    value, scheme, meaning = codes[row["predicted_class"]]
    assert f'({value},{scheme},"{meaning}")' in text


def test_the_review_page_counts_the_reports(scans, tmp_path):
    result = infer(scans / "us", tmp_path, "--report", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "DICOM reports" in page and f"3 in {tmp_path / 'sr'}" in page
    again = CliRunner().invoke(main, ["report", str(tmp_path / "r.csv"), "--dicom-sr", str(tmp_path / "sr"), "--out",
                                      str(tmp_path / "again.html"), "--quiet"])
    assert again.exit_code == 0, again.output
    assert f"3 in {tmp_path / 'sr'}" in (tmp_path / "again.html").read_text(encoding="utf-8")
