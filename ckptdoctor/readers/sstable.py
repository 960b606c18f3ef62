"""Read the immutable sorted string table (SSTable) of a checkpoint ``.index``.

The layout (``docs/checkpoint-format.md``, "SSTable layout of the index file") is LevelDB's::

    [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer]

The 48-byte footer ends with a magic number and starts with two block handles
(``varint64 offset, varint64 size``): the metaindex (always empty in TF, never
read) and the index block, whose values are the handles of the data blocks.
Every block is followed by a 5-byte trailer: a compression type byte (0 none,
1 Snappy) and the masked CRC32C of the contents plus that type byte.

A block is a run of prefix-compressed entries (``shared``, ``non_shared``,
``value_length`` varints, the key suffix, the value) followed by a ``fixed32``
restart array and its ``fixed32`` length. We walk the entries sequentially, so
the restart array is only validated, not used.

Everything read from the file is checked against the file's real size before
use; any inconsistency raises ``CorruptCheckpointError`` with a one-line
message naming the file and what is wrong. Work stays bounded by the file's
bytes: data blocks must follow each other without overlapping (an index
pointing many times at one block would make it parsed many times), and the keys
the prefix compression rebuilds may total at most ``MAX_KEY_EXPANSION`` times the
file's size (each entry may share its whole predecessor, so a few bytes per
entry could otherwise rebuild quadratically many).
"""

from __future__ import annotations

import functools
import operator
import os
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import google_crc32c

from ckptdoctor.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError
from ckptdoctor.readers.protowire import WireFormatError, _wire, read_varint

__all__ = [
    "TABLE_MAGIC",
    "FOOTER_SIZE",
    "BLOCK_TRAILER_SIZE",
    "BlockHandle",
    "mask_crc",
    "unmask_crc",
    "combine_crc",
    "read_footer",
    "read_block",
    "iter_block",
    "read_table",
    "read_table_file",
    "parse_table",
    "iter_table",
    "snappy_decompress",
]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
#: The rebuilt keys of a table may total at most this many times the file's size (plus one MiB): real
#: tables stay below 20 (a key shares most of its predecessor but each entry also holds its value).
MAX_KEY_EXPANSION = 64
_MAGIC_BYTES = struct.pack("<Q", TABLE_MAGIC)
_NO_COMPRESSION, _SNAPPY = 0, 1
_CRC_MASK_DELTA = 0xA282EAD8
_unpack_u32 = struct.Struct("<I").unpack_from


def mask_crc(crc: int) -> int:
    """Mask a CRC32C the way TensorFlow stores it (rotate right 15, add a constant).

    Masking keeps a CRC of data that itself contains CRCs from being trivially
    related to them (``crc32c.h``).
    """
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Invert :func:`mask_crc`."""
    rot = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


_CRC32C_POLY = 0x82F63B78  # the Castagnoli polynomial, bit-reversed (CRC-32C is computed LSB first)


def _multiply_mod_poly(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32C polynomial, both as bit-reversed polynomials over GF(2)."""
    product = 0
    bit = 1 << 31  # x^0
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1  # b * x
    return product


@functools.cache
def _x_pow_2n() -> tuple[int, ...]:
    """``x^(2^n)`` modulo the polynomial, for n = 0..63 (made on first use, not at every start)."""
    powers = [1 << 30]  # x^1
    for _ in range(63):
        powers.append(_multiply_mod_poly(powers[-1], powers[-1]))
    return tuple(powers)


def combine_crc(first: int, second: int, second_length: int) -> int:
    """The CRC32C of ``A + B`` from ``crc32c(A)``, ``crc32c(B)`` and ``len(B)``.

    ``crc(A + B) = crc(A) * x^(8 len(B)) + crc(B)`` over GF(2) modulo the polynomial (the initial
    and final inversions of the standard CRC cancel in that sum), so pieces of a tensor checksummed
    on different threads give the CRC of the whole, with ``log2(len(B))`` multiplications.
    """
    powers = _x_pow_2n()
    shift = 1 << 31  # x^0
    n, k = second_length, 3  # x^(8n) = product of x^(2^(k)) over the set bits of n, k from 3
    while n:
        if n & 1:
            shift = _multiply_mod_poly(powers[k], shift)  # k < 64: lengths below 2^61 bytes
        n >>= 1
        k += 1
    return _multiply_mod_poly(shift, first) ^ second


class BlockHandle(NamedTuple):
    """Where a block's contents lie in the file (trailer not included)."""

    offset: int
    size: int


def _corrupt(path: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"corrupt checkpoint index {path}: {what}")


