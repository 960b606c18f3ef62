"""A small protobuf wire-format decoder for the few messages a bundle holds.

TensorFlow checkpoints store ``BundleHeaderProto``, ``BundleEntryProto`` and the
TF2 ``TrackableObjectGraph`` as serialized protobufs. Pulling in the protobuf
library (and TensorFlow's generated classes) for five small messages would make
the reader depend on TensorFlow, so they are decoded here by hand, following the
wire format (``docs/checkpoint-format.md``, "Protobuf wire format as protowire
decodes it"): fields in any order, last value wins for scalars, unknown fields
skipped by wire type, packed and unpacked repeated scalars both accepted.

Every length and varint is checked against the buffer before it is used, so a
hostile buffer raises ``WireFormatError`` and never IndexError or MemoryError.
Callers turn that into a ``CorruptCheckpointError`` naming the file.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterator, Mapping
from itertools import repeat
from typing import Any, NamedTuple

from ckptdoctor.errors import CorruptCheckpointError

__all__ = [
    "WireFormatError",
    "read_varint",
    "iter_fields",
    "BundleHeader",
    "BundleEntry",
    "ObjectNode",
    "decode_bundle_header",
    "decode_bundle_entry",
    "decode_bundle_entries",
    "decode_object_graph",
    "decode_strings_and_ints",
    "expect_wire_type",
    "signed64",
    "text",
]


def _native_decoders() -> Any:
    """The optional C decoders (``readers/_wire.c``), or None: not built, or ``CKPTDOCTOR_PURE_PYTHON=1``.

    They decode the canonical encodings TensorFlow writes and return None for anything else, which the
    Python code below then decodes (raising its own errors): the results are the same either way.
    """
    if os.environ.get("CKPTDOCTOR_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ckptdoctor.readers import _wire  # type: ignore[attr-defined]  # a C extension, no stub
    except ImportError:
        return None
    return _wire


#: ``ckptdoctor.readers._wire`` when built and not turned off (read once, at import), else None.
_wire = _native_decoders()

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_u64 = struct.Struct("<Q").unpack_from


class WireFormatError(ValueError, CorruptCheckpointError):
    """The bytes are not a well-formed protobuf message of the expected kind.

    A ``ValueError`` for the decoders' callers, which turn it into a ``CorruptCheckpointError``
    naming the file; a ``CorruptCheckpointError`` itself, so that one a caller missed is still
    ckptdoctor's one-line error, never an internal one.
    """


#: A message's buffer: ``bytes``, or a ``memoryview`` whose LEN fields are then views too (no copy).
Buffer = bytes | memoryview


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decode one unsigned LEB128 varint of at most 10 bytes.

    Args:
        buf: the bytes.
        pos: where the varint starts.
        end: first position the varint must not reach.

    Returns:
        ``(value, position after the varint)``.

    Raises:
        WireFormatError: truncated, longer than 10 bytes or above 2**64-1.
    """
    if pos < end:
        b = buf[pos]
        if b < 0x80:  # one-byte varints are by far the most common
            return b, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > _U64:
                raise WireFormatError("varint exceeds 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than 10 bytes")


def _signed64(v: int) -> int:
    # int32/int64 fields are two's complement sign-extended to 64 bits, not zigzag.
    return v - (1 << 64) if v >= (1 << 63) else v


def iter_fields(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int | Buffer]]:
    """Yield ``(field_number, wire_type, value)`` for each field of a message.

    VARINT, I64 and I32 values are unsigned ints; LEN values are slices of ``buf``
    (``bytes``, or views of a ``memoryview``).

    Raises:
        WireFormatError: a tag, varint or length runs past ``end``, or a group
            or unknown wire type appears.
    """
    if end is None:
        end = len(buf)
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        field, wtype = tag >> 3, tag & 7
        if field == 0:
            raise WireFormatError("field number 0")
        if wtype == _VARINT:
            value, pos = read_varint(buf, pos, end)
            yield field, wtype, value
        elif wtype == _LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireFormatError(f"field {field} claims {length} bytes, only {end - pos} left")
            yield field, wtype, buf[pos : pos + length]
            pos += length
        elif wtype == _I32:
            if pos + 4 > end:
                raise WireFormatError("truncated fixed32")
            yield field, wtype, _unpack_u32(buf, pos)[0]
            pos += 4
        elif wtype == _I64:
            if pos + 8 > end:
                raise WireFormatError("truncated fixed64")
            yield field, wtype, _unpack_u64(buf, pos)[0]
            pos += 8
        else:
            raise WireFormatError(f"unsupported wire type {wtype} for field {field}")


