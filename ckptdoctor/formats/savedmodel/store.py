"""Writing a repaired SavedModel directory: a copy in which only ``variables/variables.*`` is rewritten.

The bundle is written by ``writers.bundle.write_checkpoint`` from the input bundle's
own tensors with only the moving means and variances replaced; every other file is
copied byte for byte and compared. The directory is assembled in a hidden
``.ckptdoctor-tmp-*`` folder beside the output, verified, and only then renamed into
place.
"""

from __future__ import annotations

import os
import shutil
import time

from ckptdoctor.constants import SAVED_MODEL_VARIABLES
from ckptdoctor.errors import CkptDoctorError, OutputExistsError

__all__ = ["default_output_dir", "write_directory"]


def default_output_dir(path: str) -> str:
    """``saved_model_dir`` -> ``saved_model_dir-repaired``."""
    return os.path.normpath(path) + "-repaired"


def _variables_files(directory: str) -> set[str]:
    """Paths (relative to ``directory``) of the variables bundle's files."""
    folder, base = os.path.split(os.path.join(directory, SAVED_MODEL_VARIABLES))
    if not os.path.isdir(folder):
        return set()
    rel = os.path.relpath(folder, directory)
    return {os.path.join(rel, n) for n in os.listdir(folder) if n == base + ".index" or n.startswith(base + ".data-")}


def _files(directory: str, skip: set[str]) -> set[str]:
    found = set()
    for root, _dirs, names in os.walk(directory):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), directory)
            if rel not in skip:
                found.add(rel)
    return found


def _copy_except_variables(source: str, target: str) -> None:
    """Copy every folder and file of ``source`` into ``target`` but the variables bundle."""
    skip = _variables_files(source)
    for root, dirs, names in os.walk(source):
        rel = os.path.relpath(root, source)
        for d in dirs:
            os.makedirs(os.path.join(target, rel, d), exist_ok=True)
            shutil.copymode(os.path.join(root, d), os.path.join(target, rel, d))
        for n in names:
            if os.path.normpath(os.path.join(rel, n)) not in skip:
                shutil.copy2(os.path.join(root, n), os.path.join(target, rel, n))


def _same_files(source: str, written: str, ignore: set[str]) -> None:
    """Every file of ``source`` outside the bundle is in ``written`` with the same bytes, and nothing else is."""
    src = _files(source, _variables_files(source))
    got = _files(written, _variables_files(written) | ignore)
    if src != got:
        extra = sorted(src ^ got)
        raise CkptDoctorError(
            f"verification failed: the written folder differs in its files ({extra[0]}); nothing was kept"
        )
    for rel in sorted(src):
        a, b = os.path.join(source, rel), os.path.join(written, rel)
        if os.path.getsize(a) != os.path.getsize(b):
            raise CkptDoctorError(f"verification failed: {rel} changed; nothing was kept")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    raise CkptDoctorError(f"verification failed: {rel} changed; nothing was kept")
                if not x:
                    break


def write_directory(source: str, out: str, reader, replacements: dict, in_place: bool) -> tuple[dict, str | None]:
    """Assemble the repaired directory beside ``out``, verify it, rename it into place.

    An existing ``out`` (``--force``) is moved aside first and deleted once the new
    one is in place; ``in_place`` keeps the input as ``<dir>.backup-<UTC time>``.
    """
    from ckptdoctor.writers.atomic import temporary_name
    from ckptdoctor.writers.bundle import OWNER_FILE, clean_stale_temporaries, temporary_folder, write_checkpoint

    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CkptDoctorError(f"the output folder {parent} does not exist: create it or choose --output elsewhere")
    if not os.access(parent, os.W_OK):
        raise CkptDoctorError(f"the output folder {parent} is not writable: choose --output elsewhere")
    backup = None
    if in_place:
        backup = f"{source}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        if os.path.exists(backup):
            raise OutputExistsError(f"{backup} exists: wait a second and run again, or move it away")
    clean_stale_temporaries(parent)
    tmp = temporary_folder(parent)
    try:
        shutil.copymode(source, tmp)  # mkdtemp's 0700 is not the input's mode
        _copy_except_variables(source, tmp)
        written = write_checkpoint(reader, os.path.join(tmp, SAVED_MODEL_VARIABLES), replacements, meta_path=None)
        _same_files(source, tmp, {OWNER_FILE})
        os.remove(os.path.join(tmp, OWNER_FILE))
        if backup is not None:
            os.rename(source, backup)
            os.rename(tmp, source)
        elif os.path.lexists(out):
            old = temporary_name(out)
            os.rename(out, old)
            os.rename(tmp, out)
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(tmp, out)
        return written, backup
    except OSError as e:
        raise CkptDoctorError(f"cannot write {out}: {e.strerror or e}; choose a writable place with free space") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
