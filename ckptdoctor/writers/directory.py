"""A directory written as a copy of another in which some files are rewritten, verified, then renamed into place.

The copy is assembled in a hidden ``.ckptdoctor-tmp-*`` folder beside the output (it names
its writer's pid, so a later run removes it if the writer died). Every file of the source
but the rewritten ones is copied (symlinks followed: a Hugging Face Hub snapshot links its
files into the cache's ``blobs/``; the copy holds their bytes) and compared byte for byte
after the rewrite; the caller writes and verifies the rewritten ones. Only then does the
folder take the output's name. ``in_place`` renames the source to ``<dir>.backup-<UTC
time>`` first; an existing output (``--force``) is moved aside and removed once the new
one is in place.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from ckptdoctor.errors import CkptDoctorError, OutputExistsError

__all__ = ["files_of", "write_directory_copy"]


def _walk(directory: str):
    """``os.walk`` through symlinked folders, each real folder once (a symlink loop ends there)."""
    seen: set[str] = set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        yield root, dirs, names


def files_of(directory: str) -> set[str]:
    """Every file below ``directory`` (through symlinked folders), as paths relative to it."""
    return {os.path.relpath(os.path.join(root, n), directory) for root, _dirs, names in _walk(directory) for n in names}


def _copy_except(source: str, target: str, skip: set[str]) -> None:
    for root, dirs, _names in _walk(source):  # every folder, empty ones (assets/) too
        for d in dirs:
            os.makedirs(os.path.join(target, os.path.relpath(os.path.join(root, d), source)), exist_ok=True)
    for rel in sorted(files_of(source) - skip):
        os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
        try:
            shutil.copyfile(os.path.join(source, rel), os.path.join(target, rel))
        except FileNotFoundError as e:  # a symlink whose target is gone (a Hub cache blob removed)
            raise CkptDoctorError(f"cannot read {os.path.join(source, rel)} ({e.strerror}): nothing was written") from e
        shutil.copymode(os.path.join(source, rel), os.path.join(target, rel))


def _same_bytes(a: str, b: str) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _same_files(source: str, written: str, rewritten: set[str], ignore: set[str]) -> None:
    src = files_of(source) - rewritten
    got = files_of(written) - rewritten - ignore
    if src != got:
        raise CkptDoctorError(
            f"verification failed: the written folder differs in its files ({sorted(src ^ got)[0]}); nothing was kept"
        )
    for rel in sorted(src):
        if not _same_bytes(os.path.join(source, rel), os.path.join(written, rel)):
            raise CkptDoctorError(f"verification failed: {rel} changed; nothing was kept")


def write_directory_copy(
    source: str, out: str, rewritten: set[str], build: Callable[[str], dict], in_place: bool
) -> tuple[dict, str | None]:
    """Write ``out`` as a copy of ``source`` with the files ``rewritten`` (relative paths) written by ``build``.

    Args:
        build: called with the temporary folder once every other file is copied; writes the rewritten
            files there, verifies them, and returns what it counted (``Written``'s numbers).

    Returns:
        ``build``'s result and the backup's path (``in_place``), else None.
    """
    from ckptdoctor.writers.atomic import temporary_name
    from ckptdoctor.writers.bundle import OWNER_FILE, clean_stale_temporaries, temporary_folder

    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CkptDoctorError(f"the output folder {parent} does not exist: create it or choose --output elsewhere")
    if not os.access(parent, os.W_OK):
        raise CkptDoctorError(f"the output folder {parent} is not writable: choose --output elsewhere")
    backup = None
    if in_place:
        backup = f"{os.path.normpath(source)}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        if os.path.lexists(backup):
            raise OutputExistsError(f"{backup} exists: wait a second and run again, or move it away")
    clean_stale_temporaries(parent)
    tmp = temporary_folder(parent)
    try:
        shutil.copymode(source, tmp)  # mkdtemp's 0700 is not the input's mode
        _copy_except(source, tmp, rewritten)
        done = build(tmp)
        _same_files(source, tmp, rewritten, {OWNER_FILE})
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
        return done, backup
    except OSError as e:
        raise CkptDoctorError(f"cannot write {out}: {e.strerror or e}; choose a writable place with free space") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
