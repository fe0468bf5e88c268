"""A DICOM Structured Report per answered DICOM input of an ``infer`` run: a sink of the inference loop.

The loop hands each batch's fresh rows to ``StructuredReports.accept`` before it journals them. An SR is named by
its SOP Instance UID, which derives from the image and the model, so a file answered again after a killed run
(its row was not journaled yet) replaces its SR instead of adding a second one.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from s3f_edge.dicom.identity import ModelIdentity, check_class_codes, default_class_codes
from s3f_edge.errors import DicomSRError, MissingFileError

DICOM_SUFFIXES = (".dcm",)
ANSWERED = ("ok", "refused")  # an error row has no answer to report


class StructuredReports:
    """Writes the SR of every answered DICOM input into ``out_dir``; rows of other files are left alone.

    Args:
        out_dir: the folder of the SRs (``infer --dicom-sr``).
        model: the model that answers, with the codes of its classes (``ModelIdentity.from_predictor``).
        written: called with each row and the SR written for it (the DICOM node queues it for sending).

    Raises:
        InputError: the model's class codes do not fit its classes.
        MissingDependencyError: highdicom is not installed (the ``dicom`` extra).
    """

    def __init__(self, out_dir: str | Path, model: ModelIdentity,
                 written: Callable[[dict, Path], None] | None = None):
        from s3f_edge.dependencies import require

        require("writing DICOM reports (--dicom-sr)", "dicom", "pydicom", "highdicom")
        model.class_codes = check_class_codes(model.class_codes or default_class_codes(model.class_names),
                                              model.class_names)
        self.out_dir, self.model, self.on_written = Path(out_dir), model, written
        self.written = 0  # SRs written by this run
        self.without = 0  # answered DICOM inputs that got none (their row's reason says why)

    def accept(self, rows: list[dict]) -> None:
        """Write the SR of each answered DICOM row; a source that cannot have one gets the reason in its row."""
        from s3f_edge.dicom.sr import write_sr

        for row in rows:
            if row["status"] not in ANSWERED or Path(row["path"]).suffix.lower() not in DICOM_SUFFIXES:
                continue
            try:
                report = write_sr(row, row["path"], self.out_dir, self.model)
                self.written += 1
                if self.on_written is not None:
                    self.on_written(row, report)
            except (DicomSRError, MissingFileError) as error:  # a source deleted since it was read: no report
                self.without += 1
                why = str(error).removeprefix(f"{row['path']}: ")
                row["reason"] = f"{row['reason']}; {why}" if row["reason"] else why
