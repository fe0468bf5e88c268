"""A DICOM dataset encoded once, with slots for the values that change from one instance to the next.

pydicom encodes every element each time a dataset is written (an SR of ~350 elements: ~7 ms), and building the
dataset costs more. When many instances share all but a few values, ``EncodedDataset`` keeps the constant elements
as the bytes pydicom wrote and encodes, per instance, only its own values: the same file, for a fraction of the
cost. Explicit VR Little Endian only (the transfer syntax highdicom writes SRs in).

pydicom is imported when a dataset is encoded, never by importing this module.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, little endian
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
_GROUP_LENGTH = 0x00020000  # File Meta Information Group Length
_META_INSTANCE = 0x00020003  # Media Storage SOP Instance UID


@dataclass(frozen=True)
class _Slot:
    """An element whose value each instance gives (by ``name``), encoded with its dataset's character set."""
    tag: int
    vr: str
    name: str
    encodings: object


@dataclass(frozen=True)
class _Sequence:
    """A sequence holding slots: its header without the length, and each item's nodes."""
    header: bytes
    items: tuple[tuple, ...]


def _encoded(element, encodings) -> bytes:
    """One element as pydicom writes it (tag, VR, length, value) in Explicit VR Little Endian."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()


class EncodedDataset:
    """``dataset`` encoded once, its slots (elements ``slot_of`` names, at any depth) and the top-level elements
    ``left_out`` to be given by each instance.

    Args:
        dataset: an instance written as Explicit VR Little Endian (a pydicom ``Dataset`` with file meta).
        slot_of: an element -> the name of the value it holds per instance, or None for an element all share.
        left_out: top-level tags every instance gives (``write``'s ``own``), present or not.

    Attributes:
        values: each slot's value in ``dataset`` (what ``write`` needs to write ``dataset`` again).

    Raises:
        ValueError: what pydicom would write differently from this encoding (a sequence of undefined length, a
            slot of an ambiguous VR, another transfer syntax), or a name given two values in ``dataset``.
    """

    def __init__(self, dataset, slot_of: Callable[[object], str | None], left_out: Collection[int]):
        if str(dataset.file_meta.get("TransferSyntaxUID", "")) != _EXPLICIT_LITTLE:
            raise ValueError("only Explicit VR Little Endian is encoded")
        self.values: dict[str, object] = {}
        self._preamble = bytes(dataset.preamble or b"\x00" * 128)
        # The file meta before and after the instance's UID (the group length follows from the UID's length).
        meta = sorted((element.tag, _encoded(element, "iso8859")) for element in dataset.file_meta
                      if element.tag not in (_GROUP_LENGTH, _META_INSTANCE))
        self._meta_head = b"".join(data for tag, data in meta if tag < _META_INSTANCE)
        self._meta_tail = b"".join(data for tag, data in meta if tag > _META_INSTANCE)
        self.encodings = dataset.get("SpecificCharacterSet", "iso8859")  # pydicom's default, as write_dataset
        self._nodes = self._compile(dataset, self.encodings, slot_of, frozenset(left_out))

    def _compile(self, dataset, encodings, slot_of, left_out=frozenset()) -> list[tuple[int, object]]:
        """(tag, node) of each element of ``dataset`` but ``left_out`` to write, as pydicom's write_dataset orders
        and encodes them; a node is bytes, a _Slot or a _Sequence."""
        encodings = dataset.get("SpecificCharacterSet", encodings)
        nodes = []
        for tag in sorted(dataset.keys()):
            if tag in left_out or (tag.element == 0 and tag.group > 6):  # write_dataset writes no group lengths
                continue
            element = dataset[tag]
            name = slot_of(element)
            if name is not None:
                if len(element.VR) != 2 or self.values.setdefault(name, element.value) != element.value:
                    raise ValueError(f"the slot {name} of {tag} cannot be encoded once")
                nodes.append((tag, _Slot(int(tag), element.VR, name, encodings)))
                continue
            items = [self._compile(item, encodings, slot_of) for item in element.value] if element.VR == "SQ" else []
            if not any(isinstance(node, (_Slot, _Sequence)) for item in items for _, node in item):
                nodes.append((tag, _encoded(element, encodings)))  # no slot inside: pydicom's bytes, once
            elif element.is_undefined_length or any(getattr(item, "is_undefined_length_sequence_item", False)
                                                     for item in element.value):
                raise ValueError(f"the sequence {tag} has an undefined length")
            else:
                header = struct.pack("<HH", tag.group, tag.element) + b"SQ\x00\x00"
                nodes.append((tag, _Sequence(header, tuple(tuple(node for _, node in item) for item in items))))
        return nodes

    def write(self, values: dict[str, object], own: Iterable, sop_instance_uid: str) -> bytes:
        """The file of one instance: its slots' ``values``, its ``own`` top-level elements (pydicom
        ``DataElement``s, written in this dataset's character set) and its SOP Instance UID (the file meta's)."""
        nodes = [*self._nodes, *((element.tag, _encoded(element, self.encodings)) for element in own)]
        nodes.sort(key=lambda node: node[0])
        return self._preamble + b"DICM" + self._file_meta(sop_instance_uid) + _render(
            [node for _, node in nodes], values)

    def _file_meta(self, sop_instance_uid: str) -> bytes:
        """The file meta pydicom writes: the group's length (UL), then its elements, the instance's UID among them
        (as pydicom's enforce_file_format sets it)."""
        from pydicom.dataelem import DataElement

        elements = self._meta_head + _encoded(DataElement(_META_INSTANCE, "UI", sop_instance_uid), "iso8859") + (
            self._meta_tail)
        return b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(elements)) + elements


def _render(nodes, values: dict[str, object]) -> bytes:
    """The bytes of ``nodes``: sequences and items with the defined lengths pydicom writes."""
    from pydicom.dataelem import DataElement

    parts = []
    for node in nodes:
        if isinstance(node, bytes):
            parts.append(node)
        elif isinstance(node, _Slot):
            parts.append(_encoded(DataElement(node.tag, node.vr, values[node.name]), node.encodings))
        else:
            items = [_render(item, values) for item in node.items]
            body = b"".join(_ITEM + struct.pack("<I", len(item)) + item for item in items)
            parts.append(node.header + struct.pack("<I", len(body)) + body)
    return b"".join(parts)
