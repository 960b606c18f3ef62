"""Turn what the user typed into a checkpoint prefix.

Accepted: a prefix (``model.ckpt``, ``model.ckpt-1000``), any file of the
checkpoint (``.index``, ``.data-00000-of-00001``, ``.meta``), a directory
holding a ``checkpoint`` state file (its latest checkpoint is used), or a
SavedModel directory (its ``variables/variables`` bundle).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ckptdoctor.errors import CheckpointNotFoundError, CorruptCheckpointError

__all__ = ["ResolvedCheckpoint", "resolve_checkpoint", "read_state_file"]

_DATA_SUFFIX = re.compile(r"\.data-\d{5,}-of-\d{5,}$")
#: A state file names a few checkpoints in a few lines; more than this is not one (it is never read further).
_STATE_FILE_CAP = 1 << 20
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a checkpoint is, and how we found it.

    Attributes:
        prefix: the checkpoint prefix (``dir/model.ckpt``).
        kind: ``v2`` (``prefix.index`` exists) or ``v1`` (``prefix`` is a file).
        how: one line saying how the argument was resolved.
    """

    prefix: str
    kind: str
    how: str


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def read_state_file(directory: str) -> str:
    """The latest checkpoint prefix named by ``directory/checkpoint``.

    Relative paths are joined onto ``directory`` (TF2 writes them relative, the
    TF1 Saver absolute). When an absolute path no longer exists (the folder was
    moved), its base name inside ``directory`` is tried.
    """
    path = os.path.join(directory, "checkpoint")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(_STATE_FILE_CAP + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"cannot read the state file {path}: {e}") from e
    if len(text) > _STATE_FILE_CAP:
        raise CorruptCheckpointError(
            f"the state file {path} is larger than {_STATE_FILE_CAP >> 20} MiB, not one TensorFlow wrote "
            "(a few lines): pass a checkpoint prefix instead"
        )
    lines = text.splitlines()
    for line in lines:
        m = _STATE_LINE.match(line)
        if m:
            named = _unescape(m.group(1))
            candidate = named if os.path.isabs(named) else os.path.join(directory, named)
            if not _exists(candidate) and os.path.isabs(named):
                moved = os.path.join(directory, os.path.basename(named))
                if _exists(moved):
                    return moved
            return candidate
    raise CorruptCheckpointError(
        f"the state file {path} names no model_checkpoint_path: pass a checkpoint prefix instead"
    )


def _exists(prefix: str) -> bool:
    return os.path.isfile(prefix + ".index") or os.path.isfile(prefix)


def _strip_file_suffix(path: str) -> str | None:
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    if _DATA_SUFFIX.search(path):
        return _DATA_SUFFIX.sub("", path)
    return None


def _near_misses(prefix: str) -> list[str]:
    directory = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = sorted(
        os.path.join(os.path.dirname(prefix), n[: -len(".index")])
        for n in names
        if n.endswith(".index") and (not base or n.startswith(base.split("-")[0]))
    )
    return found[:5]


def resolve_checkpoint(path: str) -> ResolvedCheckpoint:
    """Find the checkpoint that ``path`` names.

    Raises:
        CheckpointNotFoundError: nothing there is a checkpoint; the message lists
            checkpoints nearby when there are some.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        saved_model_vars = os.path.join(path, "variables", "variables")
        if os.path.isfile(saved_model_vars + ".index"):
            return ResolvedCheckpoint(saved_model_vars, "v2", f"the variables of the SavedModel {path}")
        if os.path.isfile(os.path.join(path, "checkpoint")):
            prefix = read_state_file(path)
            if not _exists(prefix):
                raise CheckpointNotFoundError(
                    f"{os.path.join(path, 'checkpoint')} names {prefix}, which does not exist: "
                    "pass the prefix of a checkpoint that is there"
                )
            return ResolvedCheckpoint(
                prefix, _kind(prefix), f"latest checkpoint in {path} (from its 'checkpoint' file)"
            )
        indexes = sorted(n for n in os.listdir(path) if n.endswith(".index"))
        if len(indexes) == 1:
            prefix = os.path.join(path, indexes[0][: -len(".index")])
            return ResolvedCheckpoint(prefix, "v2", f"the only checkpoint in {path}")
        if indexes:
            raise CheckpointNotFoundError(
                f"{path} is a directory without a 'checkpoint' state file; it holds {len(indexes)} checkpoints, "
                "pass one prefix"
            )
        raise CheckpointNotFoundError(_unknown_directory(path))
    if os.path.isfile(path + ".index"):
        return ResolvedCheckpoint(path, "v2", f"prefix {path}")
    stripped = _strip_file_suffix(path)
    if stripped is not None and os.path.isfile(stripped + ".index"):
        return ResolvedCheckpoint(stripped, "v2", f"prefix {stripped} (from the file {os.path.basename(path)})")
    if os.path.isfile(path) and stripped is None:
        return ResolvedCheckpoint(path, "v1", f"file {path}")
    near = _near_misses(path)
    hint = f"; checkpoints nearby: {', '.join(near)}" if near else ""
    raise CheckpointNotFoundError(
        f"no checkpoint at {path}: expected a prefix such as model.ckpt (with model.ckpt.index beside it), "
        f"one of its files, or a directory with a 'checkpoint' file{hint}"
    )


#: What a directory may be, for the message about one that is none of them.
ACCEPTED_DIRECTORIES = (
    "a TF checkpoint directory (a 'checkpoint' state file, or one <prefix>.index)",
    "a SavedModel (saved_model.pb, variables/)",
    "a Keras model directory (config.json, model.weights.h5)",
)


def _unknown_directory(path: str) -> str:
    """One line: what the directory holds, and what ckptdoctor reads."""
    try:
        names = sorted(n + ("/" if os.path.isdir(os.path.join(path, n)) else "") for n in os.listdir(path))
    except OSError:
        names = []
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    files = [n for n in names if n.endswith((".keras", ".h5", ".hdf5", ".weights.json"))]
    hint = f"; to read one of its files, pass it ({os.path.join(path, files[0])})" if files else ""
    return (
        f"{path} is a directory that holds no format ckptdoctor reads (it contains {shown or 'nothing'}): "
        f"pass {', '.join(ACCEPTED_DIRECTORIES)}, or a file (a checkpoint prefix or its .index, .keras, .h5, "
        f".weights.h5, .weights.json){hint}"
    )


def _kind(prefix: str) -> str:
    return "v2" if os.path.isfile(prefix + ".index") else "v1"
