"""Loading and checking the data a repair runs over.

``.npy`` files and the stored (``np.savez``) members of ``.npz`` files are
memory-mapped, never read whole; compressed ``.npz`` members are inflated once, and
HDF5 datasets are sliced batch by batch. Nothing is ever unpickled
(``allow_pickle=False``). Every check runs before any work starts; each problem
is one line naming the file, what is wrong and what to do.

Sizes the files declare are checked before they are trusted (``readers.limits``): an
``.npy`` header must describe no more bytes than follow it; an ``.npz`` member must
inflate at most ``MAX_EXPANSION`` times and hold the bytes its header describes; an HDF5
dataset must store the values it declares (``hdf5_storage_problem``), and only hard links
are followed.
"""

from __future__ import annotations

import math
import os
import zipfile
from tokenize import TokenError
from typing import Literal

import numpy as np

from ckptdoctor.errors import BadDataError
from ckptdoctor.readers.limits import (
    ZIP_ERRORS,
    LimitExceeded,
    check_hdf5_file,
    check_zip_member,
    hard_children,
    hdf5_storage_problem,
    human,
    stored_member_start,
)

__all__ = [
    "load_data",
    "check_data",
    "first_nonfinite",
    "read_rows",
    "release_rows",
    "batches",
    "NONFINITE_CHUNK_ROWS",
]

NONFINITE_CHUNK_ROWS = 4096
_MAX_NPY_HEADER = 1 << 16
_PICKLE_ADVICE = "save the data as a numeric array (np.save(path, x.astype('float32')))"


def _npy_header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, bytes the header promises)`` of the ``.npy`` stream ``f`` (at its start).

    Raises:
        BadDataError: not an ``.npy`` header, or one of Python objects (a pickle).
    """
    fmt = np.lib.format
    head = f.read(12)
    long_header = head[6:7] not in (b"\x01", b"")
    length = int.from_bytes(head[8:12] if long_header else head[8:10], "little")
    if head[:6] == fmt.MAGIC_PREFIX and length > _MAX_NPY_HEADER:
        raise BadDataError(f"{name} declares a {human(length)} .npy header (np.save writes a few hundred bytes)")
    f.seek(0)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    # numpy parses the header as a Python literal: besides ValueError, its tokenizer and parser raise their own.
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, RecursionError, MemoryError, TokenError) as e:
        raise BadDataError(f"{name} is not a readable .npy array ({e}): save it with np.save") from e
    if dtype.hasobject:
        raise BadDataError(f"{name} holds Python objects (a pickle), which ckptdoctor never loads: {_PICKLE_ADVICE}")
    if any(d < 0 for d in shape):
        raise BadDataError(f"{name} declares the negative shape {list(shape)}: save it with np.save")
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _load_npy(path: str):
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype, needed = _npy_header(f, path)
            offset = f.tell()
        held = os.path.getsize(path) - offset
    except OSError as e:
        raise BadDataError(f"cannot read {path}: {e.strerror or e}") from e
    if needed > held:
        raise BadDataError(
            f"{path}: its header declares shape {list(shape)} of {dtype} ({human(needed)}) but the file holds "
            f"{human(held)} after it (truncated, or not written by np.save): save the data again"
        )
    if needed == 0:
        return np.zeros(shape, dtype, order="F" if fortran else "C")
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except (ValueError, OSError) as e:
        raise BadDataError(f"{path} is not a readable .npy file ({e}): save it with np.save") from e


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, size: int):
    """One member of an ``.npz``: memory-mapped when stored, inflated when compressed, after its sizes are checked."""
    label = f"{path}: member {info.filename}"
    check_zip_member(info, size)
    with zf.open(info) as member:
        shape, fortran, dtype, needed = _npy_header(member, label)
        header = member.tell()
    if header + needed > info.file_size:
        raise BadDataError(
            f"{label} declares shape {list(shape)} of {dtype} ({human(needed)}) but holds {human(info.file_size)}: "
            "save the data again"
        )
    order: Literal["C", "F"] = "F" if fortran else "C"
    if needed == 0:
        return np.zeros(shape, dtype, order=order)
    with open(path, "rb") as f:
        start = stored_member_start(f, info, size)
    if start is not None:
        return np.memmap(path, dtype=dtype, mode="r", offset=start + header, shape=shape, order=order)
    with zf.open(info) as member:
        member.read(header)
        raw = member.read(needed)
    if len(raw) != needed:
        raise BadDataError(f"{label} is truncated ({human(len(raw))} of {human(needed)}): save the data again")
    return np.frombuffer(raw, dtype).reshape(shape, order=order)


def _load_npz(path: str) -> dict:
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                if info.filename.endswith("/"):
                    continue  # a folder entry
                if not info.filename.endswith(".npy"):
                    raise BadDataError(
                        f"{path} holds {info.filename}, which is not an .npy array: save it with np.savez"
                    )
                out[info.filename[: -len(".npy")]] = _npz_member(zf, info, path, size)
            return out
    except LimitExceeded as e:
        raise BadDataError(f"{path}: {e}: not data np.savez writes; save the data again") from e
    except ZIP_ERRORS as e:
        raise BadDataError(f"{path} is not a readable .npz file ({e}): save it with np.savez") from e


def _h5_error(path: str, e: Exception) -> BadDataError:
    return BadDataError(f"{path} is not a readable HDF5 file ({e}): save the data again (h5py, or np.save)")


def _checked_dataset(path: str, name: str, ds):
    """``ds`` after checking that it stores the values it declares."""
    try:
        problem = hdf5_storage_problem(ds)
        ds.dtype  # noqa: B018  (h5py maps the file's datatype here, and raises for one numpy has no match for)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise _h5_error(path, e) from e
    if problem is not None:
        raise BadDataError(f"{path}: dataset {name} {problem}: it holds no data; pass data stored in the file")
    return ds


def _dataset_names(f) -> list[str]:
    """The datasets' names, for a message (as many as a damaged file lets us walk)."""
    import h5py

    names: list[str] = []
    try:
        f.visititems(lambda name, obj: names.append(str(name)) if isinstance(obj, h5py.Dataset) else None)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError):
        pass
    return names


