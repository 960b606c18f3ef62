"""The bounds on what a file can make ckptdoctor do: sizes read from a file are checked here before use.

Files come from elsewhere (a download, a colleague, a bucket), and some are cheap to make and costly
to read: a zip member that inflates to gigabytes, an HDF5 dataset that declares terabytes and stores
nothing, a header that claims more rows than the file holds, JSON nested deeper than any stack. The
rule everywhere: work and memory are bounded by the bytes the file actually holds. Each helper here
raises ``LimitExceeded`` (a ``ValueError``, like ``WireFormatError``), which the readers turn into
their one-line errors or findings naming the file.

The bounds:

* JSON (``config.json``, ``metadata.json``, Keras' ``model_config`` attribute, ``keras_metadata.pb``
  nodes, a config given with ``--graph``): at most ``MAX_JSON_BYTES`` (64 MiB, as safetensors caps
  its header) and ``MAX_JSON_DEPTH`` levels of nesting, checked by a scan that does not recurse
  before the JSON parser (which does) sees the text.
* pickled npz members (Keras' npz weights, one per layer): at most ``MAX_PICKLE_BYTES`` (2 GiB),
  read whole, through the restricted unpickler of ``npz_pickle`` (its arrays' declared shapes
  must match the bytes the pickle holds for them).
* zip members: inflating to more than ``MAX_EXPANSION`` times the bytes stored (above
  ``EXPANSION_FLOOR``: tiny members compress well) is a decompression bomb; a member's stored
  bytes must lie inside the archive. The declared inflated size bounds what is read (zipfile
  stops there and checks the CRC), and is itself checked first.
* HDF5 datasets (``hdf5_storage_problem``): the values a dataset declares must be stored in the
  file: storage allocated (contiguous), every chunk written (chunked), not in external files or
  mapped from other files (virtual), and filters that expand the stored bytes at most
  ``MAX_EXPANSION`` times (above ``HDF5_EXPANSION_FLOOR``). Anything else reads fill values or
  other files, so it is not read.
* Links inside HDF5 files are followed only when hard (``hard_children``): soft links can make
  cycles, external links open other files (or a FIFO that never answers).
* HDF5 global heaps and variable-length values, which libhdf5 trusts more than is safe: checked
  with ckptdoctor's own code before h5py reads them (``hdf5_raw``).
"""

from __future__ import annotations

import math
import re
import struct
import zipfile
import zlib

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError

__all__ = [
    "LimitExceeded",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_PICKLE_BYTES",
    "MAX_EXPANSION",
    "EXPANSION_FLOOR",
    "HDF5_EXPANSION_FLOOR",
    "ZIP_ERRORS",
    "json_depth",
    "load_json",
    "check_zip_member",
    "read_zip_member",
    "stored_member_start",
    "hdf5_storage_problem",
    "check_hdf5_file",
    "hard_children",
    "hdf5_name",
    "read_hdf5_attr",
    "human",
]

#: JSON documents larger than this are refused before they are read (safetensors caps its header at 100 MB).
MAX_JSON_BYTES = 64 << 20
#: Deeper JSON is refused: real Keras configs nest a few dozen levels (a model nested 80 deep stays below).
MAX_JSON_DEPTH = 256
#: A pickled npz member (Keras writes one per layer) is read whole into memory: at most this large.
MAX_PICKLE_BYTES = 2 << 30
#: A zip member or HDF5 dataset may inflate to at most this many times its stored bytes...
MAX_EXPANSION = 100
#: ... once it inflates to more than this (a small member of zeros or spaces compresses far better).
EXPANSION_FLOOR = 16 << 20
#: The same floor for one HDF5 dataset (files hold many: a lower one keeps their sum bounded too).
HDF5_EXPANSION_FLOOR = 1 << 20
#: What reading a damaged or hostile zip member can raise besides ``LimitExceeded``.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OSError,
    ValueError,
    IndexError,
)


class LimitExceeded(ValueError, CorruptCheckpointError):
    """A size, count or depth from a file is beyond what the file's own bytes can back, or beyond a cap.

    A ``ValueError`` like ``WireFormatError`` (callers add the file's name), and a
    ``CorruptCheckpointError``, so that one a caller missed is still a one-line error.
    """


