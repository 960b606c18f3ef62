"""Writing a repaired Keras file or model directory: a copy with only the BN statistics' datasets overwritten.

The new file is a copy of the input in which only the moving-mean and moving-variance
datasets are overwritten with h5py, so every other byte of the weights, and the config
itself, are the input's own. The copy is written under a temporary name beside the
output, read back with our own readers and compared with the input, and only then
renamed into place. A model directory is copied file by file (``writers.directory``):
only ``model.weights.h5`` is rewritten, every other file (``config.json``, ``assets/``, a
Hub repository's ``README.md``) is compared byte for byte. Sharded weights: ``sharded_store``.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from ckptdoctor.errors import CkptDoctorError
from ckptdoctor.formats.base import Written
from ckptdoctor.formats.keras.files import open_keras_reader
from ckptdoctor.readers.keras_archive import CONFIG_MEMBER, WEIGHTS_MEMBER, stored_window
from ckptdoctor.readers.limits import stored_member_start
from ckptdoctor.writers.atomic import atomic_output

__all__ = ["default_output", "write_keras", "write_keras_dir"]

#: Bytes per read when a stored weights member is copied.
_SPLICE_STEP = 4 << 20


def default_output(path: str) -> str:
    """``model.keras`` -> ``model-repaired.keras``; ``w.weights.json`` -> ``w-repaired.weights.json``; ``dir`` ->
    ``dir-repaired``."""
    path = os.path.normpath(path)
    for ext in (".weights.h5", ".weights.json", ".keras", ".hdf5", ".h5"):
        if path.endswith(ext):
            return path[: -len(ext)] + "-repaired" + ext
    return path + "-repaired"


def _copy_with(reader, source: str, target: str, fmt: str, replacements: dict) -> tuple | None:
    """Copy ``source`` (``reader`` is its open reader) to ``target`` with the datasets in ``replacements``
    overwritten.

    A ``.keras`` whose weights member is stored and whose replaced datasets are runs of raw bytes is copied
    byte for byte with those runs spliced in; the plan ``(source, start, size, patches)`` is returned for ``_verify``.
    Anything else goes through h5py (the member extracted to a temporary file) and returns None."""
    import h5py

    def overwrite(h5_path):
        with h5py.File(h5_path, "r+") as f:
            for key, value in replacements.items():
                f[key][...] = value

    if fmt != "keras-v3":
        shutil.copyfile(source, target)
        overwrite(target)
        return None
    with zipfile.ZipFile(source) as zin:
        info = zin.getinfo(WEIGHTS_MEMBER)
        with open(source, "rb") as f:
            start = stored_member_start(f, info, os.fstat(f.fileno()).st_size)
        patches = None if start is None else _patches(reader, replacements, info.file_size)
        plan = None if start is None or patches is None else (source, start, info.file_size, patches)
        weights_tmp = target + ".weights-tmp.h5"
        try:
            with zipfile.ZipFile(target, "w") as zout:
                for member in zin.infolist():
                    if member.filename != WEIGHTS_MEMBER:
                        zout.writestr(member, zin.read(member))
                    elif plan is not None:
                        with open(source, "rb") as f, zout.open(member, "w", force_zip64=True) as out:
                            for block in _spliced(f.fileno(), *plan[1:]):
                                out.write(block)
                    else:
                        with zin.open(member) as src, open(weights_tmp, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        overwrite(weights_tmp)
                        with open(weights_tmp, "rb") as tmp, zout.open(member, "w", force_zip64=True) as out:
                            shutil.copyfileobj(tmp, out)
        finally:
            if os.path.exists(weights_tmp):
                os.remove(weights_tmp)
    return plan


def _patches(reader, replacements: dict, size: int) -> list[tuple[int, bytes]] | None:
    """``(offset, bytes)`` in the weights member for each replacement, sorted; None unless every replaced dataset
    is one run of raw bytes that the replacement fills exactly, in the dataset's own dtype and byte order."""
    patches = []
    for key, value in replacements.items():
        where = reader.contiguous_range(key)
        if where is None:
            return None
        offset, nbytes, dtype, shape = where
        data = np.ascontiguousarray(value, dtype=dtype)
        if data.shape != shape or offset + nbytes > size:
            return None
        patches.append((offset, data.tobytes()))
    patches.sort()
    if any(a + len(d) > b for (a, d), (b, _) in zip(patches, patches[1:])):
        return None
    return patches


def _spliced(fd: int, start: int, size: int, patches: list[tuple[int, bytes]]) -> Iterator[bytes]:
    """The ``size`` bytes at ``start`` of ``fd`` in blocks, each patch's bytes in place of the source's at its
    offset (patches sorted, not overlapping)."""

    def copy(lo: int, hi: int) -> Iterator[bytes]:
        while lo < hi:
            block = os.pread(fd, min(_SPLICE_STEP, hi - lo), start + lo)
            if not block:
                raise CkptDoctorError("the input file was cut short while it was copied; nothing was kept")
            yield block
            lo += len(block)

    at = 0
    for offset, data in patches:
        yield from copy(at, offset)
        yield data
        at = offset + len(data)
    yield from copy(at, size)


