"""The on-disk cache of what Keras said each kind of layer stores (``expect``), one file per Keras version.

Asking Keras means importing it, and TensorFlow with it: seconds, where listing a ResNet50 ``.keras``
takes a fraction of one. So the answers are kept: ``<cache dir>/keras-expect-<version>.json`` maps
``expect``'s cache key of a layer config (the config without its name and wiring) to the weights the
rebuilt layer stores, or to null when Keras built nothing from it. The version is the installed
Keras' (``importlib.metadata``, read without importing Keras): another Keras never reads these
answers, it asks again.

The cache dir is ``$CKPTDOCTOR_CACHE_DIR`` (empty: no cache), else ``$XDG_CACHE_HOME/ckptdoctor``,
else ``~/.cache/ckptdoctor``. The file is a cache, never an input that can fail a run: one that is
missing, unreadable, damaged, of another form or larger than ``MAX_BYTES`` reads as empty, and an
entry of the wrong form is skipped. It is written to a temporary name and renamed, and only when
something new was learnt; a cache dir that cannot be written is left alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

__all__ = ["cache_path", "installed_keras", "load", "save", "MAX_BYTES", "MAX_ENTRIES"]

MAX_BYTES = 32 * 1024 * 1024
MAX_ENTRIES = 20_000
_FORM = "ckptdoctor-keras-expect-1"


def installed_keras() -> str | None:
    """The installed Keras' version (``3.15.1``), read without importing it; None: not installed."""
    import importlib.metadata
    import importlib.util

    try:
        if importlib.util.find_spec("keras") is None:
            return None
        return importlib.metadata.version("keras")
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None


def cache_path(version: str) -> str | None:
    """Where the answers of Keras ``version`` are kept (None: the cache is off)."""
    folder = os.environ.get("CKPTDOCTOR_CACHE_DIR")
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "ckptdoctor")
    if not folder:
        return None
    safe = re.sub(r"[^0-9A-Za-z._+-]", "_", version)[:64]
    return os.path.join(folder, f"keras-expect-{safe}.json")


def _weight(item) -> tuple | None:
    """``[key, name, [dims]]`` as ``(key, name, shape)``; None: not of that form."""
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], str)):
        return None
    dims = item[2]
    if not (isinstance(dims, list) and all(type(d) is int and d >= 0 for d in dims)):
        return None
    return item[0], item[1], tuple(dims)


def _answer(value) -> tuple | None | bool:
    """An entry's value as ``(v3, legacy)`` lists of ``(key, name, shape)``, None (nothing built), or False
    (not of the form: skipped)."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, list) for part in value)):
        return False
    parts = []
    for part in value:
        weights = [_weight(item) for item in part]
        if any(w is None for w in weights):
            return False
        parts.append(tuple(weights))
    return parts[0], parts[1]


def load(version: str) -> dict:
    """The kept answers of Keras ``version``: cache key -> ``(v3, legacy)`` or None. Empty when there are none
    or the file cannot be used."""
    path = cache_path(version)
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return {}
        doc = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return {}
    if not (isinstance(doc, dict) and doc.get("form") == _FORM and doc.get("keras") == version):
        return {}
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        return {}
    out: dict = {}
    for key, value in list(entries.items())[:MAX_ENTRIES]:
        answer = _answer(value)
        if answer is not False:
            out[key] = answer
    return out


def save(version: str, answers: dict) -> None:
    """Keep ``answers`` (cache key -> ``(v3, legacy)`` of ``(key, name, shape)``, or None) for Keras ``version``,
    merged with what the file holds (at most ``MAX_ENTRIES``). Any failure to write is ignored."""
    path = cache_path(version)
    if path is None or not answers:
        return
    merged = load(version)
    merged.update(answers)
    entries = {
        key: None if value is None else [[[k, n, list(s)] for k, n, s in part] for part in value]
        for key, value in list(merged.items())[-MAX_ENTRIES:]
    }
    text = json.dumps({"form": _FORM, "keras": version, "entries": entries}, separators=(",", ":"))
    if len(text) > MAX_BYTES:
        return
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keras-expect-", suffix=".tmp", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
