"""Keras npz weights (``model.weights.npz``) read member by member from the ``.npy`` headers, never unpickled.

Keras 3 writes ``model.weights.npz`` into a ``.keras`` archive (or a model directory) when
saved with ``saving_lib.save_model(m, path, weights_format="npz")``. An npz is a zip of
``.npy`` members; each header gives the member's dtype, shape and order, so the tensors
are listed without reading any data, and values are read with ``allow_pickle=False``.

A member whose dtype is ``object`` holds pickled Python objects: loading it would run
whatever the pickle names. It is refused in one line (``UnsupportedFormatError``) naming
the member and, from a static scan of its opcodes (``pickletools``, which executes
nothing), what unpickling would import. This is what Keras 3 itself writes today: its npz
store saves each layer as a pickled dict of its variables (``layers/dense.npy``), which
Keras since 3.9 refuses to load as well. Members holding plain arrays are tensors, named
by their path without ``.npy``; the Keras 3 HDF5 naming (``layers/dense/vars/0``) groups
them into layers as for ``model.weights.h5``.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import numpy as np

from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.readers.keras_h5 import _dtype_name

__all__ = ["KerasNpzReader", "pickle_imports", "open_npz_archive", "open_npz_dir", "WEIGHTS_NPZ_MEMBER"]

#: The npz weights member of a ``.keras`` archive (and file of a model directory).
WEIGHTS_NPZ_MEMBER = "model.weights.npz"
#: A deflated member may not expand beyond this ratio (DEFLATE itself cannot exceed about 1032:1).
_MAX_EXPANSION = 1100
#: How much of a pickled member is scanned for what it would import, and of how many members.
_SCAN_BYTES = 1 << 20
_SCAN_MEMBERS = 64


class _Member(NamedTuple):
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_bytes: int


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
_MEMO_GET_OPS = frozenset({"BINGET", "LONG_BINGET", "GET"})
_MEMO_PUT_OPS = frozenset({"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"})
_NO_PUSH_OPS = frozenset({"PROTO", "FRAME", "STOP", "POP", "POP_MARK"})


def pickle_imports(data: bytes) -> list[str]:
    """The globals a pickle would import (``module.name``), found by disassembling it: nothing is executed.

    ``STACK_GLOBAL`` takes its module and name from the two values pushed before it, which are
    strings or memo references to strings; those two are followed, nothing else of the stack.
    """
    found: list[str] = []
    recent: list[str | None] = [None, None]
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _STRING_OPS:
                recent = [recent[-1], str(arg)]
            elif name in _MEMO_GET_OPS:
                recent = [recent[-1], memo.get(int(arg or 0))]
            elif name in _MEMO_PUT_OPS:
                memo[len(memo) if name == "MEMOIZE" else int(arg or 0)] = recent[-1]
            elif name == "STACK_GLOBAL":
                if recent[0] and recent[1]:
                    found.append(f"{recent[0]}.{recent[1]}")
                recent = [None, None]
            elif name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
                recent = [recent[-1], None]
            elif name not in _NO_PUSH_OPS:
                recent = [recent[-1], None]
    except Exception:  # noqa: BLE001 - a truncated or odd pickle: what was seen so far is the answer
        pass
    return list(dict.fromkeys(found))


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
    """The tensors of a Keras ``model.weights.npz``: listed from the ``.npy`` headers, read without pickles.

    Args:
        source: the npz as a path or a seekable binary file (a zip member of the ``.keras`` archive).
        label: the path shown in reports (the ``.keras`` file or the model directory).
        weights_name: the npz as messages name it (``m.keras:model.weights.npz``).
        config, metadata: the model's ``config.json`` and ``metadata.json``.
        fmt: the report's format name.
        close_also: file objects closed with the reader (the archive holding the npz).

    Raises:
        UnsupportedFormatError: a member holds pickled objects (never loaded).
        CorruptCheckpointError: not an npz, or a member that is not ``.npy``.
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
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(source)
        except (OSError, zipfile.BadZipFile) as e:
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
        pickled: list[str] = []
        imports: list[str] = []
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
                    if dtype.hasobject:  # read to be disassembled, never loaded
                        imports += pickle_imports(stream.read(_SCAN_BYTES)) if len(pickled) < _SCAN_MEMBERS else []
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
                raise CorruptCheckpointError(
                    f"{self.weights_name}: member {info.filename} has no readable .npy header ({e})"
                ) from e
            if dtype.hasobject:
                pickled.append(info.filename)
                continue
            count = 1
            for d in shape:
                count *= int(d)
            name = info.filename[: -len(".npy")]
            members[name] = _Member(info, tuple(int(d) for d in shape), dtype, bool(fortran), count * dtype.itemsize)
        if pickled:
            self._refuse_pickles(pickled, imports)
        return members

    def _refuse_pickles(self, pickled: list[str], imports: list[str]) -> None:
        imports = list(dict.fromkeys(imports))
        imports.sort(key=lambda name: name.startswith("numpy"))  # the surprising imports first
        shown = ", ".join(imports[:5]) + (f" and {len(imports) - 5} more" if len(imports) > 5 else "")
        more = f" and {len(pickled) - 1} more members hold" if len(pickled) > 1 else " holds"
        raise UnsupportedFormatError(
            f"{self.weights_name}: member {pickled[0]}{more} pickled Python objects (dtype object"
            + (f"; unpickling would import {shown}" if imports else "")
            + "), as Keras' npz weights store each layer's variables: ckptdoctor never unpickles "
            "(allow_pickle=False), and Keras 3.9 and later refuse to load such a file as well; save the "
            "model with HDF5 weights (model.save('model.keras'), the default)"
        )

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
        try:
            with self._zip.open(m.info) as stream:
                value = np.lib.format.read_array(stream, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise TensorReadError(self._code(e), name, f"{name}: its bytes cannot be read ({e})") from e
        if value.shape != m.shape or value.dtype != m.dtype:
            raise TensorReadError("tensor-unreadable", name, f"{name}: its data do not match its .npy header")
        return value

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Flat chunks of about ``chunk_bytes``, streamed from the member (Fortran-ordered arrays whole)."""
        m = self._member(name)
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
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
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
    import json

    from ckptdoctor.readers.keras_archive import CONFIG_MEMBER, METADATA_MEMBER

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise CorruptCheckpointError(f"{path} is not a readable zip archive ({e})") from e
    try:
        names = archive.namelist()
        config = json.loads(archive.read(CONFIG_MEMBER))
        metadata = json.loads(archive.read(METADATA_MEMBER)) if METADATA_MEMBER in names else {}
        member = archive.open(WEIGHTS_NPZ_MEMBER)
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        archive.close()
        raise CorruptCheckpointError(f"{path}: its {CONFIG_MEMBER} cannot be read as JSON ({e})") from e
    return KerasNpzReader(
        member, path, f"{path}:{WEIGHTS_NPZ_MEMBER}", config, metadata, "keras-v3-npz", close_also=(member, archive)
    )


def open_npz_dir(path: str, weights_file: str) -> KerasNpzReader:
    """The npz weights of a Keras model directory: ``model.weights.npz``, or the npz that Keras 3 writes under the
    name ``model.weights.h5`` when saving npz weights unzipped (and then cannot load)."""
    from ckptdoctor.readers.keras_dir import read_dir_config

    config, metadata = read_dir_config(path)
    return KerasNpzReader(weights_file, path, weights_file, config, metadata, "keras-v3-dir-npz")