def human(n: int) -> str:
    """``3221225472`` -> ``3 GiB``; ``1536`` -> ``1.5 KiB`` (for messages)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value >= 100 or value == int(value) else f"{value:.3g} {unit}"
    return f"{n} bytes"


# ----------------------------------------------------------------------------- JSON

# A JSON string: quotes around anything but quotes and backslashes, or escapes (the unrolled loop is fast).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1
_DEPTH_STEP = 1 << 20


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, outside strings; no recursion, O(len).

    Text that is not valid JSON gets some number (an unterminated string's brackets count): the
    parser rejects it afterwards anyway.
    """
    text = _JSON_STRING.sub(b'""', data)
    deepest = level = 0
    for start in range(0, len(text), _DEPTH_STEP):
        steps = _OPEN[np.frombuffer(text, np.uint8, min(_DEPTH_STEP, len(text) - start), start)].astype(np.int64)
        if steps.size:
            run = np.cumsum(steps) + level
            deepest = max(deepest, int(run.max()))
            level = int(run[-1])
    return deepest


def load_json(data: bytes | str, what: str):
    """Parse JSON from a file after checking its size and depth.

    Args:
        data: the text (UTF-8 bytes or str).
        what: what it is, for messages ("config.json").

    Raises:
        LimitExceeded: larger than ``MAX_JSON_BYTES`` or nested deeper than ``MAX_JSON_DEPTH``.
        ValueError: not JSON (``json.JSONDecodeError``) or not UTF-8.
    """
    import json

    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_JSON_BYTES:
        raise LimitExceeded(f"{what} is {human(len(raw))}, above the {human(MAX_JSON_BYTES)} limit for JSON")
    # Fewer brackets than the limit cannot nest deeper than it: most documents skip the scan.
    depth = json_depth(raw) if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH else 0
    if depth > MAX_JSON_DEPTH:
        raise LimitExceeded(f"{what} nests {depth} levels deep, above the limit of {MAX_JSON_DEPTH}")
    try:
        return json.loads(raw)
    except RecursionError as e:  # only if the stack was already deep: the scan bounds the nesting
        raise LimitExceeded(f"{what} nests too deep to parse") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 ({e})") from e


# ----------------------------------------------------------------------------- zip members


def check_zip_member(info: zipfile.ZipInfo, archive_size: int) -> None:
    """Check a member's declared sizes against the archive before anything of it is read.

    Raises:
        LimitExceeded: its stored bytes would lie past the end of the archive, or it inflates more
            than ``MAX_EXPANSION`` times (and to more than ``EXPANSION_FLOOR``).
    """
    if info.header_offset + info.compress_size > archive_size:
        raise LimitExceeded(
            f"member {info.filename} claims {human(info.compress_size)} at offset {info.header_offset}, "
            f"past the end of the {human(archive_size)} archive (truncated or damaged)"
        )
    if info.file_size > EXPANSION_FLOOR and info.file_size > MAX_EXPANSION * info.compress_size:
        raise LimitExceeded(
            f"member {info.filename} inflates {human(info.compress_size)} to {human(info.file_size)} "
            f"(more than {MAX_EXPANSION}:1, a decompression bomb)"
        )


def read_zip_member(zf: zipfile.ZipFile, name: str, cap: int, archive_size: int) -> bytes:
    """A member's inflated bytes, refused before reading when it declares more than ``cap``.

    What is read never exceeds ``cap + 1`` bytes, whatever the member's headers say.

    Raises:
        LimitExceeded: the member is larger than ``cap`` or fails ``check_zip_member``.
        KeyError: no such member.
        one of ``ZIP_ERRORS``: the member is damaged (bad CRC, bad deflate data, encrypted...).
    """
    info = zf.getinfo(name)
    if info.file_size > cap:
        raise LimitExceeded(f"{name} declares {human(info.file_size)}, above the {human(cap)} limit for it")
    check_zip_member(info, archive_size)
    with zf.open(info) as member:
        # zipfile stops at the declared size (and checks the CRC there); asking for no more than that
        # keeps a member that lies about its size from inflating anything beyond it.
        data = member.read(min(cap, info.file_size) + 1)
    if len(data) > cap:
        raise LimitExceeded(f"{name} inflates to more than the {human(cap)} limit for it")
    return data


_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_LOCAL_MAGIC = 0x04034B50


