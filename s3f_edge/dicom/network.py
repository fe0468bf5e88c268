"""The DICOM node's network side in a process of its own: the receiver and the senders.

pynetdicom encodes and decodes every PDU in Python; in the node's process it would share one interpreter lock with
reading images and writing SRs, and the classifier would wait. Here the Storage SCP (``scp.py``) and one sender
per destination (``outbox.py``) run in a child process (spawned, so it inherits none of the parent's threads). Over
a pipe, the child tells the node each image it acknowledged (after it is whole on disk, as before), each SR a
destination accepted, and each log line; the node tells it when an SR was queued. Everything between them is also
on disk (the spool, the outbox), so no message is needed for correctness: a lost one only delays. The child never
outlives the node: it stops when asked, and when the pipe closes because the node died (even by kill -9), so its
port is freed for a restart.
"""
from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from s3f_edge.dicom.scp import Received
from s3f_edge.errors import InputError

START_TIMEOUT = 60.0  # seconds for the child to import pynetdicom and bind its port
STOP_TIMEOUT = 60.0  # the senders finish the request in hand (pynetdicom's timeouts are 30 s)


class NetworkProcess:
    """The Storage SCP and the senders in a child process.

    Args:
        options: the node's ``NodeOptions`` (picklable: the child builds its own TLS context and destinations).
        spool_root: the node's folder.
        received: called in the node's process with each image the child acknowledged.
        sent: called with (destination name, Study Instance UID, SRs accepted) after each request a sender made.
        log: called with each of the child's log lines.
    """

    def __init__(self, options, spool_root: Path, received: Callable[[Received], None],
                 sent: Callable[[str, str, int], None], log: Callable[[str], None]):
        self.options, self.spool_root = options, Path(spool_root)
        self.received, self.sent, self.log = received, sent, log
        self.process = self.connection = self.pump = None
        self.port = options.port
        self._send_lock = threading.Lock()  # the classifier (wake) and the main thread (stop) both send

    def start(self) -> int:
        """Start the child and wait until it listens.

        Returns:
            The port it listens on.

        Raises:
            InputError: it could not listen (a port in use, unusable TLS files), or did not start in time.
        """
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(self.options, str(self.spool_root), child_end),
                                       name="s3f-edge-network", daemon=True)
        self.process.start()
        child_end.close()  # the child's end lives in the child only: its closing tells the parent it is gone
        message = self.connection.recv() if self.connection.poll(START_TIMEOUT) else ("failed", "did not start")
        if message[0] != "listening":
            self.process.join(timeout=STOP_TIMEOUT)
            raise InputError(message[1])
        self.port = message[1]
        self.pump = threading.Thread(target=self._pump, name="s3f-edge-network-pump", daemon=True)
        self.pump.start()
        return self.port

    def _pump(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                break
            if message[0] == "received":
                self.received(Received(Path(message[1]), message[2], message[3]))
            elif message[0] == "sent":
                self.sent(message[1], message[2], message[3])
            elif message[0] == "log":
                self.log(message[1])
            elif message[0] == "stopped":
                return
        self.log("the network process stopped unexpectedly; images it acknowledged are spooled, reports wait in "
                 "the outbox")

    def _tell(self, message) -> None:
        with self._send_lock:
            try:
                self.connection.send(message)
            except (OSError, ValueError, AttributeError):
                pass  # the child is gone: what it would have done waits on disk

    def wake(self) -> None:
        """An SR was queued: the senders look at their outbox now rather than at their next poll."""
        if self.process is not None:
            self._tell(("wake",))

    def stop(self) -> None:
        """Stop receiving (no new association; every image acknowledged before is announced first) and sending
        (after the request in hand)."""
        if self.process is None:
            return
        self._tell(("stop",))
        if self.pump is not None:
            self.pump.join(timeout=STOP_TIMEOUT)
        self.process.join(timeout=STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
        self.connection.close()
        self.process = None


def _serve(options, spool_root: str, connection) -> None:
    """The child: listen, spool, announce, send; stop when asked or when the node is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when to stop (Ctrl-C reaches the whole group)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pynetdicom import _config

    from s3f_edge.dicom.outbox import Sender, parse_destination
    from s3f_edge.dicom.scp import StoreHandlers, storage_ae, tls_context
    from s3f_edge.dicom.spool import Spool
    from s3f_edge.errors import S3FEdgeError

    _config.LOG_HANDLER_LEVEL = "none"  # the node writes its own lines
    _config.STORE_SEND_CHUNKED_DATASET = True  # an SR is sent from its file as it is, not decoded and encoded again
    lock = threading.Lock()  # pynetdicom runs one thread per association, and each sender is a thread

    def send(message) -> None:
        with lock:
            try:
                connection.send(message)
            except (OSError, ValueError):
                pass  # the node is gone: the image is spooled, a restart answers it

    def log(line: str) -> None:
        send(("log", line))

    spool = Spool(spool_root)
    handlers = StoreHandlers(spool, lambda item: send(("received", str(item.path), item.study_uid,
                                                       item.calling_ae)),
                             log, int(options.max_dataset_mb * 2**20), options.max_pdu_kb * 1024)
    ae = storage_ae(options.ae_title, options.allowed, options.max_pdu_kb * 1024)
    try:
        server = ae.start_server((options.host, options.port), block=False, ssl_context=tls_context(options),
                                 evt_handlers=handlers.handlers())
    except OSError as error:
        send(("failed", f"cannot listen on {options.host}:{options.port}: {error.strerror or error}; choose another "
                        "--port or --host"))
        return
    except S3FEdgeError as error:
        send(("failed", str(error)))
        return
    stop = threading.Event()
    senders = []
    for destination in (parse_destination(text, options.ae_title) for text in options.destinations):
        senders.append(Sender(destination, spool.queue_folder(destination.folder_name),
                              spool.root / "rejected" / destination.folder_name, log,
                              lambda study, count, name=destination.name: send(("sent", name, study, count)),
                              stop, options.retry_max))
        senders[-1].start()
    send(("listening", server.server_address[1]))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):  # the node died
            break
        if message[0] == "stop":
            break
        for sender in senders:  # ("wake",): an SR was queued
            sender.wake.set()
    ae.shutdown()
    stop.set()
    for sender in senders:
        sender.join(timeout=35)
    send(("stopped",))
