"""The DICOM node's sending side: each SR goes from the outbox to every destination, and leaves the outbox only
once the destination accepted it.

A destination is a DICOM AE (C-STORE: ``AE@host:port``) or a DICOMweb service (STOW-RS: an http(s) URL). One
thread per destination sends the SRs waiting in ``outbox/<destination>/``: over one association kept open while
there is work (DICOM), or a few per request (STOW-RS). A destination that cannot be reached, or that fails a whole
request, is tried again with a back-off that doubles up to a limit; an SR the destination itself refuses (a
failure status for that instance) is tried three times, then moved to ``rejected/<destination>/`` with a log
line. The outbox is on disk: SRs not yet sent when the node stops are sent when it starts again.

pynetdicom, pydicom and dicomweb-client are imported only when a node starts.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3f_edge.errors import DestinationDown, InputError

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GROUP = 16  # SRs per STOW request, and between two looks at the outbox
ATTEMPTS = 3  # sends of one SR that the destination refused before it is set aside
_AE_DESTINATION = re.compile(r"(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})")


@dataclass
class Sent:
    """What a destination made of one SR."""
    path: Path
    accepted: bool
    why: str = ""


def no_delay(association) -> None:
    """Send small DICOM messages at once (TCP_NODELAY): without it a C-STORE and its answer can each wait for the
    peer's delayed acknowledgement, tens of milliseconds per image. pynetdicom sets no socket option of the kind."""
    try:
        association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # no socket (any more), or another pynetdicom: only slower
        pass


class CStoreDestination:
    """A DICOM AE that stores SRs (C-STORE), e.g. the PACS. One association is kept open while there is work.

    Args:
        ae_title, host, port: the destination's AE title and address.
        calling_ae: the node's own AE title.
    """

    def __init__(self, ae_title: str, host: str, port: int, calling_ae: str):
        self.ae_title, self.host, self.port, self.calling_ae = ae_title, host, port, calling_ae
        self.name = f"{ae_title}@{host}:{port}"
        self.folder_name = re.sub(r"[^A-Za-z0-9.-]", "_", f"dicom-{ae_title}-{host}-{port}")
        self._association = None

    def _associated(self):
        if self._association is not None and self._association.is_established:
            return self._association
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(COMPREHENSIVE_3D_SR)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        association = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not association.is_established:
            state = "rejected the association" if association.is_rejected else "cannot be reached"
            raise DestinationDown(f"{self.name} {state}")
        no_delay(association)
        self._association = association
        return association

    def send(self, paths: list[Path]) -> list[Sent]:
        """C-STORE ``paths`` over the open association (opened if need be)."""
        association = self._associated()
        sent = []
        for path in paths:
            try:
                status = association.send_c_store(path)
            except RuntimeError:  # the peer ended the association since it was opened
                status = {}
            if "Status" not in status:  # no answer: the connection was lost
                self.close()
                raise DestinationDown(f"{self.name} stopped answering")
            code = int(status.Status)
            accepted = code == 0 or 0xB000 <= code <= 0xBFFF  # success, or a warning: stored
            sent.append(Sent(path, accepted, "" if accepted else f"status 0x{code:04X}"))
        return sent

    def close(self) -> None:
        """Release the association, if open (the outbox is empty, or the node stops)."""
        association, self._association = self._association, None
        if association is not None and association.is_established:
            association.release()


class StowDestination:
    """A DICOMweb service that stores SRs (STOW-RS), e.g. ``http://pacs:8042/dicom-web``.

    Args:
        url: the service's base URL (the one QIDO-RS, WADO-RS and STOW-RS share).
    """

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.name = self.url
        self.folder_name = "dicomweb-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]

    def close(self) -> None:
        """Nothing is kept open between requests."""

    def send(self, paths: list[Path]) -> list[Sent]:
        """STOW-RS ``paths`` in one request."""
        import pydicom
        import requests
        from dicomweb_client.api import DICOMwebClient

        datasets = [pydicom.dcmread(path) for path in paths]
        client = DICOMwebClient(self.url, timeout=30)
        client.set_http_retry_params(retry=False)  # the sender's back-off decides when to try again
        try:
            answer = client.store_instances(datasets)
        except requests.HTTPError as error:
            if error.response is None or error.response.status_code != 409:  # 409: some failed; the rest stored
                raise DestinationDown(f"{self.name} answered {error}") from None
            answer = None
        except (requests.RequestException, OSError) as error:
            raise DestinationDown(f"{self.name} cannot be reached ({type(error).__name__})") from None
        failed = {str(item.ReferencedSOPInstanceUID): int(item.get("FailureReason", 0))
                  for item in (answer.get("FailedSOPSequence", []) if answer is not None else [])}
        stored = {str(item.ReferencedSOPInstanceUID) for item in
                  (answer.get("ReferencedSOPSequence", []) if answer is not None else [])}
        sent = []
        for path, dataset in zip(paths, datasets, strict=True):
            uid = str(dataset.SOPInstanceUID)
            accepted = uid in stored and uid not in failed
            sent.append(Sent(path, accepted, "" if accepted else f"failure reason 0x{failed.get(uid, 0):04X}"))
        return sent


