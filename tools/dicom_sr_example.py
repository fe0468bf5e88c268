"""Write docs/generated/dicom_sr_example.md: the DICOM SRs of the bundled model's answers to two sample images made
DICOM files (a brain MR image it classifies, a breast ultrasound image it refuses), as DCMTK's dsrdump prints them.

    python tools/dicom_sr_example.py

The images go through ``infer_folder`` as any DICOM input does, and each row through ``write_sr``; the SRs' content
time is fixed, so the figure changes only when the SRs do. Needs the dicom extra, an ONNX Runtime and DCMTK's
dsrdump (apt-get install dcmtk); then ``python tools/update_docs.py`` copies the figure into docs/dicom.md.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "generated" / "dicom_sr_example.md"
MRI = REPO / "samples" / "brain_mri" / "test" / "glioma" / "Te-glTr_0000.jpg"
ULTRASOUND = REPO / "samples" / "ultrasound" / "images" / "benign_10.png"
WHEN = datetime(2025, 1, 2, 10, 30, 0)


def dump(path: Path) -> str:
    """dsrdump's view of an SR: the document header and its content tree (long values in full)."""
    done = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=True)
    if done.stderr.strip():
        raise SystemExit(f"error: dsrdump reports on {path.name}:\n{done.stderr}")
    return done.stdout.strip("\n")


def main() -> None:
    if shutil.which("dsrdump") is None:
        raise SystemExit("error: dsrdump not found: apt-get install dcmtk")
    from s3f_edge.dicom.sr import ModelIdentity, write_sr
    from s3f_edge.results import read_results
    from s3f_edge.runtime import infer_folder, load_predictor
    from s3f_edge.runtime.predictor import default_model
    from s3f_edge.testing import dicom_from_image

    predictor = load_predictor(default_model())
    model = ModelIdentity.from_predictor(predictor)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "images"
        folder.mkdir()
        dicom_from_image(MRI, folder / "mri.dcm", PatientName="Example^Brain", PatientID="EX-0001")
        dicom_from_image(ULTRASOUND, folder / "ultrasound.dcm", modality="US", PatientName="Example^Breast",
                         PatientID="EX-0002")
        infer_folder(folder, predictor, Path(temporary) / "results.csv", progress=False)
        rows = {Path(row["path"]).stem: row for row in read_results(Path(temporary) / "results.csv")}
        if (rows["mri"]["status"], rows["ultrasound"]["status"]) != ("ok", "refused"):
            raise SystemExit(f"error: expected the MR image classified and the ultrasound refused, got {rows}")
        dumps = {name: dump(write_sr(row, row["path"], Path(temporary) / "sr", model, when=WHEN))
                 for name, row in rows.items()}
    refused_group = dumps["ultrasound"][dumps["ultrasound"].index("    <contains CONTAINER:(,,\"Measurement Group\")"):]
    OUT.write_text(
        "The SR of the MR image, classified (`dsrdump +Pl`):\n\n```text\n" + dumps["mri"] + "\n```\n\n"
        "The measurement group of the ultrasound image's SR, refused:\n\n```text\n" + refused_group + "\n```\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
