"""The DICOM node (`s3f-edge listen`) as the tests drive it: a child process on a free loopback port, started and
stopped by its PID, with its log in a file; DICOM studies made from the sample images; a pynetdicom sender that
records the status of every instance."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3f_edge.results import read_results
from s3f_edge.testing import dicom_from_image

REPO = Path(__file__).resolve().parent.parent
MRI = sorted((REPO / "samples" / "brain_mri" / "test").rglob("*.jpg"))
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds until the node's first log line ("listening on ...")


def make_study(folder: Path, count: int, study: str, first: int = 0) -> list[Path]:
    """``count`` MR images of the sample test set (from the ``first``-th) as one DICOM study with UID ``study``."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [MRI[(first + i) % len(MRI)] for i in range(count)]
    return [dicom_from_image(image, folder / f"{first + i:04d}.dcm", StudyInstanceUID=study,
                             SeriesInstanceUID=f"{study}.1", InstanceNumber=first + i + 1,
                             SOPInstanceUID=f"{study}.1.{first + i + 1}",
                             **({"PatientID": "S3F-TEST", "AccessionNumber": "A1"}))
            for i, image in enumerate(images)]


def send(port: int, paths: list, calling_ae: str = "TESTSCU", ssl_context=None, timeout: float = 30,
         pause: float = 0.0, whole_pdus: bool = False) -> list[int]:
    """C-STORE each of ``paths`` (files or datasets) to the node over one association, ``pause`` seconds apart; the
    status of each (-1: the association was refused or lost before an answer). ``whole_pdus``: ignore the largest
    PDU the node offered and send each dataset in one PDU, as a misbehaving peer would."""
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage, SecondaryCaptureImageStorage

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    tls = (ssl_context, None) if ssl_context is not None else None
    association = ae.associate(LOOPBACK, port, ae_title="S3FEDGE", tls_args=tls)
    if not association.is_established:
        return [-1] * len(paths)
    if whole_pdus:
        from pynetdicom.pdu_primitives import MaximumLengthNotification

        for item in association.acceptor.user_information:
            if isinstance(item, MaximumLengthNotification):
                item.maximum_length_received = 0  # 0: no limit, so one PDU per message
    statuses = []
    try:
        for path in paths:
            if not association.is_established:
                statuses.append(-1)
                continue
            status = association.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else -1)
            time.sleep(pause)
    finally:
        if association.is_established:
            association.release()
    return statuses


def echo(port: int, calling_ae: str = "TESTSCU", ssl_context=None) -> int:
    """C-ECHO the node: its status, or -1 when no association."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    association = ae.associate(LOOPBACK, port, ae_title="S3FEDGE",
                               tls_args=(ssl_context, None) if ssl_context is not None else None)
    if not association.is_established:
        return -1
    try:
        status = association.send_c_echo()
        return int(status.Status) if "Status" in status else -1
    finally:
        association.release()


class NodeProcess:
    """``s3f-edge listen FOLDER --port PORT ...`` as a child process; ``stop()`` sends SIGTERM, ``kill()`` SIGKILL,
    both to its PID only."""

    def __init__(self, folder: Path, port: int, *options: str, allow: str = "TESTSCU"):
        self.folder, self.port, self.options, self.allow = Path(folder), port, options, allow
        self.process: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self) -> NodeProcess:
        log = self.folder.parent / f"{self.folder.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as stream:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "s3f_edge.cli", "listen", str(self.folder), "--port", str(self.port),
                 "--allow", self.allow, "--study-quiet", "0.5", *self.options],
                stdout=stream, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on" not in self.log:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the node did not start:\n{self.log}")
            time.sleep(0.1)
        return self

    @property
    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait (bounded): the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the node did not stop within {timeout} s of SIGTERM:\n{self.log}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def rows(self) -> list[dict]:
        """Every row the node wrote to its results files (the journals of open runs included)."""
        from s3f_edge.results import journal_path, read_journal

        rows = []
        for day in sorted(p.name for p in (self.folder / "incoming").glob("*") if p.is_dir()):
            results = self.folder / "results" / f"{day}.csv"
            for _ in range(50):  # the node may be replacing the file right now
                try:
                    rows += read_results(results) if results.exists() else []
                    journal = journal_path(results)
                    rows += read_journal(journal)[1] if journal.exists() else []
                    break
                except FileNotFoundError:
                    time.sleep(0.01)
        return rows

    def reports(self) -> list[Path]:
        return sorted((self.folder / "reports").rglob("*.dcm"))

    def outbox(self) -> list[Path]:
        return sorted((self.folder / "outbox").rglob("*.dcm"))
