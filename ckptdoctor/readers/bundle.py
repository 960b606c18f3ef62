"""Read TensorFlow's V2 tensor bundle (``PREFIX.index`` + ``PREFIX.data-*``) without TensorFlow.

A V2 checkpoint (what ``tf.train.Checkpoint``, ``tf.compat.v1.train.Saver``,
``save_weights`` and SavedModel ``variables/`` write) is an SSTable index that
maps each tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, masked CRC32C), plus raw data files holding the tensors' bytes. The
byte-level rules are in ``docs/checkpoint-format.md``; the section names in
quotes below are its headings.

What this reader guarantees:

* Nothing of TensorFlow or protobuf is imported: numpy, ml_dtypes,
  google_crc32c and the standard library only.
* Every SSTable block CRC is checked at open; every tensor CRC is checked on
  every read (``read`` and ``iter_chunks``), like TensorFlow's own reader.
* A damaged index gives ``CorruptCheckpointError`` at open, with one line that
  names the file and the problem; a missing data file too (nothing in it is
  readable, so better to know at once). Damage inside a data file only affects
  the tensors stored there: reading one of them raises ``TensorReadError``
  (``checksum-mismatch`` or ``tensor-unreadable``) and the others still read.
* Work is bounded by the bytes the files hold: an entry's size must equal its
  shape times its dtype's width and lie inside its data file, and no two
  entries' bytes may overlap (an index can list the same bytes many times, so
  that reading "every tensor" would read them many times): the entry further
  into the index is ``tensor-unreadable``. A partitioned tensor's pieces must
  tile its shape, which is checked in O(pieces log pieces) or against a mask of
  its (stored) elements, never pairwise for many pieces.

Values are returned the way ``tf.train.load_checkpoint(p).get_tensor(name)``
returns them (same dtype and bytes), with these choices:

* numeric tensors are read-only numpy views of a memory map of the data file
  (``np.frombuffer``), so reading a large tensor costs no copy; ``.copy()`` one
  to modify it. A view keeps its file mapped even after :meth:`close`. As with
  any memory map, a data file must not be truncated in place while it is
  mapped (deleting or replacing it by rename is safe).
* bfloat16, float8_*, int4, uint4, int2, uint2 and float4_e2m1fn come back as
  ``ml_dtypes`` arrays. int4/uint4 are stored one element per byte, value in
  the low nibble ("Dtype table and element layout"), which is exactly ``ml_dtypes.int4``'s memory layout,
  so they are views too (``tobytes()`` equals TensorFlow's).
* quantized types (qint8, quint8, qint16, quint16, qint32) come back as the
  plain integer dtype of the same width, as TensorFlow's reader does.
* strings come back as numpy ``object`` arrays of ``bytes`` (a 0-d array for a
  scalar, where TensorFlow returns a bare ``bytes``).
* variant tensors are listed but reading one raises ``UnsupportedFormatError``.
* big-endian bundles (header ``endianness = BIG``) are converted to native byte
  order (a copy).
"""

from __future__ import annotations

import bisect
import functools
import glob
import mmap
import operator
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

import google_crc32c

from ckptdoctor.collector import paused_gc
from ckptdoctor.errors import (
    CheckpointNotFoundError,
    CkptDoctorError,
    CorruptCheckpointError,
    TensorReadError,
    UnsupportedFormatError,
)
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.readers.protowire import (
    BundleEntry,
    ObjectNode,
    WireFormatError,
    _wire,
    decode_bundle_entries,
    decode_bundle_entry,
    decode_bundle_header,
    decode_object_graph,
    read_varint,
)
from ckptdoctor.readers.sstable import combine_crc, iter_table_blocks, mask_crc, read_table_file, unmask_crc

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BundleReader",
    "TensorNotFoundError",
    "OBJECT_GRAPH_KEY",
    "encode_slice_key",
    "object_paths_from_graph",
]

#: Key of the serialized TrackableObjectGraph in TF2 checkpoints
#: ("The object-graph key and TrackableObjectGraph fields").
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
#: Attribute name under which a variable saves its value ("Key escaping of TF2 object paths").
VARIABLE_VALUE_ATTRIBUTE = "VARIABLE_VALUE"
#: Marker segment of slot-variable keys, kept in object paths of slots ("Key escaping of TF2 object paths").
OPTIMIZER_SLOT_SEGMENT = ".OPTIMIZER_SLOT"
_ATTRIBUTES_SEGMENT = "/.ATTRIBUTES/"

# CRCs are computed on bytes copies of at most this size: google_crc32c only
# accepts `bytes`, and a bounded step keeps memory flat for huge tensors.
_CRC_STEP = 8 * 1024 * 1024
# Up to this many strings, decode length varints in Python; above, with numpy.
_SMALL_STRING_COUNT = 64
# Up to this many pieces of a partitioned tensor, overlaps are looked for pairwise.
_PAIRWISE_PIECES = 64
# The longest-prefix search of object paths' rule 4 gives up after this many steps (real keys need one or two).
_PREFIX_STEPS = 64


