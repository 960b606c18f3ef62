"""Writing a repaired npz-weights ``.keras``: a copy in which only the statistics' bytes are overwritten, in place.

Keras' npz weights pickle each layer's variables (``readers.npz_pickle``). Re-pickling them
would need Keras and TensorFlow objects (and would change every byte of the metadata Keras
pickles with each variable), so the copy is made at the byte level instead: each member of
the archive and of its ``model.weights.npz`` is copied as it is, except that in the members
holding BN statistics the bytes of each statistic's array (where the restricted unpickler
found them) are replaced by the new values' bytes, of the same dtype, shape and order, hence
the same length. Every pickle therefore stays what Keras wrote, save those values. The copy is
written under a temporary name, read back with our own reader, compared with the input member by
member (byte for byte outside the replaced ranges), and only then renamed.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
import zipfile

import numpy as np

from ckptdoctor.errors import CkptDoctorError
from ckptdoctor.formats.base import Written
from ckptdoctor.formats.keras.store import _verify
from ckptdoctor.readers.keras_npz import WEIGHTS_NPZ_MEMBER
from ckptdoctor.writers.atomic import atomic_output

__all__ = ["write_keras_npz"]


def _patches(reader, replacements: dict) -> dict[str, list[tuple[int, bytes]]]:
    """Inner member -> [(offset, new bytes)] for every replaced tensor, checked against what is stored."""
    stored = {e.name: e for e in reader.entries()}
    out: dict[str, list[tuple[int, bytes]]] = {}
    for key, value in sorted(replacements.items()):
        member, offset, nbytes = reader.leaf_location(key)
        value = np.asarray(value)
        dtype = np.dtype(stored[key].dtype)
        if value.shape != tuple(stored[key].shape) or value.dtype != dtype:
            raise CkptDoctorError(
                f"{key}: the new value is {value.dtype} {list(value.shape)} but the file stores "
                f"{dtype} {list(stored[key].shape)}; nothing was written"
            )
        data = value.tobytes(order="F" if reader.is_fortran(key) else "C")
        if len(data) != nbytes:
            raise CkptDoctorError(f"{key}: {len(data)} new bytes for {nbytes} stored; nothing was written")
        out.setdefault(member, []).append((offset, data))
    for member, spans in out.items():
        spans.sort()
        for (a, da), (b, _) in zip(spans, spans[1:]):
            if a + len(da) > b:
                raise CkptDoctorError(f"{member}: two statistics share stored bytes; nothing was written")
    return out


def _copy_member(zin: zipfile.ZipFile, info: zipfile.ZipInfo, zout: zipfile.ZipFile) -> None:
    with zin.open(info) as src, zout.open(copy.copy(info), "w", force_zip64=True) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _write_npz(source, target: str, patches: dict) -> None:
    """The npz ``source`` (a file object) copied to ``target`` with ``patches`` applied."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            if info.filename not in patches:
                _copy_member(zin, info, zout)
                continue
            data = bytearray(zin.read(info))  # a pickled member: read whole by the reader already (bounded)
            for offset, new in patches[info.filename]:
                data[offset : offset + len(new)] = new
            with zout.open(copy.copy(info), "w", force_zip64=True) as dst:
                dst.write(bytes(data))


def _copy_archive(path: str, target: str, patches: dict) -> None:
    npz_tmp = target + ".weights-tmp.npz"
    try:
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(target, "w") as zout:
            for info in zin.infolist():
                if info.filename != WEIGHTS_NPZ_MEMBER:
                    _copy_member(zin, info, zout)
                    continue
                with zin.open(info) as npz:
                    _write_npz(npz, npz_tmp, patches)
                with open(npz_tmp, "rb") as tmp, zout.open(copy.copy(info), "w", force_zip64=True) as member:
                    shutil.copyfileobj(tmp, member, 1 << 20)
    finally:
        if os.path.exists(npz_tmp):
            os.remove(npz_tmp)


def _same_bytes_but(path: str, written: str, patches: dict) -> None:
    """Every member of both zips (the archive, its npz) is the input's bytes, outside the replaced ranges."""

    def compare(a: zipfile.ZipFile, b: zipfile.ZipFile, where: str, inner: bool) -> None:
        if a.namelist() != b.namelist():
            raise CkptDoctorError(f"verification failed: {where} holds other members; nothing was kept")
        for info in a.infolist():
            if not inner and info.filename == WEIGHTS_NPZ_MEMBER:
                with (
                    a.open(info) as fa,
                    b.open(info.filename) as fb,
                    zipfile.ZipFile(fa) as na,
                    zipfile.ZipFile(fb) as nb,
                ):
                    compare(na, nb, WEIGHTS_NPZ_MEMBER, True)
                continue
            old, new = bytearray(a.read(info)), bytearray(b.read(info.filename))
            for offset, data in patches.get(info.filename, []) if inner else []:
                old[offset : offset + len(data)] = data
            if old != new:
                raise CkptDoctorError(f"verification failed: {where} member {info.filename} changed; nothing was kept")

    with zipfile.ZipFile(path) as a, zipfile.ZipFile(written) as b:
        compare(a, b, path, False)


def write_keras_npz(reader, path: str, out: str, replacements: dict, in_place: bool) -> Written:
    """Write the npz-weights archive ``path`` with ``replacements`` to ``out`` (``reader`` is the input's),
    verified, then renamed; ``in_place`` keeps the input as ``<path>.backup-<UTC time>``."""
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise CkptDoctorError(f"the output folder {out_dir} does not exist: create it or choose --output elsewhere")
    patches = _patches(reader, replacements)
    backup = None
    with atomic_output(out) as tmp:
        _copy_archive(path, tmp, patches)
        counts = _verify(reader, tmp, replacements)
        _same_bytes_but(path, tmp, patches)
        if in_place:
            backup = f"{path}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            shutil.copy2(path, backup)
    return Written(
        counts["untouched"],
        counts["updated"],
        backup,
        (
            f"only the statistics' bytes in {WEIGHTS_NPZ_MEMBER} were rewritten; every other byte of its pickles is "
            "the input's own",
        ),
    )
