"""Keras npz weights (``model.weights.npz``) read member by member, pickled members with a restricted unpickler.

Keras 3 writes ``model.weights.npz`` into a ``.keras`` archive (or a model directory) when
saved with ``saving_lib.save_model(m, path, weights_format="npz")``. An npz is a zip of
``.npy`` members. Keras' npz store saves each layer as a pickled dict of its variables
(``layers/dense.npy``: a 0-d object array holding ``{"0": kernel, "1": bias}``): those
members are read by ``npz_pickle.read_pickled_member``, an unpickler whose ``find_class``
answers only what numpy arrays and Keras variables need, with stand-ins that run nothing
(the approach of ``torch.load(weights_only=True)``; ``np.load(allow_pickle=True)`` is never
used, since it runs whatever a pickle names). Any other global is refused in one line
naming it. A member's sizes are checked (``limits``) before it is read whole. Its arrays
are named as in ``model.weights.h5`` (``layers/dense/vars/0``; ``__root__`` gives ``vars/0``).
Members holding plain arrays (``np.savez`` of arrays, which no Keras writes) are tensors
named by their path without ``.npy``, listed from their headers.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from typing import IO, Any, Literal, NamedTuple

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.readers.keras_h5 import _dtype_name
from ckptdoctor.readers.limits import MAX_PICKLE_BYTES, ZIP_ERRORS, LimitExceeded, read_zip_member
from ckptdoctor.readers.npz_pickle import PickleDamaged, PickleRefused, read_pickled_member

__all__ = ["KerasNpzReader", "open_npz_archive", "open_npz_dir", "WEIGHTS_NPZ_MEMBER", "ROOT_MEMBER"]

#: The npz weights member of a ``.keras`` archive (and file of a model directory).
WEIGHTS_NPZ_MEMBER = "model.weights.npz"
#: A deflated member may not expand beyond this ratio (DEFLATE itself cannot exceed about 1032:1).
_MAX_EXPANSION = 1100
#: The member holding the model's own variables (not a layer's): its keys are named ``vars/<i>``.
ROOT_MEMBER = "__root__"


class _Member(NamedTuple):
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_bytes: int
    offset: int | None = None  # where the data start in a pickled member; None: a plain .npy (after its header)


def _variable_order(key: str) -> tuple:
    leaf = key.rsplit("/", 1)[-1]
    return (0, int(leaf), "") if leaf.isdigit() else (1, 0, leaf)


def _header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    major, _minor = fmt.read_magic(stream)
    if major == 1:
        return fmt.read_array_header_1_0(stream)
    if major == 2:
        return fmt.read_array_header_2_0(stream)
    read = getattr(fmt, "_read_array_header", None)  # version 3 (utf-8 field names) has no public reader
    if read is None:
        raise ValueError(f"unsupported .npy version {major}")
    return read(stream, version=(major, _minor))


class KerasNpzReader:
    """The tensors of a Keras ``model.weights.npz``: plain members listed from their ``.npy`` headers, pickled ones
    (what Keras writes) through the restricted unpickler of ``npz_pickle``.

    Args:
        source: the npz as a path or a seekable binary file (a zip member of the ``.keras`` archive).
        label: the path shown in reports (the ``.keras`` file or the model directory).
        weights_name: the npz as messages name it (``m.keras:model.weights.npz``).
        config, metadata: the model's ``config.json`` and ``metadata.json``.
        fmt: the report's format name.
        close_also: file objects closed with the reader (the archive holding the npz).

    Raises:
        UnsupportedFormatError: a pickled member names a global other than numpy's arrays and Keras' variables
            (nothing of it is imported).
        LimitExceeded: a pickled member is larger than ``MAX_PICKLE_BYTES`` or its sizes do not fit the npz.
        CorruptCheckpointError: not an npz, a member that is not ``.npy``, or a pickle that is not the dict of
            arrays Keras writes.
    """

    layout = "v3"

    def __init__(
        self,
        source: str | IO[bytes],
        label: str,
        weights_name: str,
        config: dict | None,
        metadata: dict | None,
        fmt: str,
        close_also: tuple = (),
    ):
        self.prefix = label
        self.format = fmt
        self.model_config = config
        self.metadata = metadata or {}
        self.keras_version = self.metadata.get("keras_version")
        self.weights_name = weights_name
        self._close_also = close_also
        try:
            self._size = os.path.getsize(source) if isinstance(source, str) else source.seek(0, 2)
            if not isinstance(source, str):
                source.seek(0)
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(source)
        except ZIP_ERRORS as e:
            self._close_others()
            raise CorruptCheckpointError(
                f"{weights_name} is not a readable npz (a zip of .npy files) ({e}): save the model again"
            ) from e
        try:
            self._members = self._scan()
        except BaseException:
            self.close()
            raise

    def _scan(self) -> dict[str, _Member]:
        assert self._zip is not None
        members: dict[str, _Member] = {}
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise CorruptCheckpointError(
                    f"{self.weights_name}: member {info.filename} is not a .npy array: not a Keras npz weights file"
                )
            try:
                with self._zip.open(info) as stream:
                    shape, fortran, dtype = _header(stream)
            except ZIP_ERRORS as e:
                raise CorruptCheckpointError(
                    f"{self.weights_name}: member {info.filename} has no readable .npy header ({e})"
                ) from e
            name = info.filename[: -len(".npy")]
            if dtype.hasobject:
                members.update(self._pickled(info, name, tuple(shape)))
                continue
            count = 1
            for d in shape:
                count *= int(d)
            members[name] = _Member(info, tuple(int(d) for d in shape), dtype, bool(fortran), count * dtype.itemsize)
        return members

    def _pickled(self, info: zipfile.ZipInfo, name: str, shape: tuple) -> dict[str, _Member]:
        """The arrays of a pickled member, read with the restricted unpickler (``npz_pickle``)."""
        assert self._zip is not None
        where = f"{self.weights_name}: member {info.filename}"
        if shape != ():
            raise CorruptCheckpointError(
                f"{where} is an object array of shape {list(shape)}: Keras writes each layer as one pickled dict "
                "(shape []); not read"
            )
        try:
            data = read_zip_member(self._zip, info.filename, MAX_PICKLE_BYTES, self._size)
            stream = io.BytesIO(data)
            _header(stream)
            start = stream.tell()
            leaves = read_pickled_member(data[start:], start)
        except LimitExceeded as e:
            raise LimitExceeded(f"{self.weights_name}: {e}; not read") from e
        except PickleRefused as e:
            raise UnsupportedFormatError(
                f"{where} is a pickle that would import {e.name}, which is neither a numpy array nor a Keras "
                "variable: refused, nothing of it was imported or run (ckptdoctor unpickles only those, never "
                "with allow_pickle=True); only if you trust the file, unpickle it yourself (np.load(allow_pickle="
                "True), with Keras imported), set the model's weights and save it with HDF5 weights "
                "(model.save('model.keras'))"
            ) from None
        except PickleDamaged as e:
            raise CorruptCheckpointError(f"{where}: {e}: not the pickled dict of arrays Keras writes") from None
        except ZIP_ERRORS as e:
            raise CorruptCheckpointError(f"{where} cannot be read ({e})") from e
        prefix = "" if name == ROOT_MEMBER else name + "/"
        return {
            f"{prefix}vars/{key}": _Member(info, leaf.shape, leaf.dtype, leaf.fortran, leaf.nbytes, leaf.offset)
            for key, leaf in leaves.items()
        }

    # ------------------------------------------------------------------ interface

    def entries(self) -> list[TensorEntry]:
        """Every member, sorted by name, as its header declares it."""
        return [
            TensorEntry(name=n, dtype=_dtype_name(m.dtype), shape=m.shape, nbytes=m.data_bytes)
            for n, m in sorted(self._members.items())
        ]

    def _member(self, name: str) -> _Member:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"{self.prefix} has no tensor {name!r}") from None

    def _check_size(self, name: str, m: _Member) -> None:
        info = m.info
        if m.data_bytes > info.file_size or (
            info.compress_type != zipfile.ZIP_STORED
            and info.file_size > _MAX_EXPANSION * info.compress_size + (1 << 20)
        ):
            raise TensorReadError(
                "tensor-unreadable",
                name,
                f"{name}: {self.weights_name} member {info.filename} declares {m.data_bytes} bytes of data but "
                f"stores {info.compress_size} ({info.file_size} uncompressed): damaged, not read",
            )

    def read(self, name: str) -> np.ndarray:
        """The member's array with its stored dtype and shape (``allow_pickle=False``)."""
        m = self._member(name)
        self._check_size(name, m)
        assert self._zip is not None
        if m.offset is not None:
            return self._read_leaf(name, m)
        try:
            with self._zip.open(m.info) as stream:
                value = np.lib.format.read_array(stream, allow_pickle=False)
        except ZIP_ERRORS as e:
            raise TensorReadError(self._code(e), name, f"{name}: its bytes cannot be read ({e})") from e
        if value.shape != m.shape or value.dtype != m.dtype:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its data do not match its .npy header")
        return value

    def _read_leaf(self, name: str, m: _Member) -> np.ndarray:
        """An array of a pickled member: its bytes, where the unpickler found them (sizes checked then)."""
        assert self._zip is not None and m.offset is not None
        try:
            with self._zip.open(m.info) as stream:
                stream.seek(m.offset)
                data = stream.read(m.data_bytes)
        except ZIP_ERRORS as e:
            raise TensorReadError(self._code(e), name, f"{name}: its bytes cannot be read ({e})") from e
        if len(data) != m.data_bytes:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its member ends before its data do")
        order: Literal["F", "C"] = "F" if m.fortran else "C"
        return np.frombuffer(data, dtype=m.dtype).reshape(m.shape, order=order).copy(order="K")

    def leaf_location(self, name: str) -> tuple[str, int, int]:
        """Where a tensor's bytes lie in the npz: ``(member, offset in the member, nbytes)``."""
        m = self._member(name)
        if m.offset is not None:
            return m.info.filename, m.offset, m.data_bytes
        assert self._zip is not None
        with self._zip.open(m.info) as stream:
            _header(stream)
            return m.info.filename, stream.tell(), m.data_bytes

    def is_fortran(self, name: str) -> bool:
        """Whether the tensor's bytes are stored in Fortran order."""
        return self._member(name).fortran

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Flat chunks of about ``chunk_bytes``, streamed from the member (Fortran-ordered arrays whole; an array of
        a pickled member is read whole, its member having been read whole already)."""
        m = self._member(name)
        if m.offset is not None and m.dtype.itemsize:
            flat = self.read(name).ravel(order="K")
            step = max(1, chunk_bytes // m.dtype.itemsize)
            for i in range(0, max(flat.size, 1), step):
                yield flat[i : i + step]
            return
        if m.fortran or m.data_bytes == 0 or m.dtype.itemsize == 0:
            yield self.read(name).ravel()
            return
        self._check_size(name, m)
        assert self._zip is not None
        step = max(1, chunk_bytes // m.dtype.itemsize) * m.dtype.itemsize
        left = m.data_bytes
        try:
            with self._zip.open(m.info) as stream:
                _header(stream)
                while left > 0:
                    block = stream.read(min(step, left))
                    if len(block) < min(step, left):
                        raise EOFError(f"the data end after {m.data_bytes - left + len(block)} of {m.data_bytes} bytes")
                    left -= len(block)
                    yield np.frombuffer(block, dtype=m.dtype)
        except ZIP_ERRORS as e:
            raise TensorReadError(self._code(e), name, f"{name}: its bytes cannot be read ({e})") from e

    @staticmethod
    def _code(e: BaseException) -> str:
        return "checksum-mismatch" if "CRC" in str(e) else "tensor-unreadable"

    def close(self) -> None:
        """Close the npz and what holds it."""
        z, self._zip = getattr(self, "_zip", None), None
        if z is not None:
            z.close()
        self._close_others()

    def _close_others(self) -> None:
        others, self._close_also = self._close_also, ()
        for f in others:
            f.close()

    def __enter__(self) -> KerasNpzReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ Keras structure

    def layer_groups(self) -> list[dict[str, Any]]:
        """Layers as for ``model.weights.h5``: members named ``<path>/vars/<i>`` grouped by ``<path>``.

        An npz records no layer names (``name`` is None): they are matched to the config by class and order.
        """
        groups: dict[str, list[str]] = {}
        for name in self._members:
            head, sep, index = name.rpartition("vars/")
            if sep and (not head or head.endswith("/")) and "/" not in index:
                groups.setdefault(head[:-1], []).append(name)
        return [
            {
                "path": path,
                "name": None,
                "keys": sorted(keys, key=_variable_order),
            }
            for path, keys in sorted(groups.items())
        ]


def open_npz_archive(path: str) -> KerasNpzReader:
    """The npz weights of a ``.keras`` archive (``model.weights.npz``), read from the zip member (never extracted)."""
    from ckptdoctor.readers.keras_archive import archive_json

    try:
        archive = zipfile.ZipFile(path)
        size = os.path.getsize(path)
    except ZIP_ERRORS as e:
        raise CorruptCheckpointError(f"{path} is not a readable zip archive ({e})") from e
    try:
        config, metadata = archive_json(archive, path, size)
        member = archive.open(WEIGHTS_NPZ_MEMBER)
    except (KeyError, *ZIP_ERRORS) as e:
        archive.close()
        raise CorruptCheckpointError(f"{path}: its {WEIGHTS_NPZ_MEMBER} cannot be read ({e})") from e
    except BaseException:
        archive.close()
        raise
    return KerasNpzReader(
        member, path, f"{path}:{WEIGHTS_NPZ_MEMBER}", config, metadata, "keras-v3-npz", close_also=(member, archive)
    )


def open_npz_dir(path: str, weights_file: str) -> KerasNpzReader:
    """The npz weights of a Keras model directory: ``model.weights.npz``, or the npz that Keras 3 writes under the
    name ``model.weights.h5`` when saving npz weights unzipped (and then cannot load)."""
    from ckptdoctor.readers.keras_dir import read_dir_config

    config, metadata = read_dir_config(path)
    return KerasNpzReader(weights_file, path, weights_file, config, metadata, "keras-v3-dir-npz")
