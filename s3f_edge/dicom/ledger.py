"""The DICOM node's log of studies: one line per study once it has gone quiet — what was received, classified,
refused, failed and sent. A study is forgotten once its line is written (memory stays flat on a node that runs for
months); reports of it sent later get a line of their own."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

UNSETTLED_QUIET = 12  # a study still waiting (for a destination that is down) is written up after 12x the quiet time


@dataclass
class _Study:
    received: int = 0
    senders: set[str] = field(default_factory=set)
    ok: int = 0
    refused: int = 0
    failed: int = 0
    reports: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)


class StudyLedger:
    """Counts per study, from the receiver, the inference loop (as a sink of its rows) and the senders.

    Args:
        log: called with each study's line.
        destinations: the destinations' names, in the order the lines name them.
        quiet_seconds: how long a study must see nothing new before its line is written.
    """

    def __init__(self, log: Callable[[str], None], destinations: list[str], quiet_seconds: float = 5.0):
        self.log, self.destinations, self.quiet_seconds = log, destinations, quiet_seconds
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()

    def _study(self, uid: str) -> _Study:
        study = self._studies.setdefault(uid, _Study())
        study.last = time.monotonic()
        return study

    def received(self, study_uid: str, calling_ae: str) -> None:
        with self._lock:
            study = self._study(study_uid)
            study.received += 1
            study.senders.add(calling_ae)

    def accept(self, rows: list[dict]) -> None:
        """The inference loop's fresh rows (a ``RowSink``): the study is the spooled image's folder."""
        with self._lock:
            for row in rows:
                study = self._study(Path(row["path"]).parent.name)
                status = row["status"]
                if status == "ok":
                    study.ok += 1
                elif status == "refused":
                    study.refused += 1
                else:
                    study.failed += 1

    def reported(self, study_uid: str) -> None:
        with self._lock:
            self._study(study_uid).reports += 1

    def sent(self, destination: str, study_uid: str, count: int) -> None:
        with self._lock:
            study = self._study(study_uid)
            study.sent[destination] = study.sent.get(destination, 0) + count

    @staticmethod
    def line(uid: str, study: _Study, destinations: list[str]) -> str:
        parts = []
        if study.received:
            parts.append(f"{study.received} received from {', '.join(sorted(study.senders))}")
        if study.ok or study.refused or study.failed:
            parts.append(f"{study.ok} classified, {study.refused} refused, {study.failed} failed")
        for name in destinations:
            sent = study.sent.get(name, 0)
            if study.reports:
                parts.append(f"{sent} of {study.reports} report(s) sent to {name}")
            elif sent:
                parts.append(f"{sent} report(s) sent to {name}")
        return f"study {uid}: " + "; ".join(parts or ["nothing new"])

    def _settled(self, study: _Study) -> bool:
        """Whether every image received is classified and every report sent."""
        classified = study.ok + study.refused + study.failed
        return classified >= study.received and all(study.sent.get(name, 0) >= study.reports
                                                    for name in self.destinations)

    def flush(self, everything: bool = False) -> None:
        """Write the line of every study that is settled and quiet for ``quiet_seconds``, or quiet for
        ``UNSETTLED_QUIET`` times as long (a destination down), or (``everything``) of every study; and forget them."""
        now = time.monotonic()
        with self._lock:
            done = [uid for uid, study in self._studies.items()
                    if everything or now - study.last >= self.quiet_seconds * (1 if self._settled(study)
                                                                               else UNSETTLED_QUIET)]
            lines = [self.line(uid, self._studies.pop(uid), self.destinations) for uid in done]
        for text in lines:
            self.log(text)