def parse_destination(text: str, calling_ae: str):
    """A destination from the command line: ``AE@host:port`` (C-STORE) or an http(s) URL (STOW-RS).

    Raises:
        InputError: neither form.
    """
    if text.startswith(("http://", "https://")):
        return StowDestination(text)
    match = _AE_DESTINATION.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InputError(f"--send-to {text!r}: give AE_TITLE@host:port (C-STORE) or a DICOMweb URL "
                         "(http://host:port/dicom-web, STOW-RS)")
    return CStoreDestination(match["ae"], match["host"], int(match["port"]), calling_ae)


def waiting(folder: Path) -> list[Path]:
    """The SRs waiting in a destination's outbox folder, oldest first."""
    found = []
    for study in os.scandir(folder) if folder.is_dir() else ():
        if study.is_dir() and not study.name.startswith("."):
            found += [entry for entry in os.scandir(study.path) if entry.name.endswith(".dcm")]
    found.sort(key=lambda entry: (entry.stat().st_mtime_ns, entry.name))
    return [Path(entry.path) for entry in found]


class Sender(threading.Thread):
    """Sends one destination's outbox until ``stop`` is set.

    Args:
        destination: a ``CStoreDestination`` or ``StowDestination``.
        folder: its outbox folder; ``rejected``: where SRs it refused ``ATTEMPTS`` times go.
        log: called with a line when the destination goes down, comes back, or refuses an SR.
        sent: called with (Study Instance UID, SRs accepted) after each request.
        stop: set to end the thread (after the request in hand); ``wake``: set when an SR is queued.
        retry_max: the longest wait between tries of a destination that is down, in seconds.
    """

    def __init__(self, destination, folder: Path, rejected: Path, log: Callable[[str], None],
                 sent: Callable[[str, int], None], stop: threading.Event, retry_max: float = 60.0):
        super().__init__(name=f"send to {destination.name}", daemon=True)
        self.destination, self.folder, self.rejected = destination, folder, rejected
        self.log, self.sent, self.stop = log, sent, stop
        self.wake = threading.Event()
        self.retry_max = retry_max
        self.attempts: dict[Path, int] = {}
        self.down_since: str | None = None

    def run(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            self.wake.clear()
            paths = waiting(self.folder)[:GROUP]
            if not paths:
                self.destination.close()  # idle: no association held open
                self.wake.wait(1.0)
                continue
            try:
                outcome = self._send(paths)
            except DestinationDown as error:
                if self.down_since is None:
                    self.down_since = str(error)
                    self.log(f"{error}: its reports wait in the outbox, tried again every {self.retry_max:g} s at "
                             "most")
                self.stop.wait(delay)
                delay = min(2 * delay, self.retry_max)
                continue
            if self.down_since is not None:
                self.log(f"{self.destination.name} answers again: sending the outbox")
                self.down_since = None
            delay = 1.0
            self._settle(outcome)
        self.destination.close()

    def _send(self, paths: list[Path]) -> list[Sent]:
        try:
            return self.destination.send(paths)
        except DestinationDown:
            raise
        except Exception as error:  # a thread that died would leave its outbox unsent while the node runs on
            self.destination.close()
            raise DestinationDown(f"{self.destination.name}: sending failed ({type(error).__name__}: {error})") \
                from error

    def _settle(self, outcome: list[Sent]) -> None:
        per_study: dict[str, int] = {}
        for item in outcome:
            study = item.path.parent.name
            if item.accepted:
                item.path.unlink(missing_ok=True)
                self.attempts.pop(item.path, None)
                per_study[study] = per_study.get(study, 0) + 1
                continue
            self.attempts[item.path] = self.attempts.get(item.path, 0) + 1
            if self.attempts[item.path] >= ATTEMPTS:
                target = self.rejected / study / item.path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item.path, target)
                self.attempts.pop(item.path, None)
                self.log(f"{self.destination.name} refused report {item.path.name} of study {study} "
                         f"{ATTEMPTS} times ({item.why}): set aside in {target.parent}")
            else:
                os.utime(item.path)  # to the back of the queue: the others are not held up by it
        for study, count in per_study.items():
            self.sent(study, count)