def stored_member_start(f, info: zipfile.ZipInfo, archive_size: int) -> int | None:
    """Where a stored (uncompressed, unencrypted) member's bytes start in the open archive ``f``; None if the
    member is compressed or encrypted (it must then be read through zipfile).

    Raises:
        LimitExceeded: no local header where the central directory says, or the bytes do not fit the archive.
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(header)[0] != _LOCAL_MAGIC:
        raise LimitExceeded(f"member {info.filename} has no local header at offset {info.header_offset}")
    fields = _LOCAL_HEADER.unpack(header)
    start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
    if start + info.compress_size > archive_size or info.compress_size != info.file_size:
        raise LimitExceeded(f"member {info.filename}'s stored bytes do not fit the archive")
    return start


# ----------------------------------------------------------------------------- HDF5


def _declared_count(ds) -> int | None:
    """Elements the dataset declares; None for a null dataspace (no value at all)."""
    import h5py

    space = ds.id.get_space()
    if space.get_simple_extent_type() == h5py.h5s.NULL:
        return None
    return math.prod(int(d) for d in space.shape)


def hdf5_storage_problem(ds) -> str | None:
    """Why a dataset's declared values are not backed by bytes stored in the file, or None if they are.

    Reading such a dataset would return fill values, read other files, or inflate far beyond
    the file: ``"declares 4 TiB of float32 (shape [1099511627776]) but stores none of its
    16777216 chunks"``. Cheap: only metadata is consulted (the chunk index, never the data).
    """
    import h5py

    count = _declared_count(ds)
    if count is None:
        return "has a null dataspace: it holds no value"
    if count == 0:
        return None
    ftype = ds.id.get_type()
    variable = isinstance(ftype, h5py.h5t.TypeVlenID) or (
        isinstance(ftype, h5py.h5t.TypeStringID) and ftype.is_variable_str()
    )
    declared = count * ftype.get_size()
    shape = list(ds.id.get_space().shape)
    what = f"declares {human(declared)} (shape {shape})"
    plist = ds.id.get_create_plist()
    if plist.get_external_count() > 0:
        name = plist.get_external(0)[0].decode("utf-8", "replace")
        return f"{what} stored in external file {name!r}, not in this file"
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        return f"{what} mapped from other files (a virtual dataset), not stored in this file"
    stored = ds.id.get_storage_size()
    if layout == h5py.h5d.COMPACT:
        return None  # the values sit in the object header itself
    if layout == h5py.h5d.CONTIGUOUS:
        if stored == 0 or (not variable and stored < declared):
            return f"{what} but stores {human(stored)}: its values were never written"
        return None
    if layout != h5py.h5d.CHUNKED:
        return f"{what} with an unknown storage layout {layout}"
    chunk = plist.get_chunk()
    expected = math.prod(-(-int(d) // max(1, int(c))) for d, c in zip(shape, chunk))
    written = ds.id.get_num_chunks()
    if written < expected:
        return f"{what} but stores {'none' if written == 0 else written} of its {expected} chunks"
    if (
        not variable
        and plist.get_nfilters() > 0
        and declared > HDF5_EXPANSION_FLOOR
        and declared > MAX_EXPANSION * stored
    ):
        return f"{what} but stores {human(stored)}: its filters would inflate it more than {MAX_EXPANSION}:1"
    return None


def check_hdf5_file(file) -> None:
    """Raise ``LimitExceeded`` when an HDF5 file holds a global heap libhdf5 cannot decode safely
    (``hdf5_raw.RawHDF5``: one pass through a memory map whose pages are let go as it goes).

    Args:
        file: a path, or a real file object (with a file descriptor).
    """
    from ckptdoctor.readers.hdf5_raw import RawHDF5

    raw = RawHDF5.open(file)
    raw.close()
    if raw.problem:
        raise LimitExceeded(raw.problem)


def hard_children(group) -> list[tuple[str, object]]:
    """A group's members reached by hard links, as ``(name, object)``; soft and external links are skipped."""
    import h5py

    out = []
    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.HardLink):
            try:
                out.append((hdf5_name(name), group[name]))
            except (KeyError, OSError, ValueError, TypeError, RuntimeError):
                continue  # a dangling or unreadable link: nothing to list
    return out


def hdf5_name(name) -> str:
    """A link name as ``str``: h5py gives ``bytes`` for names that are not UTF-8 (kept, surrogate-escaped)."""
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


def read_hdf5_attr(obj, name: str, raw, cap: int = MAX_JSON_BYTES):
    """An attribute's value, refused before reading when it declares more than ``cap`` bytes, or when its
    variable-length values do not match the file's heaps (``raw``: the file's ``hdf5_raw.RawHDF5``).

    Raises:
        LimitExceeded: the attribute's declared size is above ``cap``, or its values cannot be read safely.
        KeyError: no such attribute.
    """
    attr = obj.attrs.get_id(name)
    space = attr.get_space()
    count = math.prod(int(d) for d in space.shape) if space.shape is not None else 0
    try:
        stored = attr.get_storage_size()
    except (OSError, ValueError, RuntimeError):  # h5py raises for an empty attribute (HDF5 returns 0)
        stored = 0
    size = max(count * attr.get_type().get_size(), stored)
    if size > cap:
        raise LimitExceeded(f"attribute {name!r} declares {human(size)}, above the {human(cap)} limit for it")
    problem = raw.attribute_problem(obj, name)
    if problem:
        raise LimitExceeded(problem)
    return obj.attrs[name]