class TensorNotFoundError(CkptDoctorError, KeyError):
    """The checkpoint has no tensor of the requested name (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _DType(NamedTuple):
    name: str  # tf.dtypes.as_dtype(enum).name
    layout: str | None  # numpy's little-endian element layout, or "ml_dtypes.NAME"; None: not a raw array

    @property
    def np_dtype(self) -> np.dtype | None:
        return _np_dtype(self.layout)


@functools.cache
def _np_dtype(layout: str | None) -> np.dtype | None:
    """The numpy dtype of a layout; ml_dtypes (0.4 s to import) is imported only when such a tensor is read."""
    import numpy as np

    if layout is None:
        return None
    if layout.startswith("ml_dtypes."):
        import ml_dtypes

        found = getattr(ml_dtypes, layout.split(".", 1)[1], None)
        return None if found is None else np.dtype(found)
    return np.dtype(layout)


def _dtype_table() -> dict[int, _DType]:
    raw: dict[int, tuple[str, str | None]] = {
        1: ("float32", "<f4"),
        2: ("float64", "<f8"),
        3: ("int32", "<i4"),
        4: ("uint8", "u1"),
        5: ("int16", "<i2"),
        6: ("int8", "i1"),
        7: ("string", None),
        8: ("complex64", "<c8"),
        9: ("int64", "<i8"),
        10: ("bool", "?"),
        11: ("qint8", "i1"),
        12: ("quint8", "u1"),
        13: ("qint32", "<i4"),
        14: ("bfloat16", "ml_dtypes.bfloat16"),
        15: ("qint16", "<i2"),
        16: ("quint16", "<u2"),
        17: ("uint16", "<u2"),
        18: ("complex128", "<c16"),
        19: ("float16", "<f2"),
        20: ("resource", None),
        21: ("variant", None),
        22: ("uint32", "<u4"),
        23: ("uint64", "<u8"),
        24: ("float8_e5m2", "ml_dtypes.float8_e5m2"),
        25: ("float8_e4m3fn", "ml_dtypes.float8_e4m3fn"),
        26: ("float8_e4m3fnuz", "ml_dtypes.float8_e4m3fnuz"),
        27: ("float8_e4m3b11fnuz", "ml_dtypes.float8_e4m3b11fnuz"),
        28: ("float8_e5m2fnuz", "ml_dtypes.float8_e5m2fnuz"),
        29: ("int4", "ml_dtypes.int4"),
        30: ("uint4", "ml_dtypes.uint4"),
        # In TF 2.21's enum; stored one element per byte like int4 (observed).
        31: ("int2", "ml_dtypes.int2"),
        32: ("uint2", "ml_dtypes.uint2"),
        33: ("float4_e2m1fn", "ml_dtypes.float4_e2m1fn"),
    }
    return {k: _DType(name, layout) for k, (name, layout) in raw.items()}


_DTYPES = _dtype_table()
_DT_STRING, _DT_VARIANT = 7, 21


_DTYPE_NAMES = {enum: dt.name for enum, dt in _DTYPES.items()}
_by_name = operator.attrgetter("name")


_KEY, _VALUE = operator.itemgetter(0), operator.itemgetter(1)
_DECODE_KEY = operator.methodcaller("decode", "utf-8", "surrogateescape")


def _first_bad_entry(keys: list[bytes], values: list[bytes]) -> tuple[bytes, WireFormatError] | None:
    """The key of the first value that is not a ``BundleEntryProto``, and its error; None: none is."""
    for key, value in zip(keys, values):
        try:
            decode_bundle_entry(value)
        except WireFormatError as e:
            return key, e
    return None


def _dtype_name(enum: int) -> str:
    return _DTYPE_NAMES.get(enum) or f"unknown({enum})"


_I64_MAX = (1 << 63) - 1


def _num_elements(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# ----------------------------------------------------------------- slice keys ("Slice keys of partitioned variables")


def _ordered_string(b: bytes) -> bytes:
    return b.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _ordered_unsigned(v: int) -> bytes:
    body = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes([len(body)]) + body


_SIGNED_HEADERS = [
    (0x80, 0x00), (0xC0, 0x00), (0xE0, 0x00), (0xF0, 0x00), (0xF8, 0x00),
    (0xFC, 0x00), (0xFE, 0x00), (0xFF, 0x00), (0xFF, 0x80), (0xFF, 0xC0),
]  # fmt: skip


def _ordered_signed(v: int) -> bytes:
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    length = x.bit_length() // 7 + 1
    out = bytearray(v.to_bytes(length, "big", signed=True))
    h0, h1 = _SIGNED_HEADERS[length - 1]
    out[0] ^= h0
    if length > 1:
        out[1] ^= h1
    return bytes(out)


def _slice_key_tensor_name(key: bytes) -> str:
    """The tensor name inside a slice key, for messages (best effort)."""
    end = key.find(b"\x00\x01", 1)
    raw = key[1:end] if end > 0 else key[1:]
    return raw.replace(b"\x00\xff", b"\x00").replace(b"\xff\x00", b"\xff").decode("utf-8", "replace")


def encode_slice_key(name: str, extents: Sequence[tuple[int, int | None]]) -> bytes:
    """The index key of one stored piece of a partitioned tensor (OrderedCode).

    Args:
        name: the full tensor's name.
        extents: ``(start, length)`` per dimension, length None (or -1) for a
            whole dimension.
    """
    parts = [b"\x00", _ordered_string(name.encode("utf-8", "surrogateescape")), _ordered_unsigned(len(extents))]
    for start, length in extents:
        parts.append(_ordered_signed(start))
        parts.append(_ordered_signed(-1 if length is None else length))
    return b"".join(parts)


# ------------------------------------------------------------- object paths ("Object paths reported by ckptdoctor")


def object_paths_from_graph(nodes: Sequence[ObjectNode], keys: Sequence[str]) -> dict[str, str]:
    """Map checkpoint keys to readable object paths using a TF2 object graph.

    The rule:

    1. Each object gets the path of its breadth-first shortest route from the
       root (node 0) over ``children`` edges, ties going to the first edge in
       stored order (TensorFlow's own rule, "Key escaping of TF2 object paths", so the path follows the
       same edges as the key: a tf_keras layer reachable as both ``layer-0``
       and ``layer_with_weights-0`` appears under the one its key uses).
       Segments are the raw local names, unescaped, joined with ``/`` (a
       local name containing ``/`` therefore reads as two segments).
    2. A slot variable (not reachable by ``children``) gets
       ``<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>``,
       mirroring its key.
    3. A tensor saved as attribute ``VARIABLE_VALUE`` of an object gets the
       object's path (``model/layer_with_weights-0/kernel``); any other
       attribute gets ``<object path>/<attribute name>``
       (``iterator/ITERATOR_STATE``).
    4. Keys found in no attribute but extending an attribute's
       ``checkpoint_key`` past ``/.ATTRIBUTES/`` (legacy multi-tensor
       saveables such as ``table/.ATTRIBUTES/table-keys``) get that
       attribute's path plus the extra suffix (``table/table-keys``).
    5. Other keys (the object graph itself, objects unreachable from the
       root) get no path.

    Args:
        nodes: the decoded ``TrackableObjectGraph`` nodes.
        keys: the checkpoint's tensor names.

    Returns:
        ``{key: object_path}`` for the keys that could be mapped.
    """
    paths = _object_path_lookup(nodes, keys)
    return {key: paths[key] for key in keys if key in paths}


def _object_path_lookup(nodes: Sequence[ObjectNode], keys: Iterable[str]) -> dict[str, str]:
    """``object_paths_from_graph``'s paths for ``keys``, in a dict that may also hold other keys' paths.

    The dict is the paths of every saved attribute (rules 1 to 3), completed with those of ``keys``
    found by rule 4: no second dict of every key is made. Rules 1 to 3 are computed in C
    (``readers/_wire.c``) when it is built and every part of the graph they read is of the decoded form
    (exact tuples, ints and strs); else in Python. The same dict either way (``_object_path_lookup_py``).
    """
    if len(nodes) == 0:
        return {}
    by_key = None
    if _wire is not None:
        by_key = _wire.object_paths(nodes, ObjectNode, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT)
    if by_key is None:
        by_key = _attribute_paths(nodes)
    return _add_extended_keys(by_key, keys)


def _object_path_lookup_py(nodes: Sequence[ObjectNode], keys: Iterable[str]) -> dict[str, str]:
    """``_object_path_lookup`` in Python only."""
    if len(nodes) == 0:
        return {}
    return _add_extended_keys(_attribute_paths(nodes), keys)


def _attribute_paths(nodes: Sequence[ObjectNode]) -> dict[str, str]:
    """Rules 1 to 3 of ``object_paths_from_graph``: the path of every saved attribute's key (``nodes`` not empty)."""
    n = len(nodes)
    # Paths are kept as joined strings ("" for the root): cheaper than tuples.
    paths: list[str | None] = [None] * n
    paths[0] = ""
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        here = paths[node_id]
        for child, local_name in nodes[node_id].children:
            if 0 <= child < n and paths[child] is None:
                paths[child] = f"{here}/{local_name}" if here else local_name
                queue.append(child)
    for owner, node in enumerate(nodes):
        owner_path = paths[owner]
        if owner_path is None:
            continue
        for var_id, slot_name, slot_id in node.slot_variables:
            if 0 <= var_id < n and 0 <= slot_id < n and paths[var_id] is not None and paths[slot_id] is None:
                paths[slot_id] = "/".join(
                    p for p in (paths[var_id], OPTIMIZER_SLOT_SEGMENT, owner_path, slot_name) if p
                )

    by_key: dict[str, str] = {}
    for node_id, node in enumerate(nodes):
        path = paths[node_id]
        if path is None:
            continue
        for attr_name, key in node.attributes:
            if attr_name == VARIABLE_VALUE_ATTRIBUTE and path:
                by_key[key] = path
            else:
                by_key[key] = f"{path}/{attr_name}" if path else attr_name
    return by_key


