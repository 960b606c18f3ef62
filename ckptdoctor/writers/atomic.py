"""Write-then-rename: an output either appears whole or not at all.

Temporary names start with ``.ckptdoctor-tmp-`` in the output's own folder, so the
final rename never crosses file systems and a leftover is never mistaken for a
checkpoint or report.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from ckptdoctor.errors import CkptDoctorError

__all__ = ["TMP_MARK", "temporary_name", "atomic_output"]

TMP_MARK = ".ckptdoctor-tmp-"


def temporary_name(path: str) -> str:
    """A fresh hidden name beside ``path``."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TMP_MARK}{secrets.token_hex(4)}-{base}")


@contextlib.contextmanager
def atomic_output(path: str):
    """Yield a temporary path; on success rename it to ``path``, on failure remove it.

    Raises:
        CkptDoctorError: the folder is not writable or the disk is full.
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise CkptDoctorError(f"cannot write {path}: {e.strerror or e}; choose a writable place with free space") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
