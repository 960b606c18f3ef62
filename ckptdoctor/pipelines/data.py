"""Loading and checking the data a repair runs over.

``.npy`` files are memory-mapped, never read whole; ``.npz`` members and HDF5
datasets are sliced batch by batch. Nothing is ever unpickled
(``allow_pickle=False``). Every check runs before any work starts; each problem
is one line naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ckptdoctor.errors import BadDataError

__all__ = ["load_data", "check_data", "first_nonfinite", "release_rows", "batches", "NONFINITE_CHUNK_ROWS"]

NONFINITE_CHUNK_ROWS = 4096


def _load_npy(path: str):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise BadDataError(
                f"{path} holds Python objects (a pickle), which ckptdoctor never loads: "
                "save the data as a numeric array (np.save(path, x.astype('float32')))"
            ) from e
        raise BadDataError(f"{path} is not a readable .npy file ({e}): save it with np.save") from e
    except OSError as e:
        raise BadDataError(f"cannot read {path}: {e.strerror or e}") from e


def _load_npz(path: str) -> dict:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise BadDataError(f"{path} is not a readable .npz file ({e}): save it with np.savez") from e
    out = {}
    for key in archive.files:
        try:
            out[key] = archive[key]
        except ValueError as e:
            raise BadDataError(
                f"{path}: member {key} holds Python objects (a pickle), which ckptdoctor never "
                "loads: save numeric arrays only"
            ) from e
    return out


def _load_h5(path: str, dataset: str):
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BadDataError(f"{path} is not a readable HDF5 file ({e})") from e
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        raise BadDataError(f"{path} has no dataset {dataset!r}; datasets there: {', '.join(names[:8]) or 'none'}")
    return f[dataset]


def _load_h5_all(path: str) -> dict:
    """Every top-level dataset of an HDF5 file, by name (like the keys of an ``.npz``)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BadDataError(f"{path} is not a readable HDF5 file ({e})") from e
    out = {name: obj for name, obj in f.items() if isinstance(obj, h5py.Dataset)}
    if not out:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        raise BadDataError(
            f"{path} has no dataset at its top level (datasets deeper down: "
            f"{', '.join(names[:8]) or 'none'}): name one as {path}:GROUP/DATASET"
        )
    return out


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
        yield [np.array(i.array[start:stop], dtype=_dtype(i.dtype)) for i in inputs]
        for i in inputs:
            release_rows(i.array, start, stop)


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
        chunk = np.asarray(array[start : start + NONFINITE_CHUNK_ROWS])
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