def _expect(wtype: int, want: int, what: str) -> None:
    if wtype != want:
        raise WireFormatError(f"{what} has wire type {wtype}, expected {want}")


def _repeated_varints(wtype: int, value: int | Buffer, what: str) -> list[int]:
    """Values of a repeated scalar field, packed (LEN) or not (VARINT)."""
    if wtype == _VARINT:
        return [value]  # type: ignore[list-item]
    _expect(wtype, _LEN, what)
    out = []
    pos, end = 0, len(value)  # type: ignore[arg-type]
    while pos < end:
        v, pos = read_varint(value, pos, end)  # type: ignore[arg-type]
        out.append(v)
    return out


def _text(value: bytes) -> str:
    # Names are UTF-8 in practice; surrogateescape keeps odd bytes round-trippable.
    return value.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- header


class BundleHeader(NamedTuple):
    """``BundleHeaderProto``: shard count, byte order of tensor data, versions."""

    num_shards: int
    endianness: int  # 0 little, 1 big
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]


def _decode_version(buf: bytes) -> tuple[int, int, list[int]]:
    producer = min_consumer = 0
    bad: list[int] = []
    for f, wt, v in iter_fields(buf):
        if f == 1:
            _expect(wt, _VARINT, "VersionDef.producer")
            producer = _signed64(v)  # type: ignore[arg-type]
        elif f == 2:
            _expect(wt, _VARINT, "VersionDef.min_consumer")
            min_consumer = _signed64(v)  # type: ignore[arg-type]
        elif f == 3:
            bad.extend(_signed64(x) for x in _repeated_varints(wt, v, "VersionDef.bad_consumers"))
    return producer, min_consumer, bad


def decode_bundle_header(buf: bytes) -> BundleHeader:
    """Decode the value stored under the empty key of a bundle's index."""
    num_shards = endianness = producer = min_consumer = 0
    bad: list[int] = []
    for f, wt, v in iter_fields(buf):
        if f == 1:
            _expect(wt, _VARINT, "BundleHeaderProto.num_shards")
            num_shards = _signed64(v)  # type: ignore[arg-type]
        elif f == 2:
            _expect(wt, _VARINT, "BundleHeaderProto.endianness")
            endianness = v  # type: ignore[assignment]
        elif f == 3:
            _expect(wt, _LEN, "BundleHeaderProto.version")
            # Repeated occurrences of a singular message merge; for VersionDef's
            # scalars that means last wins, for bad_consumers concatenation.
            p, m, b = _decode_version(v)  # type: ignore[arg-type]
            producer, min_consumer = p or producer, m or min_consumer
            bad.extend(b)
    return BundleHeader(num_shards, endianness, producer, min_consumer, tuple(bad))


# --------------------------------------------------------------------------- entry


class BundleEntry(NamedTuple):
    """``BundleEntryProto``: where one tensor (or one slice of one) is stored.

    ``slices`` holds, per stored piece of a partitioned tensor, one
    ``(start, length)`` pair per dimension, ``length`` None for "whole dimension".
    ``crc32c`` is the stored, masked value.
    """

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: tuple[tuple[tuple[int, int | None], ...], ...]


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for f, wt, v in iter_fields(buf):
        if f == 2:
            _expect(wt, _LEN, "TensorShapeProto.dim")
            size = 0
            for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
                if f2 == 1:
                    _expect(wt2, _VARINT, "Dim.size")
                    size = _signed64(v2)  # type: ignore[arg-type]
            if size < 0:
                raise WireFormatError(f"negative dimension {size}")
            dims.append(size)
        elif f == 3 and v:
            raise WireFormatError("shape of unknown rank")
    return tuple(dims)


def _decode_slice(buf: bytes) -> tuple[tuple[int, int | None], ...]:
    extents = []
    for f, wt, v in iter_fields(buf):
        if f == 1:
            _expect(wt, _LEN, "TensorSliceProto.extent")
            start, length = 0, None
            for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
                if f2 == 1:
                    _expect(wt2, _VARINT, "Extent.start")
                    start = _signed64(v2)  # type: ignore[arg-type]
                elif f2 == 2:
                    _expect(wt2, _VARINT, "Extent.length")
                    length = _signed64(v2)  # type: ignore[arg-type]
            if start < 0 or (length is not None and length < -1):
                raise WireFormatError(f"invalid slice extent start={start} length={length}")
            if length == -1:  # TF's kFullExtent spelled out
                length = None
            extents.append((start, length))
    return tuple(extents)