def _add_extended_keys(by_key: dict[str, str], keys: Iterable[str]) -> dict[str, str]:
    """``by_key`` (the attributes' paths) completed by rule 4 with the paths of ``keys`` that extend an attribute's
    key past ``/.ATTRIBUTES/``; returned."""
    with_marker: list[str] | None = None
    found: dict[str, str] = {}
    for key in keys:
        if key in by_key:
            continue
        marker = key.find(_ATTRIBUTES_SEGMENT)
        if marker < 0:
            continue
        if with_marker is None:
            with_marker = sorted(k for k in by_key if _ATTRIBUTES_SEGMENT in k)
        prefix = _longest_prefix(with_marker, key, marker + len(_ATTRIBUTES_SEGMENT))
        if prefix is not None:
            found[key] = by_key[prefix] + key[len(prefix) :]
    by_key.update(found)  # after the search: it sees the attributes' keys only, as each key did before
    return by_key


def _longest_prefix(ordered: list[str], key: str, shortest: int) -> str | None:
    """The longest string of ``ordered`` (sorted) that is a proper prefix of ``key`` and longer than ``shortest``.

    The largest string not above a probe is, if it is a prefix of the probe, the longest one; if not, the
    answer is a prefix of their common part, which becomes the probe. Each step is a binary search.
    """
    probe = key[:-1]
    for _ in range(_PREFIX_STEPS):
        if len(probe) <= shortest:
            return None
        i = bisect.bisect_right(ordered, probe) - 1
        if i < 0:
            return None
        candidate = ordered[i]
        if probe.startswith(candidate):
            return candidate if len(candidate) > shortest else None
        probe = probe[: len(os.path.commonprefix([candidate, probe]))]
    return None


# --------------------------------------------------------------------- the reader


def _normalise_prefix(prefix: str | os.PathLike) -> str:
    """Accept ``P``, ``P.index`` or ``P.data-00000-of-00001`` and return ``P``."""
    p = os.fspath(prefix)
    if os.path.exists(p + ".index"):
        return p
    if p.endswith(".index"):
        return p[: -len(".index")]
    m = re.fullmatch(r"(.*)\.data-\d{5,}-of-\d{5,}", p, flags=re.S)
    if m:
        return m.group(1)
    return p


def _not_found_message(prefix: str) -> str:
    index = prefix + ".index"
    if os.path.isdir(prefix):
        indexes = glob.glob(os.path.join(glob.escape(prefix), "*.index"))
        found = sorted(os.path.basename(f)[: -len(".index")] for f in indexes)
        hint = f" (found: {', '.join(found[:5])})" if found else ""
        return f"{prefix} is a directory; expected a checkpoint prefix such as {os.path.join(prefix, 'ckpt-1')}{hint}"
    if glob.glob(glob.escape(prefix) + ".data-*"):
        return (
            f"{index} does not exist, but data files {prefix}.data-* do: the save did not finish or the index was lost"
        )
    if os.path.isfile(prefix):
        return (
            f"{index} does not exist; {prefix} is a file, perhaps a TF1 'V1' checkpoint, "
            "which this reader does not read"
        )
    return f"no checkpoint at {prefix}: {index} does not exist"


class _Piece(NamedTuple):
    """One stored piece of a partitioned tensor."""

    region: tuple[slice, ...]  # where it goes in the full tensor
    entry: BundleEntry
    label: str  # "[0:6, :]" for messages


def _cut_short(name: str, label: str, path: str, at: int, last: int) -> TensorReadError:
    """A data file that ended at ``at`` while a tensor ending at ``last`` was read (checked long enough before)."""
    return TensorReadError(
        "tensor-unreadable",
        name,
        f"tensor {label}: {path} ends at offset {at}, before the tensor's last byte ({last}): "
        "the file was cut short while being read",
    )


