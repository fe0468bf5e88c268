"""DICOM reports over the whole brain MRI test set: what `--dicom-sr` costs, and whether every report holds up.

The test images of $S3F_EDGE_DATA/brain_tumor_mri are written as DICOM MR images (``testing.dicom_from_image``,
once, into a scratch folder kept between runs with --keep), then, in one run and in turns (fastest of --rounds):
`infer` over them alone, and `infer --dicom-sr`. Every report written is checked with DCMTK's dsrdump (no
warning, no error) and read back with highdicom against its row (finding and every probability to 1e-6).

    S3F_EDGE_DATA=/path/to/data .venv/bin/python benchmarks/dicom_reports.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_files import write_results  # noqa: E402  (benchmarks/ is the script's folder)

from s3f_edge.runtime.predictor import DEFAULT_MODEL_DIR  # noqa: E402
from s3f_edge.testing import dicom_from_image, require_data  # noqa: E402

MODEL = DEFAULT_MODEL_DIR / "model.onnx"
CLI = [sys.executable, "-m", "s3f_edge.cli"]


def dicom_test_set(scratch: Path, limit: int | None) -> tuple[Path, int]:
    """The test images as DICOM files under ``scratch`` (made once); the folder and the number of images."""
    images = sorted((require_data("brain_tumor_mri", "--data") / "test").rglob("*.jpg"))[:limit]
    folder = scratch / "dicom"
    for image in images:
        target = folder / image.parent.name / f"{image.stem}.dcm"
        if not target.exists():
            dicom_from_image(image, target, modality="MR")
    return folder, len(images)


def timed_infer(folder: Path, out: Path, *extra: str) -> float:
    """Seconds of one `infer` process, start to exit (its output and reports removed first)."""
    for path in (out, out.with_name(f".{out.name}.partial.jsonl")):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run([*CLI, "infer", str(folder), "--recursive", "--model", str(MODEL), "--out", str(out),
                           "--quiet", "--overwrite", *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"infer failed: {done.stderr[-2000:]}")
    return seconds


def check_reports(results: Path, reports: Path) -> dict:
    """Every answered row's report: dsrdump without a problem, and read back to the row."""
    import pydicom

    from s3f_edge.dicom.sr import read_sr_finding
    from s3f_edge.results import read_results

    rows = [row for row in read_results(results) if row["status"] in ("ok", "refused")]
    found = {read_sr_finding(path)["source_sop_instance_uid"]: path for path in reports.glob("*.dcm")}
    faults, instances = [], set()
    for row in rows:
        instance = pydicom.dcmread(row["path"], stop_before_pixels=True).SOPInstanceUID
        instances.add(instance)  # files of identical pixels are one instance (their UIDs derive from the pixels)
        path = found.get(instance)
        if path is None:
            faults.append(f"{row['path']}: no report")
            continue
        dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True)
        if dump.returncode or any(line[:2] in ("W:", "E:", "F:") for line in (dump.stdout + dump.stderr).splitlines()):
            faults.append(f"{path.name}: dsrdump objects")
        back = read_sr_finding(path)
        expected = row["predicted_class"] if row["status"] == "ok" else "not assessed"
        if back["finding"] != expected or any(abs(p - float(row[f"prob_{name}"])) > 1e-6
                                              for name, p in back["probabilities"].items()):
            faults.append(f"{path.name}: does not read back to its row")
    return {"answered": len(rows), "instances": len(instances), "reports": len(found), "faults": faults[:20],
            "fault_count": len(faults),
            "refused": sum(row["status"] == "refused" for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--limit", type=int, default=None, help="Use the first N test images only.")
    parser.add_argument("--rounds", type=int, default=3, help="Timed runs of each, in turns; the fastest is kept.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the DICOM test set in this folder.")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="s3f-edge-dicom-"))
    try:
        folder, images = dicom_test_set(scratch, args.limit)
        plain, reported = [], []
        for _ in range(args.rounds):  # in turns: the machine's slow and fast phases touch both alike
            plain.append(timed_infer(folder, scratch / "plain.csv"))
            shutil.rmtree(scratch / "sr", ignore_errors=True)
            reported.append(timed_infer(folder, scratch / "sr.csv", "--dicom-sr", str(scratch / "sr")))
        checked = check_reports(scratch / "sr.csv", scratch / "sr")
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    result = {"images": images, "infer_seconds": min(plain), "infer_dicom_sr_seconds": min(reported),
              "ratio": min(reported) / min(plain), **checked}
    lines = [f"| brain MRI test set as DICOM ({images:,} images, bundled model, ONNX) | measured |", "|---|---|",
             f"| `infer` | {images / result['infer_seconds']:.1f} images/s |",
             f"| `infer --dicom-sr` | {images / result['infer_dicom_sr_seconds']:.1f} images/s "
             f"({result['ratio']:.2f}× the time) |",
             f"| reports written / DICOM instances answered ({checked['answered']:,} files, "
             f"{checked['refused']} refused) | {checked['reports']:,} / {checked['instances']:,} |",
             f"| reports dsrdump objects to, or that do not read back to their row | {checked['fault_count']} |", "",
             f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, fastest of {args.rounds} runs of each in turns, "
             "whole processes; `python benchmarks/dicom_reports.py`."]
    write_results(args.out, "dicom_reports", result, lines)


if __name__ == "__main__":
    main()