def _decode_handle(buf: bytes, pos: int, end: int) -> tuple[BlockHandle, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return BlockHandle(offset, size), pos


def read_footer(data: bytes, path: str) -> tuple[BlockHandle, BlockHandle]:
    """Check the magic number and return the (metaindex, index) block handles.

    Raises:
        CorruptCheckpointError: the file is shorter than a footer, has the
            wrong magic number or undecodable handles.
    """
    if len(data) < FOOTER_SIZE:
        if not data:
            raise CorruptCheckpointError(
                f"{path} is empty (0 bytes), not a checkpoint index; the save that wrote it probably did not finish"
            )
        raise CorruptCheckpointError(
            f"{path} is {len(data)} bytes, shorter than the 48-byte footer of a checkpoint index (truncated file?)"
        )
    footer_start = len(data) - FOOTER_SIZE
    if data[-8:] != _MAGIC_BYTES:
        raise CorruptCheckpointError(
            f"{path} is not a TensorFlow checkpoint index: bad magic number "
            f"{data[-8:].hex()} (expected {_MAGIC_BYTES.hex()}); the file is truncated or of another kind"
        )
    try:
        # Handles may only use the first 40 bytes; the rest is padding + magic.
        meta, pos = _decode_handle(data, footer_start, footer_start + 40)
        index, _ = _decode_handle(data, pos, footer_start + 40)
    except WireFormatError as e:
        raise _corrupt(path, f"footer: bad block handle ({e})") from e
    return meta, index


def snappy_decompress(data: bytes) -> bytes:
    """Decompress one raw (unframed) Snappy buffer.

    Snappy is a varint of the uncompressed length followed by elements: a
    literal (tag low bits 00) or a back-reference copy (01, 10, 11 with 1-,
    2- or 4-byte offsets). Pure Python is fine here: index blocks are at most
    a few hundred KiB, and current TensorFlow never compresses them.

    Raises:
        ValueError: the buffer is not valid Snappy.
    """
    n = len(data)
    try:
        expected, pos = read_varint(data, 0, min(n, 5))
    except WireFormatError as e:
        raise ValueError(f"bad Snappy length header ({e})") from e
    # A 3-byte copy element expands to at most 64 bytes, so a valid buffer
    # can never claim more than ~22x its size; refuse before allocating.
    if expected > 22 * n + 64:
        raise ValueError(f"Snappy header claims {expected} bytes from {n} compressed bytes")
    out = bytearray()
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > n:
                    raise ValueError("truncated Snappy literal length")
                length = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > n:
                raise ValueError("Snappy literal runs past the end of the input")
            out += data[pos : pos + length]
            pos += length
        else:
            if kind == 1:
                if pos + 1 > n:
                    raise ValueError("truncated Snappy copy")
                length = ((tag >> 2) & 7) + 4
                offset = ((tag >> 5) << 8) | data[pos]
                pos += 1
            elif kind == 2:
                if pos + 2 > n:
                    raise ValueError("truncated Snappy copy")
                length = (tag >> 2) + 1
                offset = data[pos] | (data[pos + 1] << 8)
                pos += 2
            else:
                if pos + 4 > n:
                    raise ValueError("truncated Snappy copy")
                length = (tag >> 2) + 1
                offset = _unpack_u32(data, pos)[0]
                pos += 4
            if offset == 0 or offset > len(out):
                raise ValueError(f"Snappy copy offset {offset} outside the {len(out)} bytes produced so far")
            start = len(out) - offset
            if offset >= length:
                out += out[start : start + length]
            else:
                # Overlapping copy: the source repeats with period `offset`.
                pattern = bytes(out[start:])
                out += (pattern * (length // offset + 1))[:length]
        if len(out) > expected:
            raise ValueError(f"Snappy data decompresses to more than the {expected} bytes announced")
    if len(out) != expected:
        raise ValueError(f"Snappy data decompresses to {len(out)} bytes, header announced {expected}")
    return bytes(out)


def read_block(data: bytes, handle: BlockHandle, path: str, what: str, limit: int | None = None) -> bytes:
    """Return a block's contents after checking its trailer CRC (and un-Snappying).

    Args:
        data: the whole file.
        handle: the block's handle.
        path: file name for messages.
        what: which block, for messages ("index block", "data block 3").
        limit: blocks must end (trailer included) at or before this offset;
            defaults to the start of the footer.

    Raises:
        CorruptCheckpointError: the handle points outside the file, the CRC
            does not match or Snappy data is bad.
        UnsupportedFormatError: a compression type other than none or Snappy.
    """
    if limit is None:
        limit = len(data) - FOOTER_SIZE
    start, size = handle
    if start > limit or size > limit - start or start + size + BLOCK_TRAILER_SIZE > limit:
        raise _corrupt(path, f"{what} at offset {start} with {size} bytes lies outside the {limit}-byte table area")
    end = start + size
    contents = data[start:end]
    kind = data[end]
    stored = _unpack_u32(data, end + 1)[0]
    actual = mask_crc(google_crc32c.extend(google_crc32c.value(contents), data[end : end + 1]))
    if stored != actual:
        raise _corrupt(
            path, f"{what} at offset {start}: checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        )
    if kind == _NO_COMPRESSION:
        return contents
    if kind == _SNAPPY:
        try:
            return snappy_decompress(contents)
        except ValueError as e:
            raise _corrupt(path, f"{what} at offset {start}: bad Snappy data ({e})") from e
    # The CRC covers the type byte, so this is not damage: some other tool
    # wrote the table with a compression TensorFlow never uses.
    raise UnsupportedFormatError(
        f"{path}: {what} at offset {start} uses block compression type {kind}; "
        "only 0 (none) and 1 (Snappy), the types TensorFlow reads, are supported"
    )


def iter_block(block: bytes, path: str, what: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield the ``(key, value)`` entries of one block in stored order.

    Raises:
        CorruptCheckpointError: bad restart array, varints or lengths.
    """
    n = len(block)
    if n < 4:
        raise _corrupt(path, f"{what} is {n} bytes, too short for a restart count")
    num_restarts = _unpack_u32(block, n - 4)[0]
    if num_restarts > (n - 4) // 4:
        raise _corrupt(path, f"{what} claims {num_restarts} restart points in {n} bytes")
    if num_restarts == 0:
        return  # LevelDB treats such a block as empty
    limit = n - 4 * (num_restarts + 1)
    if _unpack_u32(block, limit)[0] != 0:
        raise _corrupt(path, f"{what}: first restart point is not at offset 0")
    pos = 0
    key = b""
    try:
        while pos < limit:
            # Fast path: all three header varints fit in one byte each.
            if pos + 3 <= limit and block[pos] < 0x80 and block[pos + 1] < 0x80 and block[pos + 2] < 0x80:
                shared, non_shared, value_len = block[pos], block[pos + 1], block[pos + 2]
                pos += 3
            else:
                shared, pos = read_varint(block, pos, limit)
                non_shared, pos = read_varint(block, pos, limit)
                value_len, pos = read_varint(block, pos, limit)
            if shared > len(key):
                raise _corrupt(path, f"{what}: entry at {pos} shares {shared} bytes with a {len(key)}-byte key")
            key_end = pos + non_shared
            value_end = key_end + value_len
            if value_end > limit:
                raise _corrupt(path, f"{what}: entry at {pos} runs past the end of the entries ({value_end} > {limit})")
            key = key[:shared] + block[pos:key_end] if shared else block[pos:key_end]
            yield key, block[key_end:value_end]
            pos = value_end
    except WireFormatError as e:
        raise _corrupt(path, f"{what}: bad entry header at offset {pos} ({e})") from e


def _block_items(block: bytes, path: str, what: str, key_budget: int) -> Iterable[tuple[bytes, bytes]]:
    """``iter_block``'s items: a list from the C decoder (``readers/_wire.c``) when the block passes every check
    and its keys total at most ``key_budget`` bytes, else ``iter_block`` itself (which raises where it must).

    The budget bounds what the list holds at once: the generator makes one key at a time.
    """
    if _wire is not None:
        items = _wire.block_entries(block, key_budget)
        if items is not None:
            return items
    return iter_block(block, path, what)


def parse_table(data: bytes, path: str) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an SSTable held in memory, in key order.

    Args:
        data: the whole file's bytes.
        path: file name for messages.

    Raises:
        CorruptCheckpointError: anything about the table is inconsistent,
            including keys that are not strictly increasing.
    """
    return list(iter_table(data, path))


def iter_table(data: bytes, path: str) -> Iterator[tuple[bytes, bytes]]:
    """``parse_table``'s items one at a time (a reader keeps its own form of them, not a list of 100,000 pairs).

    Everything ``parse_table`` checks is checked, in the same order: keys out of order are
    reported after the last block was read, as ``parse_table`` reports them, so a caller that
    defers its own errors on the items to the end gives the same first error.

    Raises:
        CorruptCheckpointError: as ``parse_table``, the order error once the items were all yielded.
    """
    for items in iter_table_blocks(data, path):
        yield from items


def iter_table_blocks(data: bytes, path: str) -> Iterator[list[tuple[bytes, bytes]]]:
    """``iter_table``'s items a data block at a time, each block's a list, checked as a whole.

    The checks of ``iter_table``, in the same order, made a block at a time: its keys' total against
    the key budget, their order by one comparison of neighbours in C (``map(bytes.__lt__, ...)``). A block
    that fails a check raises before any of its items is yielded.

    Raises:
        CorruptCheckpointError: as ``iter_table``.
    """
    _, index_handle = read_footer(data, path)
    index_block = read_block(data, index_handle, path, "index block")
    previous: bytes | None = None
    disorder: tuple[bytes, bytes] | None = None  # the first key not above its predecessor, and that predecessor
    key_budget = MAX_KEY_EXPANSION * len(data) + (1 << 20)
    next_free = 0  # where the next data block may start: blocks follow each other (spec 3.1)
    index_items = _block_items(index_block, path, "index block", 16 * len(index_block) + (1 << 20))
    for i, (_sep, handle_bytes) in enumerate(index_items):
        what = f"data block {i}"
        try:
            handle, _ = _decode_handle(handle_bytes, 0, len(handle_bytes))
        except WireFormatError as e:
            raise _corrupt(path, f"index entry {i}: bad block handle ({e})") from e
        if handle.offset < next_free:
            raise _corrupt(
                path, f"{what} at offset {handle.offset} overlaps the previous block, which ends at {next_free}"
            )
        # Data blocks precede the index block (spec 3.1).
        block = read_block(data, handle, path, what, limit=index_handle.offset)
        next_free = handle.offset + handle.size + BLOCK_TRAILER_SIZE
        items = _block_items(block, path, what, key_budget)
        if items.__class__ is not list:  # iter_block's: its keys counted as they come (they may not fit)
            items = _within_budget(items, key_budget, path)
        keys = list(map(_KEY, items))
        key_budget -= sum(map(len, keys))
        if key_budget < 0:
            raise _over_budget(path)
        if keys and disorder is None:
            if previous is not None and keys[0] <= previous:
                disorder = (keys[0], previous)
            elif not all(map(bytes.__lt__, keys, keys[1:])):
                j = next(j for j in range(len(keys) - 1) if keys[j + 1] <= keys[j])
                disorder = (keys[j + 1], keys[j])
        if keys:
            previous = keys[-1]
        yield items
    if disorder is not None:
        raise _corrupt(path, f"keys out of order ({disorder[0]!r} after {disorder[1]!r})")


_KEY = operator.itemgetter(0)


def _within_budget(items: Iterable[tuple[bytes, bytes]], budget: int, path: str) -> list[tuple[bytes, bytes]]:
    """The items, in a list that stops growing once their keys exceed ``budget`` bytes (then raises)."""
    out = []
    for key, value in items:
        budget -= len(key)
        if budget < 0:
            raise _over_budget(path)
        out.append((key, value))
    return out


def _over_budget(path: str) -> CorruptCheckpointError:
    return _corrupt(
        path,
        f"its keys expand to more than {MAX_KEY_EXPANSION} times the file's size "
        "(entries sharing ever longer prefixes): not a table TensorFlow wrote",
    )


def read_table(path: str) -> list[tuple[bytes, bytes]]:
    """Read an SSTable file and return every ``(key, value)`` in key order.

    Raises:
        CheckpointNotFoundError: the file does not exist or cannot be opened.
        CorruptCheckpointError: it is not a valid SSTable.
    """
    return parse_table(read_table_file(path), os.fspath(path))


def read_table_file(path: str) -> bytes:
    """The bytes of an SSTable file, after a look at its magic number (for ``parse_table``/``iter_table``).

    Raises:
        CheckpointNotFoundError: the file does not exist or cannot be opened.
        CorruptCheckpointError: its last 8 bytes are not the magic number.
    """
    try:
        with open(path, "rb") as f:
            # The footer first: a file of another kind (or a sparse one of zeros) is told apart
            # from its last 48 bytes, without reading all of it.
            size = os.fstat(f.fileno()).st_size
            if size >= FOOTER_SIZE:
                f.seek(size - 8)
                if f.read(8) != _MAGIC_BYTES:
                    f.seek(size - FOOTER_SIZE)
                    read_footer(f.read(FOOTER_SIZE), os.fspath(path))  # raises, naming the bad magic
                f.seek(0)
            data = f.read()
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"{path} does not exist") from e
    except IsADirectoryError as e:
        raise CheckpointNotFoundError(f"{path} is a directory, expected a checkpoint index file") from e
    except OSError as e:
        raise CheckpointNotFoundError(f"cannot read {path}: {e.strerror or e}") from e
    return data
