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

import numpy as np

from ckptdoctor.errors import CkptDoctorError
from ckptdoctor.formats.base import Written
from ckptdoctor.formats.keras.files import open_keras_reader
from ckptdoctor.readers.keras_archive import CONFIG_MEMBER, WEIGHTS_MEMBER
from ckptdoctor.writers.atomic import atomic_output

__all__ = ["default_output", "write_keras", "write_keras_dir"]


def default_output(path: str) -> str:
    """``model.keras`` -> ``model-repaired.keras``; ``w.weights.json`` -> ``w-repaired.weights.json``; ``dir`` ->
    ``dir-repaired``."""
    path = os.path.normpath(path)
    for ext in (".weights.h5", ".weights.json", ".keras", ".hdf5", ".h5"):
        if path.endswith(ext):
            return path[: -len(ext)] + "-repaired" + ext
    return path + "-repaired"


def _copy_with(source: str, target: str, fmt: str, replacements: dict) -> None:
    """Copy ``source`` to ``target`` with the datasets in ``replacements`` overwritten."""
    import h5py

    def overwrite(h5_path):
        with h5py.File(h5_path, "r+") as f:
            for key, value in replacements.items():
                f[key][...] = value

    if fmt != "keras-v3":
        shutil.copyfile(source, target)
        overwrite(target)
        return
    weights_tmp = target + ".weights-tmp.h5"
    try:
        with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
            for info in zin.infolist():
                if info.filename != WEIGHTS_MEMBER:
                    zout.writestr(info, zin.read(info))
                    continue
                with zin.open(info) as src, open(weights_tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                overwrite(weights_tmp)
                with open(weights_tmp, "rb") as tmp, zout.open(info, "w", force_zip64=True) as member:
                    shutil.copyfileobj(tmp, member)
    finally:
        if os.path.exists(weights_tmp):
            os.remove(weights_tmp)


def _verify(source_reader, written: str, replacements: dict) -> dict:
    """Every tensor of ``written`` equals the source's bytes, or its replacement; the config is the same."""
    back = open_keras_reader(written)
    try:
        if back.model_config != source_reader.model_config:
            raise CkptDoctorError("verification failed: the written model config differs; nothing was kept")
        src = {e.name: e for e in source_reader.entries()}
        got = {e.name: e for e in back.entries()}
        if set(src) != set(got):
            raise CkptDoctorError("verification failed: the written file holds other tensors; nothing was kept")
        untouched = updated = 0
        for name in sorted(src):
            want = replacements[name] if name in replacements else source_reader.read(name)
            have = back.read(name)
            same = (
                want.dtype == have.dtype
                and want.shape == have.shape
                and (want.tobytes() == have.tobytes() if want.dtype.kind != "O" else bool(np.all(want == have)))
            )
            if not same:
                raise CkptDoctorError(f"verification failed: {name} does not read back as intended; nothing was kept")
            if name in replacements:
                updated += 1
            else:
                untouched += 1
        return {"untouched": untouched, "updated": updated}
    finally:
        back.close()


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
        _copy_with(path, tmp, reader.format, replacements)
        counts = _verify(reader, tmp, replacements)
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
        _copy_with(reader.weights_file, os.path.join(tmp, WEIGHTS_H5), "keras-weights-h5", replacements)
        return _verify(reader, tmp, replacements)

    counts, backup = write_directory_copy(path, out, {WEIGHTS_H5}, build, in_place)
    return Written(
        counts["untouched"],
        counts["updated"],
        backup,
        (f"only {WEIGHTS_H5} was rewritten; every other file is the input's own",),
    )