def _verify(source_reader, written: str, replacements: dict, plan: tuple | None = None) -> dict:
    """Every tensor of ``written`` equals the source's bytes, or its replacement; the config is the same.

    With a splice ``plan`` (``_copy_with``) the written weights member is compared byte for byte with the
    source's with the patches in place, its CRC-32 with the archive's, and only the replaced tensors are read
    back, with h5py straight from the written member: every other tensor, attribute and group is the source's
    own bytes, so the source's reader already read them. Without a plan the written file is opened with our
    reader and every tensor read back."""
    src = {e.name: e for e in source_reader.entries()}
    updated = sum(1 for name in src if name in replacements)
    counts = {"untouched": len(src) - updated, "updated": updated}
    if plan is not None:
        import h5py

        window = stored_window(written, _same_spliced_bytes(written, plan), plan[2])
        try:
            with h5py.File(window, "r") as back:
                for name in sorted(replacements):
                    _same_tensor(name, replacements[name], back[name][()] if name in back else None)
        finally:
            window.close()
        return counts
    back = open_keras_reader(written)
    try:
        if back.model_config != source_reader.model_config:
            raise CkptDoctorError("verification failed: the written model config differs; nothing was kept")
        if set(src) != {e.name for e in back.entries()}:
            raise CkptDoctorError("verification failed: the written file holds other tensors; nothing was kept")
        for name in sorted(src):
            _same_tensor(
                name, replacements[name] if name in replacements else source_reader.read(name), back.read(name)
            )
        return counts
    finally:
        back.close()


def _same_tensor(name: str, want: np.ndarray, have) -> None:
    have = None if have is None else np.asarray(have)
    same = (
        have is not None
        and want.dtype == have.dtype
        and want.shape == have.shape
        and (want.tobytes() == have.tobytes() if want.dtype.kind != "O" else bool(np.all(want == have)))
    )
    if not same:
        raise CkptDoctorError(f"verification failed: {name} does not read back as intended; nothing was kept")


def _same_spliced_bytes(written: str, plan: tuple) -> int:
    """The written archive's weights member holds exactly the source member's bytes with the patches in place,
    and their CRC-32 is the one the archive records (what Keras' zipfile checks); returns where it starts."""
    source, start, size, patches = plan
    fail = CkptDoctorError(
        f"verification failed: the written {WEIGHTS_MEMBER} is not the copy intended; nothing was kept"
    )
    with zipfile.ZipFile(written) as zw, open(written, "rb") as w, open(source, "rb") as f:
        info = zw.getinfo(WEIGHTS_MEMBER)
        at = stored_member_start(w, info, os.fstat(w.fileno()).st_size)
        if at is None or info.file_size != size:
            raise fail
        first, crc = at, 0
        for block in _spliced(f.fileno(), start, size, patches):
            have = os.pread(w.fileno(), len(block), at)
            if have != block:
                raise fail
            crc = zlib.crc32(have, crc)
            at += len(block)
        if crc != info.CRC:
            raise fail
    return first


def _same_config_bytes(source: str, written: str, fmt: str) -> None:
    if fmt != "keras-v3":
        return
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(written) as b:
        for info in a.infolist():
            if info.filename != WEIGHTS_MEMBER and a.read(info) != b.read(info.filename):
                raise CkptDoctorError(f"verification failed: {info.filename} changed; nothing was kept")
        if CONFIG_MEMBER not in b.namelist():
            raise CkptDoctorError("verification failed: the written archive has no config; nothing was kept")


def write_keras(reader, path: str, out: str, replacements: dict, in_place: bool) -> Written:
    """Write ``path`` with ``replacements`` to ``out`` (``reader`` is the input's), verified, then renamed;
    ``in_place`` keeps the input as ``<path>.backup-<UTC time>``."""
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise CkptDoctorError(f"the output folder {out_dir} does not exist: create it or choose --output elsewhere")
    backup = None
    with atomic_output(out) as tmp:
        plan = _copy_with(reader, path, tmp, reader.format, replacements)
        counts = _verify(reader, tmp, replacements, plan)
        _same_config_bytes(path, tmp, reader.format)
        if in_place:
            backup = f"{path}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            shutil.copy2(path, backup)
    return Written(counts["untouched"], counts["updated"], backup)


def write_keras_dir(reader, path: str, out: str, replacements: dict, in_place: bool) -> Written:
    """Write the model directory ``path`` with ``replacements`` to the directory ``out``: every file copied and
    compared byte for byte but ``model.weights.h5``, whose tensors are verified; ``in_place`` keeps the input as
    ``<dir>.backup-<UTC time>``."""
    from ckptdoctor.readers.keras_dir import WEIGHTS_H5
    from ckptdoctor.writers.directory import write_directory_copy

    def build(tmp: str) -> dict:
        _copy_with(reader, reader.weights_file, os.path.join(tmp, WEIGHTS_H5), "keras-weights-h5", replacements)
        return _verify(reader, tmp, replacements)

    counts, backup = write_directory_copy(path, out, {WEIGHTS_H5}, build, in_place)
    return Written(
        counts["untouched"],
        counts["updated"],
        backup,
        (f"only {WEIGHTS_H5} was rewritten; every other file is the input's own",),
    )
