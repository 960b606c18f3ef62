"""The few HDF5 structures ckptdoctor reads with its own code before libhdf5 trusts them.

libhdf5 (1.14.6, as h5py ships it) trusts four things a file declares more than is safe:

* a global heap collection (``GCOL``, where variable-length values live): it walks the
  collection's objects by their stored sizes, so a free-space object of size 0 makes it loop
  forever, and an object larger than what is left makes it read past the collection;
* the length of each variable-length value (a 32-bit count in the value's descriptor): it
  allocates and zeroes that many elements for the value before it looks at the heap, so a few
  bytes of file make it claim gigabytes;
* the free list of a local heap (``HEAP``, where an old-style group keeps its names): it follows
  the list allocating a node per block, so a block naming itself next takes memory without end;
* the size of the superblock's driver information block: it allocates it before it reads the
  block, up to 4 GiB, even where the block runs past the end of the file.

(The last two were found by fuzzing.) ``RawHDF5`` checks the driver block, walks every collection
and every local heap's free list as libhdf5 would (``problem``, computed when it is made), and
before a variable-length attribute or dataset is read (``attribute_problem``, ``dataset_problem``)
finds its descriptors in the file, in the attribute message of the object header or in the
dataset's storage, and requires each to name an existing heap object of exactly its size (what
libhdf5 itself requires, after allocating). What cannot be checked so (attributes in dense storage,
shared datatypes, filtered variable-length data) is refused, not read: Keras never writes it.

The layouts are the HDF5 file format specification's: superblock versions 0-3, object headers
versions 1 and 2 with their continuation chunks, attribute, datatype, dataspace and layout
messages, global heap collections, local heaps, descriptors ``length(4) collection address(offsets)
index(4)``.
Every offset read from the file is checked against the buffer; chunks are followed at most once
each, datatypes nest at most 16 deep, and descriptors are counted against the file's size.
"""

from __future__ import annotations

import math
import mmap
import os
import re
from collections.abc import Iterator