# Serialized TensorShapeProto -> dims; a pure function of the bytes, so a
# process-wide cache is safe. Bounded so hostile inputs cannot grow it.
_SHAPE_CACHE: dict[bytes, tuple[int, ...]] = {}
_SHAPE_CACHE_LIMIT = 4096


def decode_bundle_entry(buf: bytes) -> BundleEntry:
    """Decode the ``BundleEntryProto`` stored under a tensor's key.

    Raises:
        WireFormatError: not a valid ``BundleEntryProto``.
    """
    if _wire is not None:  # the canonical encoding in C; None for anything else
        entry = _wire.bundle_entry(buf, BundleEntry, _SHAPE_CACHE, _SHAPE_CACHE_LIMIT)
        if entry is not None:
            return entry
    return _decode_bundle_entry_py(buf)


def decode_bundle_entries(values: list[bytes]) -> list[BundleEntry]:
    """``decode_bundle_entry`` of each value, in order: the C decoder over all of them first, without a call per
    value from Python, then the Python decoder for those it left.

    Raises:
        WireFormatError: one is not a valid ``BundleEntryProto`` (the first of those the C decoder left).
    """
    if _wire is None:
        return [_decode_bundle_entry_py(v) for v in values]
    out = list(map(_wire.bundle_entry, values, repeat(BundleEntry), repeat(_SHAPE_CACHE), repeat(_SHAPE_CACHE_LIMIT)))
    if None in out:
        out = [_decode_bundle_entry_py(v) if e is None else e for v, e in zip(values, out)]
    return out


def _decode_bundle_entry_py(buf: bytes) -> BundleEntry:
    """``decode_bundle_entry`` in Python: every encoding, every error."""
    # This runs once per tensor at open time and listing speed matters, so the
    # canonical encoding TensorFlow writes (one-byte tags in field order) takes
    # an inlined path; anything else falls back to the generic decoder.
    dtype = shard_id = offset = size = crc = 0
    shape: tuple[int, ...] = ()
    slices = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            tag = buf[pos]
            pos += 1
            if tag == 0x08 or tag == 0x18 or tag == 0x20 or tag == 0x28:
                v = buf[pos]
                pos += 1
                if v >= 0x80:  # two to four bytes inlined (offsets below 256 MiB); longer ones, faults: read_varint
                    v2 = buf[pos]
                    if v2 < 0x80:
                        v = (v & 0x7F) | (v2 << 7)
                        pos += 1
                    elif pos + 1 < end and buf[pos + 1] < 0x80:
                        v = (v & 0x7F) | ((v2 & 0x7F) << 7) | (buf[pos + 1] << 14)
                        pos += 2
                    elif pos + 2 < end and buf[pos + 2] < 0x80:  # buf[pos + 1] >= 0x80 here
                        v = (v & 0x7F) | ((v2 & 0x7F) << 7) | ((buf[pos + 1] & 0x7F) << 14) | (buf[pos + 2] << 21)
                        pos += 3
                    else:
                        v, pos = read_varint(buf, pos - 1, end)
                if tag == 0x08:
                    dtype = v
                elif tag == 0x20:
                    offset = v
                elif tag == 0x28:
                    size = v
                else:
                    shard_id = v
            elif tag == 0x12 or tag == 0x3A:
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = read_varint(buf, pos - 1, end)
                stop = pos + length
                if stop > end:
                    raise WireFormatError(f"field {tag >> 3} claims {length} bytes, only {end - pos} left")
                if tag == 0x12:
                    # Checkpoints repeat a few shapes many times: decode each once.
                    shape_bytes = buf[pos:stop]
                    shape = _SHAPE_CACHE.get(shape_bytes)  # type: ignore[assignment]
                    if shape is None:
                        shape = _decode_shape(shape_bytes)
                        if len(_SHAPE_CACHE) < _SHAPE_CACHE_LIMIT:
                            _SHAPE_CACHE[shape_bytes] = shape
                else:
                    slices.append(_decode_slice(buf[pos:stop]))
                pos = stop
            elif tag == 0x35:
                if pos + 4 > end:
                    raise WireFormatError("truncated crc32c")
                crc = _unpack_u32(buf, pos)[0]
                pos += 4
            else:
                return _decode_bundle_entry_generic(buf)
    except IndexError:
        raise WireFormatError("message truncated") from None
    if shard_id >= 1 << 63 or offset >= 1 << 63 or size >= 1 << 63:  # negative int32/int64
        raise WireFormatError(f"negative shard_id/offset/size ({shard_id}, {offset}, {size})")
    # tuple.__new__ skips NamedTuple's Python-level __new__ (a third of the cost).
    return tuple.__new__(BundleEntry, (dtype, shape, shard_id, offset, size, crc, tuple(slices) if slices else ()))