def _load_h5(path: str, dataset: str):
    import h5py

    try:
        check_hdf5_file(path)
        f = h5py.File(path, "r")
        link = f.get(dataset, getlink=True)
        found = f[dataset] if isinstance(link, h5py.HardLink) else None
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise _h5_error(path, e) from e
    if not isinstance(found, h5py.Dataset):
        names = _dataset_names(f)
        raise BadDataError(f"{path} has no dataset {dataset!r}; datasets there: {', '.join(names[:8]) or 'none'}")
    return _checked_dataset(path, dataset, found)


def _load_h5_all(path: str) -> dict:
    """Every top-level dataset of an HDF5 file, by name (like the keys of an ``.npz``)."""
    import h5py

    try:
        check_hdf5_file(path)
        f = h5py.File(path, "r")
        out = {name: obj for name, obj in hard_children(f) if isinstance(obj, h5py.Dataset)}
        if not out:
            names = _dataset_names(f)
            raise BadDataError(
                f"{path} has no dataset at its top level (datasets deeper down: "
                f"{', '.join(names[:8]) or 'none'}): name one as {path}:GROUP/DATASET"
            )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise _h5_error(path, e) from e
    return {name: _checked_dataset(path, name, ds) for name, ds in out.items()}


def load_data(spec: str) -> dict[str | None, object]:
    """Open the data named by ``spec``.

    Args:
        spec: ``X.npy``, ``data.npz`` (keys name placeholders or model inputs),
            ``FILE.h5:dataset`` (one dataset) or ``FILE.h5`` (every top-level
            dataset, by name, like the keys of an ``.npz``).

    Returns:
        ``{None: array}`` for a single array, ``{key: array}`` for an ``.npz`` or a bare ``.h5``.
        Arrays are numpy memory maps or h5py datasets: sliceable, not loaded.
    """
    if ":" in spec and not os.path.exists(spec):
        path, dataset = spec.rsplit(":", 1)
        if not os.path.isfile(path):
            raise BadDataError(f"no data file at {path}: pass --data X.npy, data.npz or FILE.h5:dataset")
        return {None: _load_h5(path, dataset)}
    if not os.path.isfile(spec):
        raise BadDataError(f"no data file at {spec}: pass --data X.npy, data.npz or FILE.h5:dataset")
    lower = spec.lower()
    if lower.endswith(".npz"):
        return _load_npz(spec)
    if lower.endswith((".h5", ".hdf5")):
        return _load_h5_all(spec)
    return {None: _load_npy(spec)}


