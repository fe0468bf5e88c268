"""The DICOM node's receiver in a process of its own.

pynetdicom decodes every PDU in Python; in the node's process it would share one interpreter lock with SR writing
and the senders, and the classifier would wait for images. Here the Storage SCP (``scp.py``) runs in a child
process (spawned, so it inherits none of the parent's threads) and tells the node, over a pipe, each image it
acknowledged (after it is whole on disk, as before) and each log line. The child never outlives the node: it
stops when asked, and when the pipe closes because the node died (even by kill -9), so its port is freed for a
restart. Images acknowledged and not yet announced are on disk, and a restart answers them.
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
STOP_TIMEOUT = 30.0


class ReceiverProcess:
    """The Storage SCP in a child process.

    Args:
        options: the node's ``NodeOptions`` (picklable: the child builds its own TLS context from the paths).
        spool_root: the node's folder.
        received: called in the node's process with each image the child acknowledged.
        log: called with each of the child's log lines.
    """

    def __init__(self, options, spool_root: Path, received: Callable[[Received], None], log: Callable[[str], None]):
        self.options, self.spool_root, self.received, self.log = options, Path(spool_root), received, log
        self.process = self.connection = self.pump = None
        self.port = options.port

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
                                       name="s3f-edge-receiver", daemon=True)
        self.process.start()
        child_end.close()  # the child's end lives in the child only: its closing tells the parent it is gone
        message = self.connection.recv() if self.connection.poll(START_TIMEOUT) else ("failed", "did not start")
        if message[0] != "listening":
            self.process.join(timeout=STOP_TIMEOUT)
            raise InputError(message[1])
        self.port = message[1]
        self.pump = threading.Thread(target=self._pump, name="s3f-edge-receiver-pump", daemon=True)
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
            elif message[0] == "log":
                self.log(message[1])
            elif message[0] == "stopped":
                return
        self.log("the receiver stopped unexpectedly; images it acknowledged are spooled")

    def stop(self) -> None:
        """Stop receiving: no new association; every image acknowledged before is announced first."""
        if self.process is None:
            return
        try:
            self.connection.send(("stop",))
        except (OSError, ValueError):
            pass  # the child is gone already
        if self.pump is not None:
            self.pump.join(timeout=STOP_TIMEOUT)
        self.process.join(timeout=STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
        self.connection.close()
        self.process = None


def _serve(options, spool_root: str, connection) -> None:
    """The child: listen, spool, announce; stop when asked or when the node is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when to stop (Ctrl-C reaches the whole group)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pynetdicom import _config

    from s3f_edge.dicom.scp import StoreHandlers, storage_ae, tls_context
    from s3f_edge.dicom.spool import Spool
    from s3f_edge.errors import S3FEdgeError

    _config.LOG_HANDLER_LEVEL = "none"  # the node writes its own lines
    lock = threading.Lock()  # pynetdicom runs one thread per association

    def send(message) -> None:
        with lock:
            try:
                connection.send(message)
            except (OSError, ValueError):
                pass  # the node is gone: the image is spooled, a restart answers it

    handlers = StoreHandlers(Spool(spool_root), lambda item: send(("received", str(item.path), item.study_uid,
                                                                    item.calling_ae)),
                             lambda line: send(("log", line)), int(options.max_dataset_mb * 2**20),
                             options.max_pdu_kb * 1024)
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
    send(("listening", server.server_address[1]))
    try:
        connection.recv()  # ("stop",), or EOFError: the node died
    except (EOFError, OSError):
        pass
    ae.shutdown()
    send(("stopped",))
