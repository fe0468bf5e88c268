"""The DICOM node's spool: every received image on disk before the sender hears Success.

Layout under the node's folder::

    incoming/<YYYY-MM-DD>/<Study Instance UID>/<SOP Instance UID>.dcm   images received that day
    results/<YYYY-MM-DD>.csv                                           their rows (infer's results and journal)
    reports/<YYYY-MM-DD>/<SR SOP Instance UID>.dcm                      their DICOM SRs
    outbox/<destination>/<Study Instance UID>/<SR SOP Instance UID>.dcm SRs not yet accepted by a destination
    .partial/                                                          files being written (never read as images)

An image is written to ``.partial``, synced, renamed into ``incoming`` and the folder synced: a file in
``incoming`` is whole, and an acknowledged image survives a crash or a power cut. The UIDs that name files and
folders are checked to be DICOM UIDs (digits and dots), so no sender can write outside the spool.
"""
from __future__ import annotations

import os
import re
import tempfile
from datetime import date
from pathlib import Path

UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # PS3.5 section 9.1
UID_MAX_LENGTH = 64


def is_uid(value: object) -> bool:
    """Whether ``value`` is a valid DICOM UID (and so a safe file or folder name)."""
    text = str(value or "")
    return 0 < len(text) <= UID_MAX_LENGTH and UID_PATTERN.fullmatch(text) is not None


def sync_folder(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (POSIX: the folder's entry is synced on its own)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class Spool:
    """The node's folders (made when missing).

    Args:
        root: the node's folder.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.incoming, self.results, self.reports = self.root / "incoming", self.root / "results", self.root / "reports"
        self.outbox, self.partial = self.root / "outbox", self.root / ".partial"
        for folder in (self.incoming, self.results, self.reports, self.outbox, self.partial):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.partial.iterdir():  # a write a crash interrupted: never acknowledged, never an image
            leftover.unlink(missing_ok=True)

    @staticmethod
    def day(today: date | None = None) -> str:
        return (today or date.today()).isoformat()

    def day_folder(self, day: str) -> Path:
        """The images received on ``day``."""
        return self.incoming / day

    def results_file(self, day: str) -> Path:
        """The rows of the images received on ``day``."""
        return self.results / f"{day}.csv"

    def reports_folder(self, day: str) -> Path:
        """The SRs of the images received on ``day``."""
        return self.reports / day

    def days(self) -> list[str]:
        """Every day with received images, oldest first."""
        return sorted(p.name for p in self.incoming.iterdir() if p.is_dir() and not p.name.startswith("."))

    def store(self, encoded: bytes, study_uid: str, sop_instance_uid: str, day: str | None = None) -> Path:
        """Write one received instance (preamble, file meta and dataset, as received) durably; returns its path.

        Args:
            encoded: the instance in the DICOM file format.
            study_uid, sop_instance_uid: its UIDs (checked by the caller with ``is_uid``).
            day: the day folder (default: today).

        Returns:
            ``incoming/<day>/<study>/<instance>.dcm``; an instance received again replaces its earlier file.
        """
        if not (is_uid(study_uid) and is_uid(sop_instance_uid)):
            raise ValueError("a study or instance UID is not a DICOM UID")
        folder = self.day_folder(day or self.day()) / study_uid
        if not folder.is_dir():
            new = [path for path in (folder.parent, folder) if not path.is_dir()]  # the day's folder may be new too
            folder.mkdir(parents=True, exist_ok=True)
            for path in new:  # each new folder's entry in its parent made durable, as the image's will be
                sync_folder(path.parent)
        handle, temporary = tempfile.mkstemp(dir=self.partial, suffix=".dcm")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(encoded)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)
            target = folder / f"{sop_instance_uid}.dcm"
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        sync_folder(folder)
        return target

    def queue_folder(self, destination: str) -> Path:
        """The SRs waiting for ``destination``."""
        return self.outbox / destination

    def queue(self, report: Path, study_uid: str, destinations: list[str]) -> None:
        """Put the SR ``report`` in each destination's outbox (a hard link: one copy on disk, removed when sent)."""
        for destination in destinations:
            folder = self.queue_folder(destination) / study_uid
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / report.name
            temporary = self.partial / f"{destination}-{report.name}"
            temporary.unlink(missing_ok=True)
            os.link(report, temporary)
            os.replace(temporary, target)  # a report written again (same UID) replaces the queued one
            sync_folder(folder)