def release_rows(array, start: int, stop: int) -> None:
    """Let go of the mapped pages of rows ``[start, stop)`` of a memory-mapped ``.npy``.

    Pages of a file map that were read stay in the process's resident set until the
    map closes; over a 2 GB file that would make memory grow with the data instead
    of the batch. The map is read-only, so dropped pages simply fault back in from
    the page cache if read again. A no-op for anything but a ``np.memmap``.
    """
    import mmap

    raw = getattr(array, "_mmap", None)
    if raw is None or not hasattr(mmap, "MADV_DONTNEED") or stop <= start or not array.flags.c_contiguous:
        return
    base = array.offset % mmap.ALLOCATIONGRANULARITY  # where the array starts inside the map
    row = array.strides[0] if array.ndim else array.itemsize
    begin, end = base + start * row, min(len(raw), base + stop * row)
    begin -= begin % mmap.PAGESIZE
    if end > begin:
        try:
            raw.madvise(mmap.MADV_DONTNEED, begin, end - begin)
        except (OSError, ValueError):
            pass  # advice only


def batches(inputs, n: int, batch_size: int):
    """Consecutive batches of the first ``n`` samples in file order, one array per input (``formats.base.Input``),
    each a copy in the input's dtype; the mapped pages of a batch are let go once it is used (``release_rows``)."""
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        yield [np.array(read_rows(i.array, start, stop, i.name), dtype=_dtype(i.dtype)) for i in inputs]
        for i in inputs:
            release_rows(i.array, start, stop)


def read_rows(array, start: int, stop: int, name: str):
    """``array[start:stop]``; a damaged HDF5 dataset's (or a truncated map's) read error becomes ``BadDataError``."""
    try:
        return array[start:stop]
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        raise BadDataError(f"{name}: rows {start} to {stop} cannot be read ({e}): the data file is damaged") from e


def _dtype(name: str):
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and the like: ml_dtypes knows them
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def first_nonfinite(array, name: str) -> None:
    """Raise ``BadDataError`` naming the first row (and column) holding NaN or Inf."""
    if array.dtype.kind not in "fc":
        return
    for start in range(0, array.shape[0], NONFINITE_CHUNK_ROWS):
        chunk = np.asarray(read_rows(array, start, start + NONFINITE_CHUNK_ROWS, name))
        bad = ~np.isfinite(chunk)
        release_rows(array, start, start + NONFINITE_CHUNK_ROWS)
        if bad.any():
            where = np.argwhere(bad)[0]
            row = start + int(where[0])
            col = tuple(int(i) for i in where[1:])
            at = f"row {row}" + (f", column {col[0] if len(col) == 1 else list(col)}" if col else "")
            raise BadDataError(f"{name} holds {chunk[tuple(where)]} at {at}: remove or fix non-finite samples")


def check_data(array, name: str, placeholder_shape: list | None, placeholder_dtype: str) -> None:
    """Check one array against the placeholder it feeds, before any work.

    Raises:
        BadDataError: no samples, wrong rank or shape, a dtype that cannot be cast
            without loss of meaning, NaN or Inf.
    """
    if array.ndim == 0 or array.shape[0] == 0:
        raise BadDataError(f"{name} holds no samples (shape {list(array.shape)}): pass data with at least one sample")
    kind = array.dtype.kind
    target = np.dtype(placeholder_dtype) if placeholder_dtype not in ("bfloat16",) else np.dtype("float32")
    if kind in "OSUVMm" or (kind == "b" and target.kind != "b") or (kind == "c" and target.kind != "c"):
        raise BadDataError(
            f"{name} has dtype {array.dtype}, which cannot feed a {placeholder_dtype} placeholder: "
            f"convert it to {placeholder_dtype}"
        )
    if target.kind in "iu" and kind == "f":
        raise BadDataError(
            f"{name} is {array.dtype} but the placeholder is {placeholder_dtype}: "
            "casting would drop the fractions; convert the data yourself if that is intended"
        )
    if placeholder_shape is not None:
        want = placeholder_shape
        got = list(array.shape)
        ok = len(want) == len(got) and all(w is None or w == g for w, g in zip(want[1:], got[1:]))
        if not ok:
            shown = "[" + ", ".join("None" if w is None else str(w) for w in want) + "]"
            raise BadDataError(
                f"{name} has shape {got} but the placeholder takes {shown}: "
                "reshape the data (samples first) or pass --input for another placeholder"
            )
    first_nonfinite(array, name)
