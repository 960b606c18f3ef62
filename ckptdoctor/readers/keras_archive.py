"""Keras 3 ``.keras`` archives read with zipfile and h5py: ``config.json`` plus ``model.weights.h5``.

Nothing in the archive is executed: the config is parsed as JSON, the weights are
read as HDF5 straight from the zip member (no extraction to disk).

Nothing the archive declares is trusted before it is checked (``limits``): every member's
stored bytes must lie inside the archive and inflate at most ``MAX_EXPANSION`` times;
``config.json`` and ``metadata.json`` may declare at most ``MAX_JSON_BYTES`` and no more is
read, whatever their headers say; ``model.weights.h5`` must start with the HDF5 signature
(Keras writes it at offset 0), checked on its first bytes before h5py sees it. A stored
(uncompressed) weights member, as Keras writes it, is read through a window onto the archive
file, so h5py's seeks cost nothing and nothing is inflated; its CRC-32 is checked once while
opening. A compressed one is inflated once into an unnamed temporary file. Either way its HDF5
heaps and variable-length values are checked (``hdf5_raw``) before h5py reads them.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
import zlib
from typing import Any

from ckptdoctor.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptdoctor.readers.hdf5_raw import HDF5_SIGNATURE, RawHDF5
from ckptdoctor.readers.keras_h5 import KerasH5Reader
from ckptdoctor.readers.limits import (
    MAX_JSON_BYTES,
    ZIP_ERRORS,
    LimitExceeded,
    check_zip_member,
    load_json,
    read_zip_member,
    stored_member_start,
)

__all__ = [
    "KerasArchiveReader",
    "is_keras_archive",
    "stored_window",
    "CONFIG_MEMBER",
    "WEIGHTS_MEMBER",
    "METADATA_MEMBER",
]

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
_CRC_STEP = 1 << 20


def is_keras_archive(path: str) -> bool:
    """Whether ``path`` is a zip holding a Keras ``config.json``."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return CONFIG_MEMBER in zf.NameToInfo
    except ZIP_ERRORS:
        return False


