"""`s3f-edge listen`: a DICOM node that classifies the images it receives and sends a DICOM SR of each answer to
the PACS.

Three parts, each durable on its own (``spool.py`` lays out the folder):

- the receiver (``scp.py``) acknowledges an image only once it is whole on disk;
- the classifier is the inference loop of ``infer`` (``runtime/infer.py``) over each day's spool folder, driven
  in micro-batches (up to ``batch_size`` images, or what arrived within ``max_wait`` seconds of the first): the same
  predictor, preprocessing, refusal, rows, journal and results file, with a ``StructuredReports`` sink that writes
  each SR and queues it before the row is journaled;
- one sender per destination (``outbox.py``) empties its outbox, trying again with back-off while it is down.

The receiver and the senders run in a process of their own (``network.py``), so that pynetdicom's Python work does
not hold the classifier's interpreter lock; the spool and the outbox are on disk between the two.

A kill at any moment loses nothing: on start the loop resumes every day's spool from its results and journal, so
every acknowledged image is classified; an SR's UID derives from its image and the model, so one answered twice
(killed between its SR and its journal line) is the same SR, stored once by the PACS; unsent SRs wait in the
outbox. SIGTERM or Ctrl-C stops cleanly: no new association, the batch in hand answered and journaled, the results
files written, the senders stopped after their request in hand.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from s3f_edge.dicom.ledger import StudyLedger
from s3f_edge.dicom.scp import tls_context
from s3f_edge.dicom.spool import Spool
from s3f_edge.errors import InputError, S3FEdgeError
from s3f_edge.outputs import ensure_writable
from s3f_edge.results import journal_path, same_fingerprint
from s3f_edge.runtime.infer import InferOptions, answer_planned, finish_inference, plan_inference

FINISH_EVERY = 60.0  # seconds: a busy node still rewrites its results file this often


@dataclass
class NodeOptions:
    """Everything ``s3f-edge listen`` is asked to do.

    Attributes:
        folder: the node's folder (spool, results, reports, outbox); one node per folder.
        ae_title: the node's AE title.
        host, port: where it listens (127.0.0.1 unless told otherwise; port 0: any free port).
        allowed: calling AE titles accepted (others rejected at association); None: any.
        destinations: where SRs go: ``AE@host:port`` (C-STORE) or a DICOMweb URL (STOW-RS); none: kept in
            ``reports/`` only.
        model, providers, batch_size, workers, accept_ood, ood_threshold: as ``InferOptions``.
        max_wait: seconds a received image waits for others to fill its batch.
        max_dataset_mb: the largest dataset accepted, in MiB.
        max_pdu_kb: the largest PDU the node offers to receive, in KiB (0: no limit).
        tls_cert, tls_key: serve DICOM over TLS with this certificate and key; tls_ca: then also require a client
            certificate signed by it.
        retry_max: the longest wait between tries of a destination that is down, in seconds.
        study_quiet: seconds without news of a study before its log line is written.
    """
    folder: Path
    ae_title: str = "S3FEDGE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed: list[str] | None = None
    destinations: list[str] = field(default_factory=list)
    model: Path | None = None
    providers: list[str] | None = None
    batch_size: int = 32
    workers: int = 2
    accept_ood: bool = False
    ood_threshold: float | None = None
    max_wait: float = 0.5
    max_dataset_mb: float = 256.0
    max_pdu_kb: int = 256
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    retry_max: float = 60.0
    study_quiet: float = 5.0

    def usage_problems(self) -> list[str]:
        """What is wrong with these options from the options alone."""
        problems = []
        if not 0 < len(self.ae_title.strip()) <= 16:
            problems.append(f"--ae-title {self.ae_title!r}: give 1 to 16 characters")
        if self.allowed is not None and not self.allowed:
            problems.append("--allow: give the calling AE titles that may send images (or --allow-any)")
        if not 0 <= self.port < 65536:
            problems.append(f"--port {self.port}: give 0 to 65535")
        if (self.tls_cert is None) != (self.tls_key is None) or (self.tls_ca is not None and self.tls_cert is None):
            problems.append("--tls-cert and --tls-key go together (and --tls-ca needs them)")
        if self.accept_ood and self.ood_threshold is not None:
            problems.append("--accept-ood refuses nothing and --ood-threshold sets what to refuse: give one of them")
        if not (self.max_wait >= 0 and self.max_dataset_mb > 0 and self.max_pdu_kb >= 0 and self.retry_max > 0):
            problems.append("--max-wait, --max-pdu-kb must be at least 0; --max-dataset-mb, --retry-max above 0")
        return problems

    def inference(self, spool: Spool, day: str, resume: bool) -> InferOptions:
        """The inference loop's options for one day's spool folder."""
        return InferOptions(spool.day_folder(day), spool.results_file(day), model=self.model, providers=self.providers,
                            batch_size=self.batch_size, recursive=True, workers=self.workers, resume=resume,
                            accept_ood=self.accept_ood, ood_threshold=self.ood_threshold, progress=False)


class _Day:
    """One day's spool folder under the inference loop: a plan kept open while images arrive, finished (the
    results file written, the journal removed) when the node is idle, every ``FINISH_EVERY`` seconds, and at
    the end."""

    def __init__(self, node: DicomNode, day: str):
        self.node, self.day = node, day
        self.plan, self.started = None, 0.0
        self.answered: dict[str, dict] = {}  # path -> fingerprint answered under the open plan
        from s3f_edge.dicom.reports import StructuredReports

        self.reports = StructuredReports(node.spool.reports_folder(day), node.identity, written=node.queue_report)

    def answer(self, paths: list[Path]) -> None:
        """Answer ``paths`` (none: whatever the day's folder holds unanswered)."""
        node = self.node
        if self.plan is None:
            results = node.spool.results_file(self.day)
            resume = results.exists() or journal_path(results).exists()
            self.plan = plan_inference(node.options.inference(node.spool, self.day, resume), node.predictor)
            self.started = time.monotonic()
            self.answered = {path: row for path, row in self.plan.previous.items()}
        else:
            self.plan.add(self._unanswered(paths))
        if self.plan.files:
            answer_planned(self.plan, node.executor, progress=False, sinks=(self.reports, node.ledger, self))
        if time.monotonic() - self.started >= FINISH_EVERY:
            self.finish()

    def _unanswered(self, paths: list[Path]) -> list[Path]:
        """Paths not answered under the open plan, or received again (replaced) since."""
        from s3f_edge.results import file_fingerprint

        fresh = []
        for path in dict.fromkeys(paths):
            row = self.answered.get(str(path))
            if row is None or not same_fingerprint(row, file_fingerprint(path)):
                fresh.append(path)
        return fresh

    def accept(self, rows: list[dict]) -> None:
        """A sink of the loop: remember what was answered, so that a path queued again is not answered twice."""
        self.answered.update((row["path"], row) for row in rows)

    def finish(self) -> None:
        if self.plan is not None:
            finish_inference(self.plan, self.node.predictor)
            self.plan, self.answered = None, {}


class DicomNode:
    """A running node: receiver, classifier and senders over one folder.

    Args:
        options: the ``NodeOptions``.
        log: called with each log line (already time-stamped).
    """

    def __init__(self, options: NodeOptions, log: Callable[[str], None]):
        problems = options.usage_problems()
        if problems:
            raise InputError(problems[0])
        from s3f_edge.dicom.outbox import parse_destination

        self.options, self.log = options, log
        self.destinations = [parse_destination(text, options.ae_title) for text in options.destinations]
        self.tls = tls_context(options)
        ensure_writable(options.folder, "FOLDER", folder=True)
        self.made_folder = not options.folder.exists()
        self.spool: Spool | None = None  # made once the model loaded: a failed start leaves nothing behind
        self.stop = threading.Event()
        self.arrived: queue.Queue = queue.Queue()
        self.ledger = StudyLedger(log, [d.name for d in self.destinations], options.study_quiet)
        self.days: dict[str, _Day] = {}
        self.server = None
        self.port = options.port

    def _load_model(self) -> None:
        from s3f_edge.dicom.identity import ModelIdentity, check_class_codes, default_class_codes
        from s3f_edge.runtime.formats import load_predictor
        from s3f_edge.runtime.local import LocalExecutor
        from s3f_edge.runtime.predictor import default_model

        self.predictor = load_predictor(self.options.model or default_model(), providers=self.options.providers)
        if self.options.ood_threshold is not None and self.predictor.ood_threshold is None:
            raise InputError(f"--ood-threshold: {self.predictor.name} has no out-of-distribution score to compare "
                             "with it; calibrate the model first with s3f-edge calibrate")
        self.spool = Spool(self.options.folder)
        self.executor = LocalExecutor(self.predictor, self.options.inference(self.spool, Spool.day(), False))
        self.identity = ModelIdentity.from_predictor(self.predictor)
        self.identity.class_codes = check_class_codes(  # checked before the server starts, not at the first image
            self.identity.class_codes or default_class_codes(self.identity.class_names), self.identity.class_names)

    def queue_report(self, row: dict, report: Path) -> None:
        """Queue the SR just written for ``row`` for every destination (``StructuredReports``'s ``written``)."""
        study = Path(row["path"]).parent.name
        self.spool.queue(report, study, [d.folder_name for d in self.destinations])
        self.ledger.reported(study)
        if self.server is not None:
            self.server.wake()

    def _received(self, item) -> None:
        self.ledger.received(item.study_uid, item.calling_ae)
        self.arrived.put(item.path)

    def _start_server(self) -> None:
        from s3f_edge.dicom.network import NetworkProcess

        self.server = NetworkProcess(self.options, self.spool.root, self._received, self.ledger.sent, self.log)
        self.port = self.server.start()

    def _unmake_folders(self) -> None:
        """After a failed start: remove the spool's folders while they are empty (no image was ever received)."""
        if self.spool is None:
            return
        for folder in (self.spool.incoming, self.spool.results, self.spool.reports, self.spool.outbox,
                       self.spool.partial, *([self.spool.root] if self.made_folder else [])):
            try:
                folder.rmdir()
            except OSError:  # not empty: a folder of earlier runs, kept
                pass

    def _take(self) -> list[Path]:
        """Up to ``batch_size`` received images: the first waited for (a second at most, to watch ``stop``), the
        others for ``max_wait`` seconds after it."""
        try:
            first = self.arrived.get(timeout=1.0)
        except queue.Empty:
            return []
        taken, deadline = [first], time.monotonic() + self.options.max_wait
        while len(taken) < self.options.batch_size and not self.stop.is_set():
            left = deadline - time.monotonic()
            try:
                taken.append(self.arrived.get(timeout=min(max(0.0, left), 0.5)))
            except queue.Empty:
                if left <= 0.5:
                    break
        return taken

    def _day(self, day: str) -> _Day:
        return self.days.setdefault(day, _Day(self, day))

    def _classify(self) -> None:
        """The classifier: micro-batches through the inference loop until ``stop``; idle days finished."""
        while not self.stop.is_set():
            taken = self._take()
            if not taken:
                for day in self.days.values():
                    day.finish()
                self.ledger.flush()
                continue
            for day, paths in sorted(_by_day(taken).items()):
                self._day(day).answer(paths)
            self.ledger.flush()  # studies that went quiet while others keep the node busy

    def serve(self) -> None:
        """Run until SIGTERM, SIGINT or ``stop``: what was spooled before and is unanswered is answered first."""
        try:
            self._load_model()
            self._start_server()
        except S3FEdgeError:
            self._unmake_folders()
            raise
        names = ", ".join(d.name for d in self.destinations) or "nowhere (reports/ only)"
        allowed = ", ".join(self.options.allowed) if self.options.allowed is not None else "any AE title"
        self.log(f"listening on {self.options.host}:{self.port} as {self.options.ae_title}"
                 f"{' (TLS)' if self.tls else ''}; accepting {allowed}; model {self.predictor.name} "
                 f"({self.predictor.backend}); reports to {names}; folder {self.spool.root}")
        try:
            for day in self.spool.days():  # a restart: every image acknowledged before it is answered now
                self._day(day).answer([])
            self._classify()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop receiving and sending, answer and journal the images in hand (their SRs wait in the outbox for the
        next start), write the results files."""
        self.stop.set()
        if self.server is not None:
            self.server.stop()  # every image acknowledged is in ``arrived`` once it returns
            self.server = None
        in_hand = []
        while not self.arrived.empty():
            in_hand.append(self.arrived.get_nowait())
        if in_hand and hasattr(self, "predictor"):
            for day, paths in sorted(_by_day(in_hand).items()):
                self._day(day).answer(paths)
        for day in self.days.values():
            day.finish()
        self.ledger.flush(everything=True)
        self.log("stopped")


def _by_day(paths: list[Path]) -> dict[str, list[Path]]:
    grouped: dict[str, list[Path]] = {}
    for path in paths:
        grouped.setdefault(path.parent.parent.name, []).append(path)
    return grouped


def serve(options: NodeOptions, log: Callable[[str], None]) -> None:
    """Run a DICOM node until SIGTERM or Ctrl-C.

    Example:
        >>> from s3f_edge.dicom.node import NodeOptions, serve
        >>> serve(NodeOptions("node/", allowed=["PACS"], destinations=["PACS@10.0.0.5:104"]), print)  # doctest: +SKIP

    Args:
        options: the ``NodeOptions``.
        log: called with each line (time-stamped here).

    Raises:
        InputError: an invalid option, a port that cannot be bound, TLS files that cannot be used.
        MissingDependencyError: the dicom extra is missing.
    """
    from s3f_edge.dependencies import require

    require("the DICOM node (s3f-edge listen)", "dicom", "pydicom", "highdicom", "pynetdicom", "dicomweb_client")

    def stamped(line: str) -> None:
        log(f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {line}")

    node = DicomNode(options, stamped)

    def stop(number, frame) -> None:
        if node.stop.is_set() and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (what was acknowledged is spooled)
        stamped("stopping: answering the images in hand (Ctrl-C again to stop at once)")
        node.stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, stop)
    try:
        node.serve()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
