"""Writing a repaired checkpoint: temporary folder, verify, then rename into place.

Every tensor of the source is written back with its dtype, shape and bytes,
except those in ``replacements``; new tensors (missing statistics) are added.
The files are written with TensorFlow's own ``SaveV2`` kernel into a hidden
folder beside the output, read back with our reader and compared, and only then
moved into place: data files first, the ``.meta`` next, the ``.index`` last, so a
checkpoint (which is its ``.index``) appears only when everything it needs is
there. A kill at any moment leaves no output or a whole one, plus at most a
``.ckptdoctor-tmp-*`` folder that the next run removes.

Partitioned tensors are written back whole (one entry, same values); TensorFlow
restores partitioned variables from a whole entry.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time

import numpy as np

from ckptdoctor.errors import CkptDoctorError, OutputExistsError
from ckptdoctor.writers.atomic import TMP_MARK

__all__ = [
    "bundle_output_path",
    "checkpoint_files",
    "ensure_writable",
    "write_checkpoint",
    "backup_checkpoint",
    "clean_stale_temporaries",
    "temporary_folder",
    "OWNER_FILE",
]


def checkpoint_files(prefix: str) -> list[str]:
    """The files of the checkpoint at ``prefix`` (index, data shards, meta) that exist."""
    files = [prefix + ".index", prefix + ".meta"] + sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))
    return [f for f in files if os.path.isfile(f)]


def bundle_output_path(prefix: str, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
    """Where a repaired bundle goes: ``prefix`` itself in place, else ``output`` or ``<prefix>-repaired``,
    checked writable (``ensure_writable``) unless nothing will be written there."""
    out = prefix if in_place else (output or prefix + "-repaired")
    if not dry_run and not in_place:
        ensure_writable(out, force)
    return out


def ensure_writable(prefix: str, force: bool) -> None:
    """Refuse an existing output without ``force``; check the folder can be written.

    A checkpoint exists when its ``.index`` does. Data or ``.meta`` files of the
    output prefix without an ``.index`` are what a run killed while renaming left
    behind (the ``.index`` is renamed last); they are removed.
    """
    index = prefix + ".index"
    if os.path.isfile(index) and not force:
        raise OutputExistsError(f"{index} exists: pass --force to overwrite it, or choose --output elsewhere")
    directory = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(directory):
        raise CkptDoctorError(f"the output folder {directory} does not exist: create it or choose --output elsewhere")
    if not os.access(directory, os.W_OK):
        raise CkptDoctorError(f"the output folder {directory} is not writable: choose --output elsewhere")
    if not os.path.isfile(index):
        for leftover in checkpoint_files(prefix):
            with contextlib.suppress(OSError):
                os.remove(leftover)


OWNER_FILE = "owner.pid"


#: A temporary folder without a readable owner file is a killed run's only once it is this old: its maker writes
#: the file just after making the folder, and another run cleaning beside it may look in between.
_OWNERLESS_GRACE_S = 60.0


def _owner_alive(path: str) -> bool:
    try:
        with open(os.path.join(path, OWNER_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        try:
            return time.time() - os.stat(path).st_mtime < _OWNERLESS_GRACE_S
        except OSError:
            return False  # gone already
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(directory: str) -> list[str]:
    """Remove ``.ckptdoctor-tmp-*`` folders whose writing process is gone (killed runs)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(directory), TMP_MARK + "*")):
        if os.path.isdir(path) and not _owner_alive(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def temporary_folder(directory: str) -> str:
    """A hidden ``.ckptdoctor-tmp-*`` folder in ``directory`` that names its writer's pid."""
    path = tempfile.mkdtemp(prefix=TMP_MARK, dir=directory)
    with open(os.path.join(path, OWNER_FILE), "w") as f:
        f.write(str(os.getpid()))
    return path


def _save(tf, prefix: str, names: list[str], values: list[np.ndarray]) -> None:
    tensors = [tf.constant(v) for v in values]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "O":
        return all(x == y for x, y in zip(a.ravel(), b.ravel()))
    return a.tobytes() == b.tobytes()


def write_checkpoint(
    source,
    output: str,
    replacements: dict[str, np.ndarray],
    meta_path: str | None,
    force: bool = False,
    in_place: bool = False,
) -> dict:
    """Write ``source``'s tensors with ``replacements`` to ``output``, verified and atomic.

    Args:
        source: an open ``CheckpointReader``.
        output: the output prefix.
        replacements: key -> new value (new keys are added).
        meta_path: a MetaGraphDef copied to ``output + '.meta'`` (or None).
        force: overwrite an existing output.
        in_place: ``output`` is the source's own prefix: once the new checkpoint is
            verified, the source's files are kept under a backup prefix (hard links
            where possible) and the new files take their place.

    Returns:
        ``{"untouched": n, "updated": m, "backup": prefix or None}``: counts of
        tensors verified bit-identical to the source, and verified equal to their
        replacement.
    """
    from ckptdoctor.readers.bundle import BundleReader
    from ckptdoctor.tfcompat import import_tensorflow

    tf = import_tensorflow()
    if not in_place:
        ensure_writable(output, force)
    directory = os.path.dirname(os.path.abspath(output))
    base = os.path.basename(output)
    clean_stale_temporaries(directory)
    tmpdir = temporary_folder(directory)
    try:
        tmp_prefix = os.path.join(tmpdir, base)
        entries = [e for e in source.entries()]
        names = [e.name for e in entries if e.dtype != "variant"]
        skipped = [e.name for e in entries if e.dtype == "variant"]
        if skipped:
            raise CkptDoctorError(
                f"{source.prefix} holds variant tensors ({skipped[0]}), which cannot be copied "
                "bit for bit; nothing was written"
            )
        values = [replacements[n] if n in replacements else source.read(n) for n in names]
        new = sorted(set(replacements) - set(names))
        names += new
        values += [replacements[n] for n in new]
        try:
            _save(tf, tmp_prefix, names, values)
        except (tf.errors.OpError, ValueError, TypeError) as e:
            raise CkptDoctorError(
                f"cannot write the repaired checkpoint in {directory}: "
                f"{str(e).splitlines()[0]}; check free space and permissions"
            ) from e
        if meta_path:
            shutil.copyfile(meta_path, tmp_prefix + ".meta")
        # Verify before anything becomes visible.
        untouched = updated = 0
        with BundleReader(tmp_prefix) as back:
            stored = {e.name: e for e in back.entries()}
            if set(stored) != set(names):
                raise CkptDoctorError("the written checkpoint does not hold the expected tensors; nothing was kept")
            for name, value in zip(names, values):
                if not _same(np.asarray(value), back.read(name)):
                    raise CkptDoctorError(
                        f"verification failed: {name} does not read back as written; nothing was kept"
                    )
                if name in replacements:
                    updated += 1
                else:
                    untouched += 1
        backup = backup_checkpoint(output) if in_place else None
        _move_into_place(tmp_prefix, output)
        return {"untouched": untouched, "updated": updated, "backup": backup}
    except OSError as e:
        raise CkptDoctorError(
            f"cannot write {output}: {e.strerror or e}; choose a writable place with free space"
        ) from e
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _move_into_place(tmp_prefix: str, output: str) -> None:
    """Rename a verified checkpoint onto ``output``.

    An existing checkpoint there stops being one first (its ``.index`` goes), then
    the data shards and ``.meta`` arrive, then the ``.index``: at every moment the
    prefix is either no checkpoint or a whole one, never new data under an old index.
    """
    files = checkpoint_files(tmp_prefix)
    order = (
        [f for f in files if ".data-" in f]
        + [f for f in files if f.endswith(".meta")]
        + [f for f in files if f.endswith(".index")]
    )
    old_data = set(glob.glob(glob.escape(output) + ".data-*-of-*"))
    with contextlib.suppress(FileNotFoundError):
        os.remove(output + ".index")
    for f in order:
        target = output + f[len(tmp_prefix) :]
        os.replace(f, target)
        old_data.discard(target)
    for stale in old_data:  # shards of an overwritten checkpoint with more shards
        with contextlib.suppress(OSError):
            os.remove(stale)


def backup_checkpoint(prefix: str) -> str:
    """Copy the checkpoint's files to ``<prefix>.backup-<UTC time>`` (hard links when possible)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    backup = f"{prefix}.backup-{stamp}"
    for f in checkpoint_files(prefix):
        target = backup + f[len(prefix) :]
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
    return backup
