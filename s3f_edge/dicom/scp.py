"""The DICOM node's receiving side: a Storage SCP (pynetdicom) that answers C-ECHO and C-STORE.

An image is answered Success only once it is whole on disk (``Spool.store``). Whatever else arrives gets the
status a DICOM node owes it and one log line: a dataset that cannot be decoded (C210), one without pixel data or
without valid Study, Series and SOP Instance UIDs (A900), one over the size limit (A700). A PDU over the size the
node offered, or a dataset growing past the limit in transit, ends the association (A-ABORT). A calling AE title
not on the allow-list is rejected when it asks to associate. The handlers never raise: a bad peer never stops
the node.

pynetdicom is imported only when a node starts.
"""
from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3f_edge.dicom.spool import Spool, is_uid
from s3f_edge.errors import InputError

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the dataset is over the node's size limit
DOES_NOT_MATCH = 0xA900  # no pixel data, or a required UID missing or invalid
CANNOT_UNDERSTAND = 0xC210  # the dataset cannot be decoded
FAILED_TO_STORE = 0xA701  # the spool could not take it (disk full, permissions): out of resources too

REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class Received:
    """One image the node acknowledged."""
    path: Path
    study_uid: str
    calling_ae: str


def _missing(dataset) -> str | None:
    """Why ``dataset`` is not an image the node can classify and report on, or None."""
    for keyword in REQUIRED_UIDS:
        if not is_uid(dataset.get(keyword)):
            return f"no valid {keyword}"
    if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
        return "no pixel data"
    return None


class StoreHandlers:
    """pynetdicom's event handlers of the node.

    Args:
        spool: where images are written.
        received: called with each acknowledged image (``Received``), after it is on disk.
        log: called with one line per refused dataset or association.
        max_dataset_bytes: the largest dataset accepted.
        max_pdu_bytes: the largest PDU the node offers to receive (0: unlimited).
    """

    def __init__(self, spool: Spool, received: Callable[[Received], None], log: Callable[[str], None],
                 max_dataset_bytes: int, max_pdu_bytes: int):
        self.spool, self.received, self.log = spool, received, log
        self.max_dataset_bytes, self.max_pdu_bytes = max_dataset_bytes, max_pdu_bytes
        self._in_transit: dict[int, int] = {}  # association -> P-DATA bytes since its last C-STORE
        self._lock = threading.Lock()

    def handlers(self) -> list:
        from pynetdicom import evt

        return [(evt.EVT_CONN_OPEN, self.on_open), (evt.EVT_C_ECHO, self.on_echo), (evt.EVT_C_STORE, self.on_store),
                (evt.EVT_DATA_RECV, self.on_data), (evt.EVT_REJECTED, self.on_rejected),
                (evt.EVT_ABORTED, self.on_aborted), (evt.EVT_CONN_CLOSE, self.on_closed)]

    @staticmethod
    def _peer(event) -> str:
        requestor = event.assoc.requestor
        return f"{requestor.ae_title or '?'} at {requestor.address}:{requestor.port}"

    def on_open(self, event) -> None:
        from s3f_edge.dicom.outbox import no_delay

        no_delay(event.assoc)  # each C-STORE's answer sent at once

    def on_echo(self, event) -> int:
        return SUCCESS

    def on_rejected(self, event) -> None:
        self.log(f"association from {self._peer(event)} rejected: its AE title is not on the allow-list "
                 "(or it offered nothing the node accepts)")

    def on_aborted(self, event) -> None:
        self.log(f"association from {self._peer(event)} aborted")

    def on_closed(self, event) -> None:
        with self._lock:
            self._in_transit.pop(id(event.assoc), None)

    def on_data(self, event) -> None:
        """Count what an association sends; end it when one PDU or one dataset in transit is over the limits."""
        size = len(event.data)
        with self._lock:
            total = self._in_transit.get(id(event.assoc), 0) + size
            self._in_transit[id(event.assoc)] = total
        if self.max_pdu_bytes and size > self.max_pdu_bytes + 6:  # 6: the PDU's own type and length
            self.log(f"association from {self._peer(event)} ended: a PDU of {size} bytes is over the "
                     f"{self.max_pdu_bytes} the node offered")
            event.assoc.abort(block=False)
        elif total > 2 * self.max_dataset_bytes + (1 << 20):  # a dataset and its command, with room to spare
            self.log(f"association from {self._peer(event)} ended: a dataset over {self.max_dataset_bytes} bytes "
                     "was being sent (--max-dataset-mb)")
            event.assoc.abort(block=False)

    def on_store(self, event) -> int:
        """Acknowledge an image only once it is durably spooled."""
        with self._lock:
            self._in_transit[id(event.assoc)] = 0
        peer = self._peer(event)
        try:
            size = len(event.request.DataSet.getvalue())
            if size > self.max_dataset_bytes:
                self.log(f"refused a dataset from {peer}: {size} bytes is over the limit of "
                         f"{self.max_dataset_bytes} (--max-dataset-mb)")
                return OUT_OF_RESOURCES
            try:
                dataset = event.dataset
                dataset.file_meta = event.file_meta
                problem = _missing(dataset)
            except Exception as error:  # a peer's bytes: anything pydicom raises means "cannot be read"
                self.log(f"refused a dataset from {peer}: it cannot be decoded ({type(error).__name__}: {error})")
                return CANNOT_UNDERSTAND
            if problem:
                self.log(f"refused a dataset from {peer}: {problem}")
                return DOES_NOT_MATCH
            study, instance = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
            path = self.spool.store(event.encoded_dataset(include_meta=True), study, instance)
        except OSError as error:
            self.log(f"could not spool a dataset from {peer}: {error}; the sender was told to try again later")
            return FAILED_TO_STORE
        except Exception as error:  # never let a peer's dataset stop the node
            self.log(f"refused a dataset from {peer}: {type(error).__name__}: {error}")
            return CANNOT_UNDERSTAND
        self.received(Received(path, study, event.assoc.requestor.ae_title))
        return SUCCESS


def storage_ae(ae_title: str, allowed: list[str] | None, max_pdu_bytes: int):
    """The node's Application Entity: Verification and every storage SOP class (uncompressed transfer syntaxes,
    which a PACS transcodes to when asked), answering only ``allowed`` calling AE titles (None: any).

    Args:
        ae_title: the node's own AE title.
        allowed: calling AE titles accepted; None accepts any.
        max_pdu_bytes: the largest PDU offered to receive (0: unlimited).

    Returns:
        A ``pynetdicom.AE``.
    """
    from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts + VerificationPresentationContexts
    ae.maximum_pdu_size = max_pdu_bytes
    if allowed is not None:
        ae.require_calling_aet = list(allowed)
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    return ae


def tls_context(options) -> ssl.SSLContext | None:
    """The server's TLS context from the node's options (``tls_cert``, ``tls_key``, ``tls_ca``), or None without
    ``tls_cert``."""
    if options.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
        if options.tls_ca is not None:
            context.load_verify_locations(options.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise InputError(f"--tls-cert/--tls-key/--tls-ca cannot be used: {error}") from None
    return context