def _chunk_step(chunk_bytes: int, itemsize: int) -> int:
    """A numeric tensor's chunk in bytes (``iter_chunks``, ``pieces``, ``iter_piece``): one or more whole elements."""
    return max(1, chunk_bytes // itemsize) * itemsize


def _preadable(entry: BundleEntry) -> bool:
    """Whether the entry's bytes are one stored numeric tensor that ``pread`` can read here (not partitioned, not
    strings: ``read_run`` and ``pieces`` leave those to ``iter_chunks``)."""
    return not entry.slices and entry.dtype != _DT_STRING and hasattr(os, "pread")


_SHARD_ID, _OFFSET, _SIZE = operator.attrgetter("shard_id"), operator.attrgetter("offset"), operator.attrgetter("size")
_DTYPE, _SHAPE, _SLICES = operator.attrgetter("dtype"), operator.attrgetter("shape"), operator.attrgetter("slices")


def _may_overlap(entries: list[BundleEntry]) -> bool:
    """Whether the bytes of two of ``entries`` may overlap in a data file; False is certain.

    The test ``_find_overlaps``' sweep makes, in arrays: sorted by shard and offset, the non-empty entries
    overlap only if one starts before its predecessor in the same shard ends. When none does, the sweep
    finds nothing (each entry keeps its bytes), and 100,000 entries need not be swept in Python (0.04 s).
    Offsets and sizes are below 2**63 (``decode_bundle_entry``), so their sums fit in uint64.

    In C (``_wire.may_overlap``) when it is built and the entries are of the decoded form: a listing then imports
    no numpy.
    """
    n = len(entries)
    if n < 2:
        return False
    if _wire is not None:
        found = _wire.may_overlap(entries, BundleEntry)
        if found is not None:
            return found
    import numpy as np

    size = np.fromiter(map(_SIZE, entries), np.uint64, n)
    stored = size > 0
    shard = np.fromiter(map(_SHARD_ID, entries), np.uint64, n)[stored]
    start = np.fromiter(map(_OFFSET, entries), np.uint64, n)[stored]
    end = start + size[stored]
    order = np.lexsort((start, shard))
    shard, start, end = shard[order], start[order], end[order]
    return bool(np.any((shard[1:] == shard[:-1]) & (start[1:] < end[:-1])))


def _release(buf, start: int, end: int) -> None:
    """Drop the mapped pages of ``[start, end)`` from this process's resident set.

    The bytes were copied out already; without this, every page of a streamed
    tensor would stay resident (as file-backed RSS) until the map is closed. The
    map is read-only and shared, so the pages remain in the page cache and fault
    back in if touched again.
    """
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and end > start:
        aligned = start - start % mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
        except (OSError, ValueError):
            pass  # advice only


#: ``read_run``: tensors at most this far apart are read with one ``pread`` (their gap read and dropped), up to this
#: many bytes in all.
_RUN_GAP, _RUN_BYTES = 64 * 1024, 16 * 1024 * 1024


class BundleReader:
    """Reader of one TensorFlow V2 checkpoint (tensor bundle).

    Example:
        >>> with BundleReader("train/ckpt-3") as reader:
        ...     for entry in reader.entries():
        ...         print(entry.name, entry.dtype, entry.shape)
        ...     kernel = reader.read("dense/kernel")

    Attributes:
        prefix: the checkpoint prefix (``P`` of ``P.index``).
        format: ``"tf-v2-bundle"``.
        index_path: ``P.index``.
        num_shards: number of data files according to the header.
        big_endian: True when tensor data was written big-endian.
        object_graph_error: why object paths are missing although the
            checkpoint has an object graph (its tensor is damaged or
            undecodable), else None. Set by :meth:`entries`.
    """

    format = "tf-v2-bundle"
    #: Tensors may be read from several threads at once (``pipelines.inspect.iter_stats``): the data
    #: files are memory maps, opened under a lock, and each read keeps its own position and CRC.
    parallel_reads = True

    def __init__(self, prefix: str | os.PathLike):
        """Open the checkpoint, check its index and that its data files exist.

        Args:
            prefix: the checkpoint prefix; ``P.index`` or a data file name is
                accepted too.

        Raises:
            CheckpointNotFoundError: ``P.index`` does not exist.
            CorruptCheckpointError: the index is not a valid bundle index, or a
                data file it refers to is missing.
            UnsupportedFormatError: the index is a TF1 V1 table or needs a
                newer reader.
        """
        self.prefix = _normalise_prefix(prefix)
        self.index_path = self.prefix + ".index"
        if not os.path.isfile(self.index_path):
            raise CheckpointNotFoundError(_not_found_message(self.prefix))
        with paused_gc():
            self._read_index()
        self._check_shards()
        self._buffers: dict[int, mmap.mmap | bytes] = {}
        self._opening = threading.Lock()  # one memory map per data file, whichever thread opens it
        self._overlaps: dict[int, str] | None = None  # id(entry) -> the entry whose bytes it reuses
        self._listing: list[TensorEntry] | None = None
        self._nodes: list | None = None  # the decoded object graph, once decoded
        self._closed = False
        self.object_graph_error: str | None = None

    # ------------------------------------------------------------------ opening

    def _read_index(self) -> None:
        """The header and every entry, decoded as the table is read, a block at a time.

        The first problem found is raised in the order of a check of the whole table first, then
        of its header, then of each entry: an entry that is not a ``BundleEntryProto`` is raised
        once the table and the header passed. (Until then the entries may be stored in the wrong
        place: a table out of order raises, and its slices' keys are told apart by their order.)
        """
        self._entries: dict[str, BundleEntry] = {}
        self._slice_entries: dict[bytes, BundleEntry] = {}
        first: tuple[bytes, bytes] | None = None
        bad: tuple[bytes, WireFormatError] | None = None  # the first entry that cannot be decoded
        for items in iter_table_blocks(read_table_file(self.index_path), self.index_path):
            if first is None and items:
                first, items = items[0], items[1:]
            if bad is not None or not items:
                continue
            keys = list(map(_KEY, items))
            values = list(map(_VALUE, items))
            try:
                entries = decode_bundle_entries(values)
            except WireFormatError as e:
                bad = _first_bad_entry(keys, values) or (keys[0], e)  # (the first one decoded alone fails)
                continue
            # Keys of pieces of partitioned tensors start with a zero byte ("Slice keys of partitioned
            # variables"): in a table in order they come first, before b"\x01".
            pieces = bisect.bisect_left(keys, b"\x01")
            self._slice_entries.update(zip(keys[:pieces], entries[:pieces]))
            self._entries.update(zip(map(_DECODE_KEY, keys[pieces:]), entries[pieces:]))
        self._read_header(first)
        if bad is not None:
            key, problem = bad
            raise CorruptCheckpointError(
                f"corrupt checkpoint index {self.index_path}: entry {key!r} is not a BundleEntryProto ({problem})"
            ) from problem

    def _read_header(self, first: tuple[bytes, bytes] | None) -> None:
        """Check the table's first record, the header."""
        if first is None or first[0] != b"":
            raise CorruptCheckpointError(
                f"corrupt checkpoint index {self.index_path}: "
                "no header record (the empty key) at the start of the table"
            )
        value = first[1]
        if value[:1] == b"\x0a":
            # V1 tables start with a length-delimited `meta` submessage ("TF1 V1 checkpoints").
            raise UnsupportedFormatError(
                f"{self.index_path} holds a TF1 'V1' checkpoint table, not a V2 bundle index; "
                "this reader reads V2 checkpoints only"
            )
        try:
            header = decode_bundle_header(value)
        except WireFormatError as e:
            raise CorruptCheckpointError(
                f"corrupt checkpoint index {self.index_path}: header is not a BundleHeaderProto ({e})"
            ) from e
        if header.endianness not in (0, 1):
            raise CorruptCheckpointError(
                f"corrupt checkpoint index {self.index_path}: "
                f"header endianness {header.endianness} is neither 0 (little) nor 1 (big)"
            )
        if header.producer < 0 or header.min_consumer > 1 or 1 in header.bad_consumers:
            raise UnsupportedFormatError(
                f"{self.index_path} needs a newer checkpoint reader (version producer={header.producer}, "
                f"min_consumer={header.min_consumer}, bad_consumers={list(header.bad_consumers)}; "
                "this reader is consumer 1)"
            )
        if header.num_shards < 0:
            raise CorruptCheckpointError(
                f"corrupt checkpoint index {self.index_path}: header says {header.num_shards} data files"
            )
        self.num_shards = header.num_shards
        self.big_endian = header.endianness == 1

    def _shard_path(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

    def _check_shards(self) -> None:
        """Check that every data file an entry refers to exists; report all problems at once."""
        # The data files named, first (a set of a few ids, not a list of names per file): when all exist, as
        # nearly always, the names of their tensors are not needed (100,000 tensors: 0.015 -> 0.004 s).
        stored = self._entries.values()
        named = (
            set(map(_SHARD_ID, stored))
            if not any(map(_SLICES, stored))
            else {e.shard_id for e in stored if not e.slices}
        )
        named.update(map(_SHARD_ID, self._slice_entries.values()))
        if all(0 <= i < self.num_shards and os.path.isfile(self._shard_path(i)) for i in named):
            return
        users: dict[int, list[str]] = {}
        for name, entry in self._entries.items():
            if not entry.slices:  # a partitioned tensor's own shard_id is meaningless
                users.setdefault(entry.shard_id, []).append(name)
        for key, entry in self._slice_entries.items():
            users.setdefault(entry.shard_id, []).append(f"{_slice_key_tensor_name(key)} (a piece)")
        problems = []
        for shard_id in sorted(users):
            names = users[shard_id]
            example = f"{len(names)} tensor(s), e.g. {names[0]!r}"
            if shard_id >= self.num_shards:
                problems.append(f"{example} in data file {shard_id} but the header says {self.num_shards} data file(s)")
                continue
            path = self._shard_path(shard_id)
            try:
                os.stat(path)
            except FileNotFoundError:
                problems.append(f"data file {path} is missing (it holds {example})")
            except OSError as e:
                problems.append(f"data file {path} cannot be read ({e.strerror or e})")
        if problems:
            raise CorruptCheckpointError(
                f"checkpoint {self.prefix}: " + "; ".join(problems) + "; restore the data files next to the .index"
            )

    # ------------------------------------------------------------------ listing

    def entries(self) -> list[TensorEntry]:
        """Every tensor, sorted by name, slices of partitioned tensors hidden.

        For TF2 object-based checkpoints ``object_path`` is filled in from the
        object graph (see :func:`object_paths_from_graph` for the rule); the
        object-graph tensor itself is listed as a string scalar.
        """
        if self._listing is None:
            self._listing = self._build_listing()
        return list(self._listing)

    def _build_listing(self) -> list[TensorEntry]:
        with paused_gc():
            paths = self._object_paths()
            # The listing is the decoded object graph's last user here (an adapter that needs it, the TF2
            # one, asks before it lists): nothing reads its nodes again.
            self._nodes = None
            names, stored = list(self._entries), list(self._entries.values())
            dtypes = list(map(_DTYPE_NAMES.get, map(_DTYPE, stored)))
            if None in dtypes:
                dtypes = [_dtype_name(e.dtype) for e in stored]
            nbytes: Iterable[int]
            if any(map(_SLICES, stored)):  # partitioned tensors: their pieces' sizes
                nbytes = [
                    sum(self._slice_entries[k].size for k in self._piece_keys(name, e) if k is not None)
                    if e.slices
                    else e.size
                    for name, e in zip(names, stored)
                ]
                partitioned: Iterable = map(_SLICES, stored)
            else:
                nbytes, partitioned = map(_SIZE, stored), repeat(False)
            # A field at a time, the rows made by tuple.__new__ (no named-tuple __new__ in Python): 100,000 tensors
            # without a Python-level loop.
            fields = zip(names, dtypes, map(_SHAPE, stored), nbytes, map(bool, partitioned), map(paths.get, names))
            listing = list(map(tuple.__new__, repeat(TensorEntry), fields))
            # The table is in byte order; sort anyway in case surrogate-escaped
            # (non-UTF-8) names order differently as str.
            listing.sort(key=_by_name)
            return listing

    def read_object_graph(self) -> bytes:
        """The serialized ``TrackableObjectGraph`` (the string scalar ``OBJECT_GRAPH_KEY``).

        Its dtype and shape are checked before it is read: a "scalar" declaring millions of strings
        would otherwise become millions of Python objects.

        Raises:
            TensorNotFoundError: the checkpoint has no object graph.
            UnsupportedFormatError: it is not one string.
            TensorReadError: its bytes cannot be read.
        """
        entry = self._lookup(OBJECT_GRAPH_KEY)
        if entry.dtype != _DT_STRING or entry.slices or _num_elements(entry.shape) != 1:
            raise UnsupportedFormatError(
                f"it is {_dtype_name(entry.dtype)} of shape {list(entry.shape)}, expected a string scalar"
            )
        return self._read_string_values(OBJECT_GRAPH_KEY, entry, repr(OBJECT_GRAPH_KEY))[0]

    def has_tensor(self, name: str) -> bool:
        """Whether the bundle stores a tensor of that name (the index only: no listing built, nothing read)."""
        return name in self._entries

    def object_graph_nodes(self) -> list:
        """The decoded ``TrackableObjectGraph`` (``protowire.decode_object_graph``), kept until the listing is built.

        The listing's object paths and the TF2 adapter both need it, and on many tensors the decode
        costs time and the nodes memory (BENCHMARKS.md D1). The adapter asks first (``describe``
        before ``entries``), the listing last: it lets them go, and a later call decodes again.

        Raises:
            TensorNotFoundError: the checkpoint has no object graph.
            UnsupportedFormatError: it is not one string.
            TensorReadError: its bytes cannot be read.
            WireFormatError: they are not a ``TrackableObjectGraph``.
        """
        if self._nodes is None:
            blob = self.read_object_graph()
            with paused_gc():
                self._nodes = decode_object_graph(blob, keys=dict(zip(self._entries, self._entries)))
        return self._nodes

    def _object_paths(self) -> dict[str, str]:
        if OBJECT_GRAPH_KEY not in self._entries:
            return {}
        try:
            nodes = self.object_graph_nodes()
        except (TensorReadError, UnsupportedFormatError, WireFormatError) as e:
            # Listing still works without paths; the caller can report why.
            self.object_graph_error = f"object graph {OBJECT_GRAPH_KEY} unusable: {e}"
            return {}
        return _object_path_lookup(nodes, self._entries)

    # ------------------------------------------------------------------ reading

    def read(self, name: str) -> np.ndarray:
        """The whole tensor with its stored dtype and shape (see module notes).

        Raises:
            TensorNotFoundError: no such tensor (a ``KeyError`` too).
            TensorReadError: its bytes are missing or fail their checksum.
            UnsupportedFormatError: a variant tensor or unknown dtype.
        """
        entry = self._lookup(name)
        if entry.slices:
            return self._read_partitioned(name, entry)
        return self._read_stored(name, entry, repr(name))

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's values as flat 1-D arrays of at most about ``chunk_bytes``.

        Numeric tensors are streamed from the data file: each chunk is one
        bounded copy that also feeds the incremental CRC, which is checked
        after the last chunk, so memory stays flat whatever the tensor's size.
        String and partitioned tensors are read whole (every piece checked)
        and their ravel is yielded in chunks.

        Raises:
            TensorNotFoundError: no such tensor (raised at the call).
            UnsupportedFormatError: a variant tensor (raised at the call).
            TensorReadError: missing bytes (at the call) or a checksum mismatch
                (after the last chunk: discard partial results).
        """
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, received {chunk_bytes}")
        entry = self._lookup(name)
        if entry.slices or entry.dtype == _DT_STRING:
            return self._iter_whole(self.read(name), chunk_bytes)
        label = repr(name)
        np_dtype = self._numeric_dtype(name, entry, label)
        buf, path = self._locate(name, entry, label)
        return self._iter_numeric(name, entry, label, np_dtype, buf, path, chunk_bytes)

    def _lookup(self, name: str) -> BundleEntry:
        if self._closed:
            raise ValueError(f"reader of {self.prefix} is closed")
        entry = self._entries.get(name)
        if entry is None:
            import difflib  # only on this error path: keeps import time down

            close = difflib.get_close_matches(name, list(self._entries), n=3) if isinstance(name, str) else []
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise TensorNotFoundError(f"no tensor {name!r} in checkpoint {self.prefix}{hint}")
        return entry

    def _buffer(self, shard_id: int, name: str) -> tuple[mmap.mmap | bytes, str]:
        """The memory map of a data file (opened on first use)."""
        path = self._shard_path(shard_id)
        buf = self._buffers.get(shard_id)
        if buf is not None:
            return buf, path
        with self._opening:
            return self._open_buffer(shard_id, name, path)

    def _open_buffer(self, shard_id: int, name: str, path: str) -> tuple[mmap.mmap | bytes, str]:
        buf = self._buffers.get(shard_id)
        if buf is None:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    # mmap cannot map an empty file; b"" behaves the same for us.
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except OSError as e:
                raise TensorReadError(
                    "tensor-unreadable", name, f"tensor {name!r}: cannot open data file {path} ({e.strerror or e})"
                ) from e
            self._buffers[shard_id] = buf
        return buf, path

    def _overlapping(self) -> dict[int, str]:
        """``id(entry)`` -> the name of an earlier entry whose bytes it overlaps, for every such stored entry.

        One sweep over the entries sorted by shard and offset; the entry first in the index keeps the bytes.
        """
        if self._overlaps is None:
            with paused_gc():
                self._overlaps = self._find_overlaps()
        return self._overlaps

    def _find_overlaps(self) -> dict[int, str]:
        if not _may_overlap([e for e in self._entries.values() if not e.slices] + list(self._slice_entries.values())):
            return {}
        stored = [(e, name) for name, e in self._entries.items() if not e.slices]
        stored += [(e, f"{_slice_key_tensor_name(k)} (a piece)") for k, e in self._slice_entries.items()]
        order = [(e.shard_id, e.offset, i) for i, (e, _name) in enumerate(stored)]
        order.sort()  # by shard and offset, then index order: nearly sorted already (the writer's order)
        found: dict[int, str] = {}
        shard, end, owner = None, 0, ""
        for _shard, _offset, i in order:
            e, name = stored[i]
            if e.size == 0:
                continue
            if e.shard_id != shard:
                shard, end = e.shard_id, 0
            if e.offset < end:
                found[id(e)] = owner
                continue
            end, owner = e.offset + e.size, name
        return found

    def _locate(self, name: str, entry: BundleEntry, label: str) -> tuple[mmap.mmap | bytes, str]:
        """The data file holding ``entry``, after checking its bytes are all there and its own."""
        buf, path = self._buffer(entry.shard_id, name)
        owner = self._overlapping().get(id(entry))
        if owner is not None:
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"tensor {label}: its bytes {entry.offset}..{entry.offset + entry.size} in {path} overlap those of "
                f"{owner!r} (corrupt index: each tensor has bytes of its own): not read",
            )
        end = entry.offset + entry.size
        if end > len(buf):
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"tensor {label}: its bytes end at offset {end} of {path}, but the file has only "
                f"{len(buf)} bytes (truncated data file)",
            )
        return buf, path

    def _check_crc(self, name: str, entry: BundleEntry, label: str, path: str, actual: int) -> None:
        expected = unmask_crc(entry.crc32c)
        if actual != expected:
            raise TensorReadError(
                "checksum-mismatch",
                name,
                f"tensor {label} in {path} (bytes {entry.offset}..{entry.offset + entry.size}) fails its checksum: "
                f"expected crc32c {expected:#010x}, computed {actual:#010x}; the data file is damaged",
            )

    def _numeric_dtype(self, name: str, entry: BundleEntry, label: str) -> np.dtype:
        """The element dtype of a raw-array tensor, after checking its size."""
        dt = _DTYPES.get(entry.dtype)
        if entry.dtype == _DT_VARIANT:
            raise UnsupportedFormatError(
                f"tensor {label} is a variant tensor: variant tensors are listed but not decoded "
                "(their payload needs TensorFlow's C++ type registry)"
            )
        if dt is None or dt.np_dtype is None:
            raise UnsupportedFormatError(
                f"tensor {label} has dtype {_dtype_name(entry.dtype)} (enum {entry.dtype}), "
                "which cannot be read from a checkpoint"
            )
        if _num_elements(max(d, 1) for d in entry.shape) > _I64_MAX:  # numpy cannot shape it, even with a 0
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"tensor {label}: shape {list(entry.shape)} has more than 2**63-1 elements (corrupt index entry)",
            )
        needed = _num_elements(entry.shape) * dt.np_dtype.itemsize
        if entry.size != needed:
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"tensor {label}: the index gives {entry.size} bytes, but shape {list(entry.shape)} of "
                f"{dt.name} needs {needed} (corrupt index entry)",
            )
        return dt.np_dtype

    def _to_native(self, flat: np.ndarray) -> np.ndarray:
        """Byte-swap a flat array read from a big-endian bundle (a copy)."""
        if not self.big_endian or flat.dtype.itemsize == 1:
            return flat
        # Complex numbers swap their two halves separately ("Byte order").
        unit = flat.dtype.itemsize // 2 if flat.dtype.kind == "c" else flat.dtype.itemsize
        return flat.view(f"u{unit}").byteswap().view(flat.dtype)

    def _read_stored(self, name: str, entry: BundleEntry, label: str) -> np.ndarray:
        """Read one stored (non-partitioned) entry: a tensor or a piece of one."""
        import numpy as np

        if entry.dtype == _DT_STRING:
            return self._read_strings(name, entry, label)
        np_dtype = self._numeric_dtype(name, entry, label)
        buf, path = self._locate(name, entry, label)
        start, end = entry.offset, entry.offset + entry.size
        crc = 0
        for a in range(start, end, _CRC_STEP):
            crc = google_crc32c.extend(crc, buf[a : min(a + _CRC_STEP, end)])
        self._check_crc(name, entry, label, path, crc)
        count = _num_elements(entry.shape)
        if count == 0:
            flat = np.empty(0, np_dtype)
        else:
            flat = np.frombuffer(buf, dtype=np_dtype, count=count, offset=start)
        return self._to_native(flat).reshape(entry.shape)

    def _iter_numeric(
        self,
        name: str,
        entry: BundleEntry,
        label: str,
        np_dtype: np.dtype,
        buf: mmap.mmap | bytes,
        path: str,
        chunk_bytes: int,
    ) -> Iterator[np.ndarray]:
        import numpy as np

        itemsize = np_dtype.itemsize
        count = _num_elements(entry.shape)
        step = _chunk_step(chunk_bytes, itemsize) // itemsize
        if count > step and hasattr(os, "pread"):
            yield from self._iter_pread(name, entry, label, np_dtype, path, step * itemsize)
            return
        crc = 0
        for first in range(0, count, step):
            a = entry.offset + first * itemsize
            b = a + min(step, count - first) * itemsize
            raw = buf[a:b]  # one bounded copy
            crc = google_crc32c.extend(crc, raw)
            _release(buf, a, b)
            yield self._to_native(np.frombuffer(raw, dtype=np_dtype))
        self._check_crc(name, entry, label, path, crc)

    def read_run(self, names: Sequence[str], most: int) -> list[np.ndarray | TensorReadError | None]:
        """Numeric tensors of at most ``most`` bytes each, read together: flat native arrays, in order.

        The tensors of one data file are read with one ``pread`` per run of them lying close together
        (``_RUN_GAP`` bytes apart at most, ``_RUN_BYTES`` in all), each checked against its own CRC32C:
        one system call and one buffer for a batch of small tensors, where ``iter_chunks`` makes a call
        and a copy each. An item is the tensor's error if it cannot be read (the message ``iter_chunks``
        gives), or None when it is not for this path (bigger, strings, partitioned, variant, unknown):
        read it with ``iter_chunks``. May run on any thread.
        """
        out: list[np.ndarray | TensorReadError | None] = [None] * len(names)
        wanted = []  # (shard, offset, index, entry, dtype)
        for i, name in enumerate(names):
            entry = self._lookup(name)
            if not _preadable(entry) or entry.size > most:
                continue
            dt = _DTYPES.get(entry.dtype)
            if dt is None or dt.np_dtype is None:
                continue  # iter_chunks says why
            try:
                np_dtype = self._numeric_dtype(name, entry, repr(name))
                self._locate(name, entry, repr(name))
            except TensorReadError as e:
                out[i] = e
                continue
            wanted.append((entry.shard_id, entry.offset, i, entry, np_dtype))
        wanted.sort(key=operator.itemgetter(0, 1))
        run: list = []
        for item in wanted:
            if run and (
                item[0] != run[0][0]
                or item[1] > run[-1][1] + run[-1][3].size + _RUN_GAP
                or item[1] + item[3].size - run[0][1] > _RUN_BYTES
            ):
                self._read_together(names, run, out)
                run = []
            run.append(item)
        if run:
            self._read_together(names, run, out)
        return out

    def _read_together(self, names: Sequence[str], run: list, out: list) -> None:
        import numpy as np

        shard, start = run[0][0], run[0][1]
        stop = max(offset + entry.size for _, offset, _, entry, _ in run)
        path = self._shard_path(shard)
        with open(path, "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), stop - start, start)
        data = np.frombuffer(raw, np.uint8)
        for _, offset, i, entry, np_dtype in run:
            name, label = names[i], repr(names[i])
            a, b = offset - start, offset - start + entry.size
            if b > len(raw):
                out[i] = _cut_short(name, label, path, start + len(raw), offset + entry.size)
                continue
            try:
                self._check_crc(name, entry, label, path, google_crc32c.value(data[a:b]))
            except TensorReadError as e:
                out[i] = e
                continue
            count = _num_elements(entry.shape)
            out[i] = self._to_native(np.frombuffer(raw, np_dtype, count, a) if count else np.empty(0, np_dtype))

    def pieces(self, name: str, chunk_bytes: int, piece_bytes: int) -> list[tuple[int, int]] | None:
        """A numeric tensor of more than ``piece_bytes`` as pieces of about ``piece_bytes`` for several
        threads (``pipelines.inspect.iter_stats``): ``(start, stop)`` offsets into its bytes, each start a
        multiple of ``chunk_bytes``, so that ``iter_piece`` yields exactly the chunks ``iter_chunks`` does.
        None when it is read whole or in one piece: small, strings, partitioned, or no ``pread`` here.
        Raises as ``iter_chunks`` does at the call."""
        entry = self._lookup(name)
        if not _preadable(entry) or entry.size <= piece_bytes:
            return None
        label = repr(name)
        itemsize = self._numeric_dtype(name, entry, label).itemsize
        self._locate(name, entry, label)
        chunk = _chunk_step(chunk_bytes, itemsize)
        per_piece = max(chunk, piece_bytes // chunk * chunk)
        return [(a, min(a + per_piece, entry.size)) for a in range(0, entry.size, per_piece)]

    def iter_piece(self, name: str, start: int, stop: int, chunk_bytes: int) -> Iterator[tuple[np.ndarray, int]]:
        """The chunks of bytes ``start..stop`` of a tensor (one of ``pieces``), each with the CRC32C of the
        piece's bytes so far: after the last, the piece's CRC for ``check_pieces``. May run on any thread."""
        import numpy as np

        entry = self._lookup(name)
        label = repr(name)
        np_dtype = self._numeric_dtype(name, entry, label)
        _, path = self._locate(name, entry, label)
        step = _chunk_step(chunk_bytes, np_dtype.itemsize)
        crc = 0
        for raw in self._pread_chunks(name, entry, label, path, entry.offset + start, entry.offset + stop, step):
            crc = google_crc32c.extend(crc, raw)
            yield self._to_native(np.frombuffer(raw, dtype=np_dtype)), crc

    def check_pieces(self, name: str, crcs: Sequence[tuple[int, int]]) -> None:
        """Check the CRC32C of a tensor read in pieces: ``(crc, length)`` of each, in order.

        Raises:
            TensorReadError: the checksum of the whole does not match (the message ``iter_chunks`` gives).
        """
        entry = self._lookup(name)
        crc = 0
        for piece_crc, length in crcs:
            crc = combine_crc(crc, piece_crc, length)
        self._check_crc(name, entry, repr(name), self._shard_path(entry.shard_id), crc)

    def _pread_chunks(
        self, name: str, entry: BundleEntry, label: str, path: str, start: int, stop: int, step: int
    ) -> Iterator[bytes]:
        """File bytes ``start..stop`` read with ``pread``, ``step`` bytes at a time (see ``_iter_pread``)."""
        with open(path, "rb", buffering=0) as f:
            fd = f.fileno()
            for a in range(start, stop, step):
                want = min(step, stop - a)
                raw = os.pread(fd, want, a)
                if len(raw) != want:
                    raise _cut_short(name, label, path, a + len(raw), entry.offset + entry.size)
                yield raw

    def _iter_pread(
        self, name: str, entry: BundleEntry, label: str, np_dtype: np.dtype, path: str, step: int
    ) -> Iterator[np.ndarray]:
        """A tensor of several chunks, read with ``pread``: the kernel copies each chunk from the page cache,
        where a copy out of the memory map first faults in every page of it (a third of the time of a 2 GiB
        statistics pass). The file is opened per tensor, so a checkpoint of thousands of shards holds no
        descriptors open; it was mapped whole already (``_locate``), so its size is known to cover the bytes,
        and a file cut short since is reported as such."""
        import numpy as np

        crc = 0
        for raw in self._pread_chunks(name, entry, label, path, entry.offset, entry.offset + entry.size, step):
            crc = google_crc32c.extend(crc, raw)
            yield self._to_native(np.frombuffer(raw, dtype=np_dtype))
        self._check_crc(name, entry, label, path, crc)

    @staticmethod
    def _iter_whole(values: np.ndarray, chunk_bytes: int) -> Iterator[np.ndarray]:
        flat = values.reshape(-1)
        if flat.dtype != object:
            step = max(1, chunk_bytes // flat.dtype.itemsize)
            for first in range(0, flat.size, step):
                yield flat[first : first + step]
            return
        first = size = 0
        for i, item in enumerate(flat):
            if size and size + len(item) > chunk_bytes:
                yield flat[first:i]
                first, size = i, 0
            size += len(item)
        if first < flat.size:
            yield flat[first:]

    # ------------------------------------------------------------------ strings ("String tensors")

    def _read_strings(self, name: str, entry: BundleEntry, label: str) -> np.ndarray:
        import numpy as np

        values = self._read_string_values(name, entry, label)  # the count is checked against the bytes first
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(entry.shape)

    def _read_string_values(self, name: str, entry: BundleEntry, label: str) -> list[bytes]:
        """The elements of a stored string tensor, in order, after its checksums are checked (numpy is imported
        only for many strings: the object graph is read without it)."""
        buf, path = self._locate(name, entry, label)
        count = _num_elements(entry.shape)
        start, end = entry.offset, entry.offset + entry.size

        def unreadable(what: str) -> TensorReadError:
            return TensorReadError("tensor-unreadable", name, f"string tensor {label} in {path}: {what}")

        # Each element needs at least one length byte, plus the 4-byte length checksum:
        # this also bounds `count` by real file bytes before anything is allocated.
        if entry.size < count + 4:
            raise unreadable(f"the index gives {entry.size} bytes for {count} strings, at least {count + 4} needed")
        try:
            lengths, lengths_end = _decode_lengths(buf, start, end - 4, count)
        except ValueError as e:
            raise unreadable(f"bad string lengths ({e})") from e
        data_start = lengths_end + 4
        total = sum(lengths) if isinstance(lengths, list) else int(lengths.sum(dtype=lengths.dtype))
        if data_start + total != end:
            raise unreadable(
                f"the string lengths add up to {total} bytes but the entry holds {end - data_start} after them"
            )
        byte_order = ">" if self.big_endian else "<"
        fixed = _fixed_width_lengths(lengths, byte_order)
        length_crc = google_crc32c.value(fixed)
        stored_raw = buf[lengths_end:data_start]
        stored = struct.unpack(byte_order + "I", stored_raw)[0]
        if mask_crc(length_crc) != stored:
            raise TensorReadError(
                "checksum-mismatch",
                name,
                f"string tensor {label} in {path}: length checksum mismatch (stored {stored:#010x}, "
                f"computed {mask_crc(length_crc):#010x}); the data file is damaged",
            )
        crc = google_crc32c.extend(length_crc, stored_raw)
        for a in range(data_start, end, _CRC_STEP):
            crc = google_crc32c.extend(crc, buf[a : min(a + _CRC_STEP, end)])
        self._check_crc(name, entry, label, path, crc)
        data = buf[data_start:end]
        _release(buf, start, end)  # copied out: an object graph's 8 MB need not stay resident as well
        bounds = [0] * (count + 1)
        acc = 0
        for i, n in enumerate(lengths if isinstance(lengths, list) else lengths.tolist()):
            acc += n
            bounds[i + 1] = acc
        return [data[bounds[i] : bounds[i + 1]] for i in range(count)]

    # ------------------------------------------------------------------ partitioned ("Partitioned tensors")

    def _piece_keys(self, name: str, entry: BundleEntry) -> list[bytes | None]:
        """The index key of each stored piece (None when it has no entry)."""
        keys: list[bytes | None] = []
        for extents in entry.slices:
            key = encode_slice_key(name, extents)
            if key not in self._slice_entries and len(extents) == len(entry.shape):
                # Writers spell a whole dimension either as "no length" or as
                # (0, dim); try the other spelling before giving up.
                alt = [
                    (s, None) if (s == 0 and ln == d) else ((0, d) if ln is None else (s, ln))
                    for (s, ln), d in zip(extents, entry.shape)
                ]
                alt_key = encode_slice_key(name, alt)
                key = alt_key if alt_key in self._slice_entries else key
            keys.append(key if key in self._slice_entries else None)
        return keys

    def _pieces(self, name: str, entry: BundleEntry) -> list[_Piece]:
        """Validate a partitioned tensor's pieces against the index and data files."""
        shape = entry.shape
        pieces = []
        covered = 0
        for extents, key in zip(entry.slices, self._piece_keys(name, entry)):
            bounds = []
            for (start, length), dim in zip(extents, shape):
                stop = dim if length is None else start + length
                bounds.append((start, stop))
            label = f"{name!r} (piece [{', '.join(f'{a}:{b}' for a, b in bounds)}])"
            if len(extents) != len(shape) or any(a > b or b > d for (a, b), d in zip(bounds, shape)):
                raise TensorReadError(
                    "tensor-unreadable",
                    name,
                    f"tensor {label}: slice {list(extents)} does not fit the shape {list(shape)} (corrupt index)",
                )
            if key is None:
                raise TensorReadError(
                    "tensor-unreadable", name, f"tensor {label}: this piece has no entry in {self.index_path}"
                )
            piece = self._slice_entries[key]
            piece_shape = tuple(b - a for a, b in bounds)
            if piece.dtype != entry.dtype or piece.shape != piece_shape or piece.slices:
                raise TensorReadError(
                    "tensor-unreadable",
                    name,
                    f"tensor {label}: piece entry has dtype {_dtype_name(piece.dtype)} shape {list(piece.shape)}, "
                    f"expected {_dtype_name(entry.dtype)} {list(piece_shape)} (corrupt index)",
                )
            self._locate(name, piece, label)  # all bytes present before we allocate
            if piece.dtype != _DT_STRING:
                self._numeric_dtype(name, piece, label)
            covered += _num_elements(piece_shape)
            pieces.append(_Piece(tuple(slice(a, b) for a, b in bounds), piece, label))
        total = _num_elements(shape)
        if covered != total or not _no_overlap(pieces, shape):
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"tensor {name!r}: its {len(pieces)} stored pieces do not tile the shape {list(shape)} "
                f"exactly ({covered} of {total} elements; corrupt index)",
            )
        return pieces

    def _read_partitioned(self, name: str, entry: BundleEntry) -> np.ndarray:
        import numpy as np

        pieces = self._pieces(name, entry)
        if entry.dtype == _DT_STRING:
            full = np.full(entry.shape, b"", dtype=object)
        else:
            dt = _DTYPES[entry.dtype]  # validated by _pieces
            full = np.zeros(entry.shape, dtype=dt.np_dtype)
        for piece in pieces:
            full[piece.region] = self._read_stored(name, piece.entry, piece.label)
        return full

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the data files' memory maps.

        Arrays returned by :meth:`read` are views of these maps; a map still
        viewed stays valid and is unmapped when the last view is freed.
        """
        for buf in self._buffers.values():
            if isinstance(buf, mmap.mmap):
                try:
                    buf.close()
                except BufferError:
                    pass  # exported to live arrays: freed with them
        self._buffers.clear()
        self._closed = True

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BundleReader({self.prefix!r}, tensors={len(self._entries)}, shards={self.num_shards})"


# ----------------------------------------------------------------------- helpers


def _no_overlap(pieces: Sequence[_Piece], shape: tuple[int, ...]) -> bool:
    """Whether no two pieces share an element (they cover as many elements as the shape has: so they tile it).

    Pairwise for a few pieces; sorted along the one partitioned axis, as TensorFlow's partitioners cut;
    otherwise against a mask of the elements (as many as the pieces store, whose bytes are their own).
    """
    import numpy as np

    if len(pieces) <= _PAIRWISE_PIECES:
        return not _any_overlap(pieces)
    varying = {ax for p in pieces for ax, (r, d) in enumerate(zip(p.region, shape)) if (r.start, r.stop) != (0, d)}
    if len(varying) == 1:
        ax = varying.pop()
        spans = sorted((p.region[ax].start, p.region[ax].stop) for p in pieces)
        return all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    mask = np.zeros(shape, dtype=bool)
    for p in pieces:
        if mask[p.region].any():
            return False
        mask[p.region] = True
    return True


def _any_overlap(pieces: Sequence[_Piece]) -> bool:
    for i in range(len(pieces)):
        ri = pieces[i].region
        for j in range(i + 1, len(pieces)):
            rj = pieces[j].region
            if all(a.start < b.stop and b.start < a.stop for a, b in zip(ri, rj)):
                return True
    return False


def _decode_lengths(buf: mmap.mmap | bytes, start: int, limit: int, count: int) -> tuple[list[int] | np.ndarray, int]:
    """Decode ``count`` varint string lengths from ``buf[start:limit]``.

    Returns:
        ``(lengths, position after the last varint)``; lengths is a list for
        few strings and a uint64 array for many.

    Raises:
        ValueError: a varint is truncated or longer than 9 bytes (no valid
            length needs more).
    """
    if count == 0:
        return [], start
    if count <= _SMALL_STRING_COUNT:
        out = []
        pos = start
        for _ in range(count):
            try:
                v, pos = read_varint(buf, pos, limit)  # type: ignore[arg-type]
            except WireFormatError as e:
                raise ValueError(str(e)) from e
            out.append(v)
        if any(v > limit - start for v in out):
            raise ValueError("a string length exceeds the tensor's size")
        return out, pos
    import numpy as np

    # Vectorised: a varint ends at each byte below 0x80.
    window = np.frombuffer(buf, dtype=np.uint8, count=min(limit - start, 10 * count), offset=start)
    ends = np.flatnonzero(window < 0x80)
    if ends.size < count:
        raise ValueError(f"only {ends.size} complete length varints for {count} strings")
    ends = ends[:count]
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    widths = ends - starts + 1
    widest = int(widths.max())
    if widest > 9:
        raise ValueError(f"a length varint of {widest} bytes")
    lengths = np.zeros(count, dtype=np.uint64)
    for k in range(widest):
        sel = np.flatnonzero(widths > k)
        lengths[sel] |= (window[starts[sel] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    if int(lengths.max()) > limit - start:
        raise ValueError("a string length exceeds the tensor's size")
    return lengths, start + int(ends[-1]) + 1


def _fixed_width_lengths(lengths: list[int] | np.ndarray, byte_order: str) -> bytes:
    """The lengths as the writer checksummed them: u32 each, u64 if above 4 GiB."""
    if not isinstance(lengths, list):  # a uint64 array (many strings)
        if lengths.size == 0 or int(lengths.max()) <= 0xFFFFFFFF:
            return lengths.astype(byte_order + "u4").tobytes()
        lengths = lengths.tolist()
    return b"".join(struct.pack(byte_order + ("I" if v <= 0xFFFFFFFF else "Q"), v) for v in lengths)