def _decode_bundle_entry_generic(buf: bytes) -> BundleEntry:
    """Any valid encoding: non-canonical tags, unknown fields, odd wire types."""
    dtype = shard_id = offset = size = crc = 0
    shape: tuple[int, ...] = ()
    slices = []
    pos, end = 0, len(buf)
    while pos < end:
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(buf, pos, end)
        if tag == 0x35:  # field 6, fixed32
            if pos + 4 > end:
                raise WireFormatError("truncated crc32c")
            crc = _unpack_u32(buf, pos)[0]
            pos += 4
            continue
        field, wtype = tag >> 3, tag & 7
        if field == 0:
            raise WireFormatError("field number 0")
        if wtype == _VARINT:
            v, pos = read_varint(buf, pos, end)
            if field == 1:
                dtype = v
            elif field == 3:
                shard_id = _signed64(v)
            elif field == 4:
                offset = _signed64(v)
            elif field == 5:
                size = _signed64(v)
            elif field in (2, 6, 7):
                raise WireFormatError(f"BundleEntryProto field {field} has wire type 0")
        elif wtype == _LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireFormatError(f"field {field} claims {length} bytes, only {end - pos} left")
            if field == 2:
                shape = _decode_shape(buf[pos : pos + length])
            elif field == 7:
                slices.append(_decode_slice(buf[pos : pos + length]))
            elif field in (1, 3, 4, 5, 6):
                raise WireFormatError(f"BundleEntryProto field {field} has wire type 2")
            pos += length
        elif wtype == _I32:
            if field in (1, 2, 3, 4, 5, 7):
                raise WireFormatError(f"BundleEntryProto field {field} has wire type 5")
            pos += 4
        elif wtype == _I64:
            if field <= 7:
                raise WireFormatError(f"BundleEntryProto field {field} has wire type 1")
            pos += 8
        else:
            raise WireFormatError(f"unsupported wire type {wtype} for field {field}")
        if pos > end:
            raise WireFormatError("message truncated")
    if shard_id < 0 or offset < 0 or size < 0:
        raise WireFormatError(f"negative shard_id/offset/size ({shard_id}, {offset}, {size})")
    return BundleEntry(dtype, shape, shard_id, offset, size, crc, tuple(slices))


# --------------------------------------------------------------------- object graph


class ObjectNode(NamedTuple):
    """One ``TrackableObject`` of a TF2 object graph.

    Attributes:
        children: ``(node_id, local_name)`` edges, in stored order.
        attributes: ``(name, checkpoint_key)`` of each saved tensor (its ``full_name``, which nothing
            reads, is skipped: on 100,000 tensors it was 6 MB of strings).
        slot_variables: ``(original_variable_node_id, slot_name,
            slot_variable_node_id)`` (on optimizer nodes).
    """

    children: tuple[tuple[int, str], ...]
    attributes: tuple[tuple[str, str], ...]
    slot_variables: tuple[tuple[int, str, int], ...]


def decode_strings_and_ints(buf: bytes, kinds: dict[int, str]) -> dict[int, int | str]:
    """Decode a flat message whose fields are strings ('s') or int32s ('i')."""
    out: dict[int, int | str] = {}
    for f, wt, v in iter_fields(buf):
        kind = kinds.get(f)
        if kind == "s":
            _expect(wt, _LEN, f"string field {f}")
            out[f] = _text(v)  # type: ignore[arg-type]
        elif kind == "i":
            _expect(wt, _VARINT, f"int field {f}")
            out[f] = _signed64(v)  # type: ignore[arg-type]
    return out