__all__ = ["RawHDF5", "HDF5_SIGNATURE"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_HEAP_SIGNATURE = b"GCOL"
_LOCAL_HEAP_SIGNATURE = b"HEAP\0"  # with version 0, the only one libhdf5 decodes
#: The signature searched with ``re``, which scans a large weights file faster than ``mmap.find`` (the
#: listing of BENCHMARKS.md D5 reads one); the two find the same places.
_HEAP_SEARCH = re.compile(re.escape(_HEAP_SIGNATURE)).search
#: One search per signature: a pattern of both alternatives scans 15 times slower than a literal.
_LOCAL_HEAP_SEARCH = re.compile(re.escape(_LOCAL_HEAP_SIGNATURE)).search
_FREE_NULL = 1  # the end of a local heap's free list
_ADDRESSES_AT = {0: 24, 1: 28}  # where a version 0 or 1 superblock's addresses start (the base address first)
_SCAN_STEP = 16 << 20
_MAX_CHUNKS = 4096  # object header chunks followed per object
_MAX_TYPE_DEPTH = 16
_MSG_DATATYPE, _MSG_LAYOUT, _MSG_ATTRIBUTE, _MSG_CONTINUATION, _MSG_ATTRIBUTE_INFO = 0x03, 0x08, 0x0C, 0x10, 0x15
_FIXED_PROPERTIES = {0: 4, 1: 12, 2: 2, 3: 0, 4: 4, 7: 0}  # class -> bytes of properties after the 8-byte header


class _Bad(Exception):
    """A structure that does not parse: the caller says what could not be checked."""


class RawHDF5:
    """An HDF5 file's bytes (``buf[start:end]``: a file, or a member inside a zip archive), for the checks above.

    Attributes:
        problem: why libhdf5 would hang or read out of bounds on one of the heaps, or None.
        heaps: collection address -> {object index: object size}.
    """

    def __init__(self, buf, start: int = 0, end: int | None = None, owned=()):
        self.buf, self.start = buf, start
        self.end = len(buf) if end is None else end
        self._owned = list(owned)
        self.offsets, self.lengths, self.base = self._superblock()
        self.heaps: dict[int, dict[int, int]] = {}
        self.problem = self._driver_info_problem() or self._scan_heaps()

    @classmethod
    def open(cls, file, start: int = 0, end: int | None = None) -> RawHDF5:
        """Map ``file`` (a path or a real file object) read-only; ``close()`` unmaps it."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as f:
                return cls._map(f, start, end)
        return cls._map(file, start, end)

    @classmethod
    def _map(cls, f, start: int, end: int | None) -> RawHDF5:
        if os.fstat(f.fileno()).st_size == 0:
            return cls(b"", 0, 0)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mm, start, end, owned=[mm])

    def close(self) -> None:
        for m in self._owned:
            m.close()
        self._owned.clear()

    def _u(self, pos: int, size: int, end: int | None = None) -> int:
        if pos < self.start or pos + size > (self.end if end is None else end):
            raise _Bad(f"a field at offset {pos - self.start} runs past its structure")
        return int.from_bytes(self.buf[pos : pos + size], "little")

    # ------------------------------------------------------------------ superblock and heaps

    def _superblock(self) -> tuple[int, int, int | None]:
        """(size of offsets, size of lengths, base address; None when the superblock is not at the start)."""
        b, s = self.buf, self.start
        if self.end - s < 40 or b[s : s + 8] != HDF5_SIGNATURE:
            return 8, 8, None
        version = b[s + 8]
        if version in (0, 1):
            offsets, lengths, at = b[s + 13], b[s + 14], s + _ADDRESSES_AT[version]
        else:
            offsets, lengths, at = b[s + 9], b[s + 10], s + 12
        if offsets not in (2, 4, 8) or lengths not in (2, 4, 8):
            return 8, 8, None
        try:
            return offsets, lengths, self._u(at, offsets)
        except _Bad:
            return offsets, lengths, None

    def _driver_info_problem(self) -> str | None:
        """Why the driver information block of a version 0 or 1 superblock would make libhdf5 allocate what the
        file does not hold, or None. libhdf5 reads the block's 4-byte size, allocates that much and only then
        finds that the block runs past the end of the file: a few bytes of file claim up to 4 GiB. It reads
        what lies past the end as zeros (a 41-byte file's driver address ran past its end: 4 GB), and so does this.
        """
        b, s, width = self.buf, self.start, self.offsets
        if self.base is None or b[s + 8] not in (0, 1):
            return None
        field = s + _ADDRESSES_AT[b[s + 8]] + 3 * width  # after the base, free-space and end-of-file addresses
        address = self._padded(field, width)
        if address == (1 << 8 * width) - 1:
            return None  # undefined: the file has no driver information block (what h5py writes)
        size = self._padded(s + address + 4, 4)  # the block, where the superblock starts counting
        if size and s + address + 16 + size > self.end:
            return (
                f"its superblock declares a driver information block of {size} bytes at offset {address}, past the "
                "end of the file: libhdf5 would allocate them before reading"
            )
        return None

    def _padded(self, pos: int, size: int) -> int:
        """The little-endian integer at ``pos``, the bytes past the end read as zeros (as libhdf5 reads them)."""
        return int.from_bytes(bytes(self.buf[pos : min(pos + size, self.end)]).ljust(size, b"\0"), "little")

    def _scan_heaps(self) -> str | None:
        b, length = self.buf, self.lengths
        header = 8 + length
        # Collections never overlap, so walking them visits each 16 bytes at most once; bytes spelling
        # collection headers inside one another would make walks overlap: their total is bounded.
        self._steps = (self.end - self.start) // 8 + 65536
        for block in range(self.start, self.end, _SCAN_STEP):
            stop = min(self.end, block + _SCAN_STEP + len(_HEAP_SIGNATURE) - 1)
            found = _LOCAL_HEAP_SEARCH(b, block, stop)
            while found is not None:
                problem = self._walk_free_list(found.start())
                if problem:
                    return f"its local heap at offset {found.start() - self.start} {problem}"
                found = _LOCAL_HEAP_SEARCH(b, found.start() + 1, stop)
            found = _HEAP_SEARCH(b, block, stop)
            while found is not None:
                pos = found.start()
                if pos + header <= self.end and b[pos + 4] == 1 and b[pos + 5 : pos + 8] == b"\0\0\0":
                    size = int.from_bytes(b[pos + 8 : pos + 8 + length], "little")
                    if header <= size <= self.end - pos:
                        objects: dict[int, int] = {}
                        problem = self._walk_heap(pos, pos + size, objects)
                        if problem:
                            return f"its global heap at offset {pos - self.start} {problem}"
                        self.heaps[pos - self.start - (self.base or 0)] = objects
                found = _HEAP_SEARCH(b, pos + 1, stop)
            _let_go(b, block, min(self.end, block + _SCAN_STEP))
        return None

    def _walk_free_list(self, pos: int) -> str | None:
        """Why libhdf5 would never finish decoding the free list of the local heap (a group's names) at ``pos``, or
        None. It follows the list (each block: the next block's offset, its own size) until the end marker,
        allocating a node per block and checking only that each lies inside the heap, so a list returning to a
        block it passed (a block naming itself next, found by fuzzing) takes memory until the process dies."""
        length = self.lengths
        size, free = self._padded(pos + 8, length), self._padded(pos + 8 + length, length)
        data = self.start + self._padded(pos + 8 + 2 * length, self.offsets)  # from the superblock, as libhdf5 counts
        seen: set[int] = set()
        while free != _FREE_NULL and free < size:  # past the heap's end, libhdf5 stops with an error
            if free in seen:
                return f"has a free list that returns to offset {free} (libhdf5 would allocate without end decoding it)"
            seen.add(free)
            self._steps -= 1
            if self._steps < 0:
                return "has a free list longer than the file can hold"
            following = self._padded(data + free, length)
            if following == 0 or free + self._padded(data + free + length, length) > size:
                return None  # libhdf5 stops with an error
            free = following
        return None

    def _walk_heap(self, first: int, last: int, objects: dict[int, int]) -> str | None:
        b, length = self.buf, self.lengths
        objhdr = 8 + length
        p = first + 8 + length
        while p < last:
            if p + objhdr > last:
                return None  # a tail too small for an object header is free space
            index = int.from_bytes(b[p : p + 2], "little")
            size = int.from_bytes(b[p + 8 : p + 8 + length], "little")
            need = objhdr + (size + 7) // 8 * 8 if index > 0 else size
            if need == 0:
                return "holds a free-space object of size 0 (libhdf5 would loop forever decoding it)"
            if need > last - p:
                return f"holds an object of {size} bytes with {last - p} left in it (libhdf5 would read past it)"
            if index > 0:
                objects[index] = size
            p += need
            self._steps -= 1
            if self._steps < 0:
                return "overlaps other collections (more heap objects than the file can hold)"
        return None

    # ------------------------------------------------------------------ the checks

    def attribute_problem(self, obj, name: str) -> str | None:
        """Why reading attribute ``name`` of the h5py object ``obj`` could make libhdf5 allocate what the file
        does not hold, or None (also None when the attribute has no variable-length part)."""
        import h5py

        if not _has_vlen(obj.attrs.get_id(name).get_type()):
            return None
        what = f"attribute {name!r}"
        try:
            address = h5py.h5o.get_info(obj.id).addr
            found = None
            for mtype, a, z in self._messages(self._at(address)):
                if mtype == _MSG_ATTRIBUTE_INFO and self._dense_heap(a, z):
                    return f"{what} may be in dense storage (a fractal heap), which ckptdoctor does not check"
                if mtype == _MSG_ATTRIBUTE:
                    parsed = self._attribute(a, z)
                    if parsed[0] == name:
                        found = parsed
            if found is None:
                return f"{what} is not in its object's header, where ckptdoctor checks it"
            _name, (size, slots), count, data = found
            return self._descriptors(data, count, size, slots, what)
        except _Bad as e:
            return f"{what} cannot be checked ({e})"

    def dataset_problem(self, ds, what: str) -> str | None:
        """The same for the values of dataset ``ds`` (contiguous, compact or unfiltered chunked storage)."""
        import h5py

        if not _has_vlen(ds.id.get_type()):
            return None
        try:
            dtype = layout = None
            for mtype, a, z in self._messages(self._at(h5py.h5o.get_info(ds.id).addr)):
                if mtype == _MSG_DATATYPE:
                    dtype = self._datatype(a, z, 0)
                elif mtype == _MSG_LAYOUT:
                    layout = (a, z)
            if dtype is None or layout is None:
                return f"{what}: its datatype or layout is not where ckptdoctor checks them"
            size, slots = dtype[0], dtype[2]
            plist = ds.id.get_create_plist()
            kind = plist.get_layout()
            count = math.prod(int(d) for d in ds.shape or ())
            if kind == h5py.h5d.COMPACT:
                return self._descriptors(self._compact_data(*layout), count, size, slots, what)
            if kind == h5py.h5d.CONTIGUOUS:
                offset = ds.id.get_offset()
                return None if offset is None else self._descriptors(self._at(offset), count, size, slots, what)
            if kind == h5py.h5d.CHUNKED and plist.get_nfilters() == 0:
                per_chunk = math.prod(int(c) for c in plist.get_chunk())
                chunks: list = []
                ds.id.chunk_iter(chunks.append)  # one pass over the chunk index (get_chunk_info(i) is O(i))
                for info in chunks:
                    if info.size < per_chunk * size:
                        return f"{what}: a chunk of {info.size} bytes holds fewer than its {per_chunk} values"
                    problem = self._descriptors(self._at(info.byte_offset), per_chunk, size, slots, what)
                    if problem:
                        return problem
                return None
            return f"{what}: variable-length values behind filters cannot be checked before libhdf5 reads them"
        except _Bad as e:
            return f"{what} cannot be checked ({e})"

    def _at(self, address: int) -> int:
        if self.base is None:
            raise _Bad("the file's superblock is not where ckptdoctor reads it")
        return self.start + self.base + address

    def _descriptors(self, pos: int, count: int, size: int, slots: list, what: str) -> str | None:
        """Check the descriptors of ``count`` elements of ``size`` bytes at ``pos`` (``slots``: their places)."""
        step = 8 + self.offsets
        if count < 0 or pos < self.start or pos + count * size > self.end or count * len(slots) * step > self.end:
            return f"{what}: its {count} values do not fit the file"
        for element in range(count):
            for offset, base_size in slots:
                q = pos + element * size + offset
                length = self._u(q, 4)
                if length == 0:
                    continue  # an empty value reads nothing
                address = self._u(q + 4, self.offsets)
                index = self._u(q + 4 + self.offsets, 4)
                stored = self.heaps.get(address, {}).get(index)
                if stored is None:
                    return f"{what}: a value points at no global heap object (collection {address}, object {index})"
                if length * base_size != stored:
                    return (
                        f"{what}: a value declares {length * base_size} bytes but its global heap object "
                        f"holds {stored} (libhdf5 would allocate what it declares)"
                    )
        return None

    # ------------------------------------------------------------------ object headers

    def _messages(self, pos: int) -> Iterator[tuple[int, int, int]]:
        """``(type, start, end)`` of each message of the object header at ``pos``, continuations followed."""
        v2 = self.buf[pos : pos + 4] == b"OHDR"
        if v2:
            flags = self._u(pos + 5, 1)
            p = pos + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            first = (p + width, p + width + self._u(p, width))
            header = 4 + (2 if flags & 0x04 else 0)
        else:
            if self._u(pos, 1) != 1:
                raise _Bad(f"no object header at offset {pos - self.start}")
            first, header = (pos + 16, pos + 16 + self._u(pos + 8, 4)), 8
        chunks, seen = [first], set[tuple[int, int]]()
        while chunks:
            a, z = chunks.pop()
            if (a, z) in seen or len(seen) >= _MAX_CHUNKS or z > self.end or a < self.start:
                raise _Bad("object header chunks run past the file or repeat")
            seen.add((a, z))
            q = a
            while q + header <= z:
                mtype = self._u(q, 1 if v2 else 2)
                msize = self._u(q + 1, 2) if v2 else self._u(q + 2, 2)
                data, q = q + header, q + header + msize
                if q > z:
                    raise _Bad("an object header message runs past its chunk")
                if mtype != _MSG_CONTINUATION:
                    yield mtype, data, q
                    continue
                start = self._at(self._u(data, self.offsets))
                stop = start + self._u(data + self.offsets, self.lengths)
                if v2:
                    if self.buf[start : start + 4] != b"OCHK":
                        raise _Bad("a continuation chunk without its OCHK signature")
                    start, stop = start + 4, stop - 4  # the signature before, the checksum after
                chunks.append((start, stop))

    def _dense_heap(self, a: int, z: int) -> bool:
        """Whether an attribute info message names a fractal heap (attributes in dense storage)."""
        flags = self._u(a + 1, 1, z)
        heap = self._u(a + 2 + (2 if flags & 1 else 0), self.offsets, z)
        return heap != (1 << (8 * self.offsets)) - 1

    def _attribute(self, a: int, z: int) -> tuple[str, tuple[int, list], int, int]:
        """``(name, (element size, descriptor slots), element count, data start)`` of an attribute message."""
        version, flags = self._u(a, 1, z), self._u(a + 1, 1, z)
        name_size, dt_size, ds_size = self._u(a + 2, 2, z), self._u(a + 4, 2, z), self._u(a + 6, 2, z)
        if version == 1:
            pad = lambda n: (n + 7) // 8 * 8  # noqa: E731
            p = a + 8
            dt, ds = p + pad(name_size), p + pad(name_size) + pad(dt_size)
            data = ds + pad(ds_size)
        elif version in (2, 3):
            if flags & 0x3:
                raise _Bad("its datatype or dataspace is shared")
            p = a + 8 + (1 if version == 3 else 0)
            dt, ds = p + name_size, p + name_size + dt_size
            data = ds + ds_size
        else:
            raise _Bad(f"attribute message version {version}")
        if data > z:
            raise _Bad("the attribute message runs past its header")
        name = bytes(self.buf[p : p + name_size]).split(b"\0", 1)[0].decode("utf-8", "replace")
        size, _length, slots = self._datatype(dt, dt + dt_size, 0)
        count = self._count(ds, ds + ds_size)
        if slots and data + count * size > z:
            raise _Bad(f"its {count} values run past its message")
        return name, (size, slots), count, data

    def _count(self, a: int, z: int) -> int:
        """Elements of a dataspace message."""
        version, rank = self._u(a, 1, z), self._u(a + 1, 1, z)
        if version == 1:
            dims = a + 8
        elif version == 2:
            if self._u(a + 3, 1, z) == 2:
                return 0  # a null dataspace
            dims = a + 4
        else:
            raise _Bad(f"dataspace message version {version}")
        return math.prod(self._u(dims + i * self.lengths, self.lengths, z) for i in range(rank))

    def _compact_data(self, a: int, z: int) -> int:
        """Where a compact dataset's values start, from its layout message (version 3 or 4)."""
        if self._u(a, 1, z) not in (3, 4) or self._u(a + 1, 1, z) != 0:
            raise _Bad("a compact layout message of an unknown version")
        return a + 4

    def _datatype(self, a: int, z: int, depth: int) -> tuple[int, int, list]:
        """``(element size, bytes of the message, [(offset, base size)] of the descriptors in an element)``."""
        if depth > _MAX_TYPE_DEPTH:
            raise _Bad("datatypes nest too deep")
        head = self._u(a, 1, z)
        cls, version = head & 0x0F, head >> 4
        bits = self._u(a + 1, 3, z)
        size = self._u(a + 4, 4, z)
        p = a + 8
        if cls in _FIXED_PROPERTIES:
            return size, 8 + _FIXED_PROPERTIES[cls], []
        if cls == 5:  # opaque: an ASCII tag
            return size, 8 + (bits & 0xFF), []
        if cls == 9:  # variable-length: its base type follows
            kind, padding, charset = bits & 0x0F, (bits >> 4) & 0x0F, (bits >> 8) & 0x0F
            if kind > 1 or padding > 2 or charset > 1:  # libhdf5 reads such values through memory it never set up
                raise _Bad(f"a variable-length datatype of unknown kind {kind}, padding {padding} or charset {charset}")
            base_size, length, inner = self._datatype(p, z, depth + 1)
            if inner:
                raise _Bad("variable-length values of variable-length values")
            return size, 8 + length, [(0, 1 if bits & 0x0F == 1 else max(1, base_size))]
        if cls == 6:
            return self._compound(a, z, depth, version, bits & 0xFFFF, size)
        if cls == 8:  # enumeration: a base type, then names and values
            base_size, length, _ = self._datatype(p, z, depth + 1)
            q = p + length
            for _ in range(bits & 0xFFFF):
                q = self._name_end(q, z, version < 3)
            return size, q - a + (bits & 0xFFFF) * base_size, []
        if cls == 10:  # array
            rank = self._u(p, 1, z)
            q = p + (4 if version < 3 else 1)
            dims = [self._u(q + 4 * i, 4, z) for i in range(rank)]
            q += 4 * rank * (2 if version < 3 else 1)  # version 2 also lists a permutation
            base_size, length, inner = self._datatype(q, z, depth + 1)
            n = math.prod(dims)
            if inner and n * len(inner) * 16 > self.end:
                raise _Bad("an array of more variable-length values than the file can hold")
            slots = [(i * base_size + off, bs) for i in range(n) for off, bs in inner] if inner else []
            return size, q + length - a, slots
        raise _Bad(f"datatype class {cls}")

    def _compound(self, a: int, z: int, depth: int, version: int, members: int, size: int) -> tuple[int, int, list]:
        q, slots = a + 8, []
        width = 1 if size < 1 << 8 else 2 if size < 1 << 16 else 3 if size < 1 << 24 else 4
        for _ in range(members):
            q = self._name_end(q, z, version < 3)
            offset = self._u(q, width if version >= 3 else 4, z)
            q += width if version >= 3 else 4
            if version == 1:
                q += 28  # dimensionality, reserved, permutation, reserved, four dimension sizes
            _msize, length, inner = self._datatype(q, z, depth + 1)
            slots += [(offset + off, bs) for off, bs in inner]
            q += length
        return size, q - a, slots

    def _name_end(self, q: int, z: int, padded: bool) -> int:
        """After a null-terminated name (padded to 8 bytes in versions 1 and 2)."""
        end = self.buf.find(b"\0", q, z)
        if end < 0:
            raise _Bad("a name without its terminating null")
        n = end - q + 1
        return q + ((n + 7) // 8 * 8 if padded else n)


def _has_vlen(tid, depth: int = 0) -> bool:
    """Whether an h5py datatype has a variable-length part (a string, a sequence, inside compounds or arrays)."""
    import h5py

    if depth > _MAX_TYPE_DEPTH:
        return True  # too deep to tell: treated as variable-length, so it gets checked (and refused)
    if isinstance(tid, h5py.h5t.TypeVlenID):
        return True
    if isinstance(tid, h5py.h5t.TypeStringID):
        return bool(tid.is_variable_str())
    if isinstance(tid, h5py.h5t.TypeCompoundID):
        return any(_has_vlen(tid.get_member_type(i), depth + 1) for i in range(tid.get_nmembers()))
    if isinstance(tid, h5py.h5t.TypeArrayID):
        return _has_vlen(tid.get_super(), depth + 1)
    return False


def _let_go(buf, start: int, end: int) -> None:
    """Drop a memory map's pages of ``[start, end)`` from the resident set (they stay in the page cache)."""
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and end > start:
        aligned = start - start % mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
        except (OSError, ValueError):
            pass  # advice only