class _Window(io.RawIOBase):
    """A read-only file object over ``[start, start + size)`` of an open file (a stored zip member)."""

    def __init__(self, path: str, start: int, size: int):
        self._file = open(path, "rb")  # noqa: SIM115  (closed by close())
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence not in (0, 1, 2):
            raise ValueError(f"invalid whence {whence}")
        self._pos = max(0, (0, self._pos, self._size)[whence] + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(memoryview(buffer)[:n])
        self._pos += got or 0
        return got or 0

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def stored_window(path: str, start: int, size: int) -> io.RawIOBase:
    """A read-only file object over the ``size`` bytes at ``start`` of ``path`` (a stored member), for h5py;
    nothing is checked: the caller has checked those bytes."""
    return _Window(path, start, size)


def _stored_window(path: str, info: zipfile.ZipInfo, start: int) -> tuple[_Window, RawHDF5]:
    """A window onto a stored member's bytes and their ``RawHDF5``, after checking the member's CRC-32."""
    with open(path, "rb") as f:
        f.seek(start)
        crc, left = 0, info.file_size
        while left:
            block = f.read(min(_CRC_STEP, left))
            if not block:
                raise LimitExceeded(f"member {info.filename} is truncated")
            crc = zlib.crc32(block, crc)
            left -= len(block)
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return _Window(path, start, info.file_size), RawHDF5.open(path, start, start + info.file_size)


def _extracted(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Any, RawHDF5]:
    """A compressed member inflated once into an unnamed temporary file (its inflated size was checked):
    h5py then seeks in a file, not through zipfile (which re-inflates from the start at every seek back)."""
    tmp = tempfile.TemporaryFile()  # noqa: SIM115  (returned open; closed with the reader)
    try:
        with zf.open(info) as member:
            shutil.copyfileobj(member, tmp, _CRC_STEP)
        tmp.flush()
        tmp.seek(0)
        return tmp, RawHDF5.open(tmp)
    except BaseException:
        tmp.close()
        raise


def _open_weights(zf: zipfile.ZipFile, path: str, archive_size: int) -> tuple[Any, RawHDF5]:
    """The weights member as a seekable file object and the ``RawHDF5`` of its bytes, after its sizes and its
    first bytes are checked."""
    info = zf.getinfo(WEIGHTS_MEMBER)
    check_zip_member(info, archive_size)
    with open(path, "rb") as f:
        start = stored_member_start(f, info, archive_size)
        if start is not None:
            f.seek(start)
            head = f.read(len(HDF5_SIGNATURE))
        else:
            with zf.open(info) as member:
                head = member.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise LimitExceeded(
            f"{WEIGHTS_MEMBER} does not start with the HDF5 signature (it starts with {head[:8].hex() or 'nothing'})"
        )
    return _extracted(zf, info) if start is None else _stored_window(path, info, start)


def archive_json(zf: zipfile.ZipFile, path: str, size: int) -> tuple[dict, dict]:
    """A ``.keras`` archive's ``config.json`` and ``metadata.json`` (``{}`` when absent), parsed after every
    member's sizes are checked against the archive (``size`` bytes), so that no later step meets a bomb.

    Raises:
        CorruptCheckpointError: a member's sizes do not fit, a JSON member is unreadable or not an object, or
            there is no ``config.json``.
    """
    for info in zf.infolist():
        try:
            check_zip_member(info, size)
        except LimitExceeded as e:
            raise CorruptCheckpointError(f"{path}: {e}; the archive is damaged or was not written by Keras") from e
    parsed: dict[str, Any] = {}
    for member in (CONFIG_MEMBER, METADATA_MEMBER):
        if member not in zf.NameToInfo:
            parsed[member] = {} if member == METADATA_MEMBER else None
            continue
        try:
            value = load_json(read_zip_member(zf, member, MAX_JSON_BYTES, size), member)
        except (KeyError, *ZIP_ERRORS) as e:
            raise CorruptCheckpointError(
                f"{path}: its {member} cannot be read as JSON ({e}); the archive is damaged or was not written by Keras"
            ) from e
        if not isinstance(value, dict):
            raise CorruptCheckpointError(f"{path}: its {member} is JSON but not an object (a {type(value).__name__})")
        parsed[member] = value
    if parsed[CONFIG_MEMBER] is None:
        raise CorruptCheckpointError(
            f"{path}: it has no {CONFIG_MEMBER}: a .keras file is a zip written by model.save()"
        )
    return parsed[CONFIG_MEMBER], parsed[METADATA_MEMBER]


class KerasArchiveReader(KerasH5Reader):
    """The weights of a ``.keras`` archive, with its config and metadata.

    Attributes:
        model_config: ``config.json`` as a dict.
        metadata: ``metadata.json`` as a dict (``keras_version``, ``date_saved``).
    """

    def __init__(self, path: str):
        try:
            self._zip = zf = zipfile.ZipFile(path)
            size = os.path.getsize(path)
        except ZIP_ERRORS as e:
            raise CorruptCheckpointError(
                f"{path} is not a readable zip archive ({e}): a .keras file is a zip written by model.save()"
            ) from e
        try:
            config, metadata, (fileobj, raw) = self._members(path, size)
        except BaseException:
            zf.close()
            raise
        try:
            super().__init__(path, fileobj=fileobj, label=path, raw=raw)
        except BaseException:
            fileobj.close()
            raw.close()
            zf.close()
            raise
        self.format = "keras-v3"
        self.model_config = config
        self.metadata = metadata
        if isinstance(metadata.get("keras_version"), str):
            self.keras_version = metadata["keras_version"]

    def _members(self, path: str, size: int) -> tuple[dict, dict, tuple[Any, RawHDF5]]:
        """``config.json``, ``metadata.json`` (both checked, parsed JSON) and the weights member, opened."""
        zf = self._zip
        names = zf.namelist()
        config, metadata = archive_json(zf, path, size)
        if WEIGHTS_MEMBER not in zf.NameToInfo:
            other = [n for n in names if "weights" in n]
            raise UnsupportedFormatError(
                f"{path} has no {WEIGHTS_MEMBER} (members: {', '.join(names[:10])}); "
                + ("weights stored as " + other[0] + " are not supported" if other else "it holds no weights")
            )
        try:
            fileobj = _open_weights(zf, path, size)
        except ZIP_ERRORS as e:
            raise CorruptCheckpointError(
                f"{path}: its {WEIGHTS_MEMBER} cannot be read ({e}); the archive is damaged or was not written by Keras"
            ) from e
        return config, metadata, fileobj

    def close(self) -> None:
        """Close the weights and the archive."""
        super().close()
        if getattr(self, "_fileobj", None) is not None:
            self._fileobj.close()
            self._fileobj = None
        z = self.__dict__.pop("_zip", None)
        if z is not None:
            z.close()