def _scan(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """Fields of ``buf[pos:end]`` as ``(field, wire_type, a, b)`` without copying.

    For LEN fields ``buf[a:b]`` is the payload; for VARINT/I32/I64 ``a`` is the
    value and ``b`` unused.
    """
    out: list[tuple[int, int, int, int]] = []
    _scan_into(buf, pos, end, out.append)
    return out


def _scan_into(buf: bytes, pos: int, end: int, append) -> None:
    """``_scan``, each field handed to ``append`` as it is read."""
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = read_varint(buf, pos - 1, end)
        wtype = tag & 7
        if wtype == _LEN:
            length = buf[pos] if pos < end else 0x80
            pos += 1
            if length >= 0x80:
                length, pos = read_varint(buf, pos - 1, end)
            if length > end - pos:
                raise WireFormatError(f"field {tag >> 3} claims {length} bytes, only {end - pos} left")
            append((tag >> 3, wtype, pos, pos + length))
            pos += length
        elif wtype == _VARINT:
            v, pos = read_varint(buf, pos, end)
            append((tag >> 3, wtype, v, 0))
        elif wtype in (_I32, _I64):
            width = 4 if wtype == _I32 else 8
            if pos + width > end:
                raise WireFormatError(f"truncated fixed{width * 8}")
            append((tag >> 3, wtype, int.from_bytes(buf[pos : pos + width], "little"), 0))
            pos += width
        else:
            raise WireFormatError(f"unsupported wire type {wtype} for field {tag >> 3}")
        if tag >> 3 == 0:
            raise WireFormatError("field number 0")


def _decode_child(buf: bytes, a: int, b: int) -> tuple[int, str]:
    # Canonical ObjectReference: 08 <node_id> 12 <one-byte len> <local_name>.
    if b - a >= 4 and buf[a] == 0x08:
        node_id, p = buf[a + 1], a + 2
        if node_id >= 0x80:  # two and three bytes inlined (ids below 2**21), as read_varint reads them
            if buf[p] < 0x80:
                node_id = (node_id & 0x7F) | (buf[p] << 7)
                p += 1
            elif p + 1 < b and buf[p + 1] < 0x80:
                node_id = (node_id & 0x7F) | ((buf[p] & 0x7F) << 7) | (buf[p + 1] << 14)
                p += 2
            else:
                node_id, p = read_varint(buf, a + 1, b)
        if p + 2 <= b and buf[p] == 0x12 and buf[p + 1] < 0x80 and p + 2 + buf[p + 1] == b and node_id < 1 << 31:
            return node_id, buf[p + 2 : b].decode("utf-8", "surrogateescape")
    d = decode_strings_and_ints(buf[a:b], {1: "i", 2: "s"})
    return d.get(1, 0), d.get(2, "")  # type: ignore[return-value]


#: A canonical ``SerializedTensor`` of a variable's value starts with these bytes (name ``VARIABLE_VALUE``, then
#: the ``full_name`` tag): nearly every attribute of a checkpoint.
_VALUE_ATTRIBUTE = b"\x0a\x0eVARIABLE_VALUE\x12"
_VALUE_NAME = "VARIABLE_VALUE"


def _decode_attribute(buf: bytes, a: int, b: int, keys: Mapping[str, str]) -> tuple[str, str]:
    # Canonical SerializedTensor: 0a name 12 full_name 1a checkpoint_key, in order, one-byte lengths.
    if buf.startswith(_VALUE_ATTRIBUTE, a):
        p = a + len(_VALUE_ATTRIBUTE)
        if p < b and buf[p] < 0x80:
            q = p + 1 + buf[p]  # past full_name
            if q + 2 <= b and buf[q] == 0x1A and buf[q + 1] < 0x80 and q + 2 + buf[q + 1] == b:
                key = buf[q + 2 : b].decode("utf-8", "surrogateescape")
                return _VALUE_NAME, keys.get(key, key)
    values = ["", "", ""]
    pos = a
    for i, expected_tag in enumerate((0x0A, 0x12, 0x1A)):
        if pos < b and buf[pos] == expected_tag:
            length = buf[pos + 1] if pos + 1 < b else 0x80
            start = pos + 2
            if length >= 0x80:
                length, start = read_varint(buf, pos + 1, b)
            stop = start + length
            if stop > b:
                raise WireFormatError(f"attribute field claims {length} bytes, only {b - start} left")
            if i != 1:  # full_name: skipped
                values[i] = buf[start:stop].decode("utf-8", "surrogateescape")
            pos = stop
    if pos != b:  # other order, repeats or unknown fields
        d = decode_strings_and_ints(buf[a:b], {1: "s", 2: "s", 3: "s"})
        values = [d.get(1, ""), "", d.get(3, "")]  # type: ignore[list-item]
    return (_VALUE_NAME if values[0] == _VALUE_NAME else values[0]), keys.get(values[2], values[2])


def decode_object_graph(buf: bytes, keys: Mapping[str, str] | None = None) -> list[ObjectNode]:
    """Decode a serialized ``TrackableObjectGraph``.

    Its fields: ``docs/checkpoint-format.md``, "The object-graph key and TrackableObjectGraph fields".

    Only the fields needed to map checkpoint keys to object paths are kept;
    ``registered_saver`` and ``has_checkpoint_values`` are skipped.

    Args:
        buf: the serialized graph.
        keys: the checkpoint's tensor names, each mapped to itself: an attribute's checkpoint key
            equal to one of them is that very string (a bundle reader's names and its object graph's
            keys are then one string each, not two). Equal either way.

    Raises:
        WireFormatError: not a valid ``TrackableObjectGraph``.
    """
    try:
        return _decode_object_graph(buf, keys if keys is not None else {})
    except IndexError:
        raise WireFormatError("object graph truncated") from None


def _node_spans(buf: bytes) -> array:
    """``(wire type, start, end)`` of each ``nodes`` field, flat, the whole message checked first as ``_scan`` does.

    In an array, not a list of tuples: a few machine words a node while they are decoded, not a tuple's objects.
    """
    spans = array("q")

    def keep(field: tuple[int, int, int, int]) -> None:
        if field[0] == 1:
            wt = field[1]
            spans.extend((wt, field[2], field[3]) if wt == _LEN else (wt, 0, 0))

    _scan_into(buf, 0, len(buf), keep)
    return spans


def _decode_object_graph(buf: bytes, keys: Mapping[str, str]) -> list[ObjectNode]:
    if _wire is not None:
        # A graph of nodes only, in C: each canonical node decoded, the others left as the (start, end) of
        # their bytes for _decode_node, in order (the first bad one raises, as below).
        nodes = _wire.object_graph(buf, keys, ObjectNode, _VALUE_NAME)
        if nodes is not None:
            for i, node in enumerate(nodes):
                if type(node) is tuple:
                    nodes[i] = _decode_node(buf, node[0], node[1], keys)
            return nodes
    return _decode_object_graph_py(buf, keys)


def _decode_object_graph_py(buf: bytes, keys: Mapping[str, str]) -> list[ObjectNode]:
    nodes = []
    spans = iter(_node_spans(buf))
    for wt, a, b in zip(spans, spans, spans):
        if wt != _LEN:
            _expect(wt, _LEN, "TrackableObjectGraph.nodes")
        nodes.append(_decode_node(buf, a, b, keys))
    return nodes


def _decode_node(buf: bytes, a: int, b: int, keys: Mapping[str, str]) -> ObjectNode:
    """The ``TrackableObject`` at ``buf[a:b]``."""
    children, attributes, slots = [], [], []
    pos = a
    while pos < b:
        tag = buf[pos]
        if tag == 0x0A or tag == 0x12 or tag == 0x2A:
            # Fast path: children, attributes and has_checkpoint_values in
            # their canonical one-byte-tag encoding.
            length = buf[pos + 1] if pos + 1 < b else 0x80
            start = pos + 2
            if length >= 0x80:
                length, start = read_varint(buf, pos + 1, b)
            stop = start + length
            if stop > b:
                raise WireFormatError(f"TrackableObject field claims {length} bytes, only {b - start} left")
            if tag == 0x0A:
                children.append(_decode_child(buf, start, stop))
            elif tag == 0x12:
                attributes.append(_decode_attribute(buf, start, stop, keys))
            pos = stop
            continue
        # Slot variables, registered savers, unusual encodings: generic.
        for f2, wt2, a2, b2 in _scan(buf, pos, b):
            if f2 == 1:
                _expect(wt2, _LEN, "TrackableObject.children")
                children.append(_decode_child(buf, a2, b2))
            elif f2 == 2:
                _expect(wt2, _LEN, "TrackableObject.attributes")
                attributes.append(_decode_attribute(buf, a2, b2, keys))
            elif f2 == 3:
                _expect(wt2, _LEN, "TrackableObject.slot_variables")
                d = decode_strings_and_ints(buf[a2:b2], {1: "i", 2: "s", 3: "i"})
                slots.append((d.get(1, 0), d.get(2, ""), d.get(3, 0)))
        break
    # Most nodes have no children or no slots: () is the empty tuple, without a call.
    edges = tuple(children) if children else ()
    saved = tuple(attributes) if attributes else ()
    return tuple.__new__(ObjectNode, (edges, saved, tuple(slots) if slots else ()))


#: Public names of the field helpers, for the other readers of TensorFlow protos (``saved_model_pb``).
signed64 = _signed64
text = _text
expect_wire_type = _expect
