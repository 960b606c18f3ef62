"""Writing repaired sharded Keras weights: a new manifest and new shards, only the BN statistics' datasets changed.

Each shard is copied and only the moving-mean and moving-variance datasets it holds are
overwritten with h5py; a shard holding none of them is the input's bytes. The shards keep
their split and order, renamed after the output manifest as Keras names them
(``w-repaired.weights.json`` -> ``w-repaired_00000.weights.h5``, ...), and the manifest is the
input's text with only the shard names replaced. Everything is written into a hidden
``.ckptdoctor-tmp-*`` folder beside the output, read back with our own reader and compared
with the input (every tensor bit-identical or its replacement, every shard without a
replacement byte-identical, the manifest the input's but for the names), then moved into
place: the shards first, the manifest last, so the output manifest never names shards that
are not there. ``in_place`` first keeps every input file as ``<file>.backup-<UTC time>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from ckptdoctor.errors import CkptDoctorError, OutputExistsError
from ckptdoctor.formats.base import Written
from ckptdoctor.readers.keras_sharded import MANIFEST_SUFFIX, KerasShardedReader

__all__ = ["write_sharded", "shard_names"]


def _base(manifest: str) -> str:
    """``dir/w.weights.json`` -> ``w``: the stem Keras names shards after."""
    return os.path.basename(manifest)[: -len(MANIFEST_SUFFIX)]


def shard_names(reader: KerasShardedReader, out: str) -> dict[str, str]:
    """Each input shard's name in the output: ``w_00001.weights.h5`` -> ``w-repaired_00001.weights.h5``."""
    old, new = _base(reader.prefix), _base(out)
    pattern = re.compile(rf"^{re.escape(old)}_(\d+)\.weights\.h5$")
    names = {}
    for shard in reader.shards:
        m = pattern.match(shard)
        names[shard] = f"{new}_{m.group(1)}.weights.h5" if m else f"{new}_{shard}"
    return names


def _manifest_text(reader: KerasShardedReader, names: dict[str, str]) -> str:
    """The input manifest's text with the shard names replaced (its JSON otherwise untouched)."""
    text = reader.manifest_text
    for old, new in names.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    want = json.loads(reader.manifest_text)
    want["weight_map"] = {
        group: ([names[f] for f in files] if isinstance(files, list) else names[files])
        for group, files in want["weight_map"].items()
    }
    if json.loads(text) != want:  # a name that also occurs elsewhere in the text: write the JSON afresh
        text = json.dumps(want, indent=4)
    return text


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


def _verify(reader: KerasShardedReader, manifest: str, names: dict, replacements: dict, touched: set) -> dict:
    """The written manifest and shards read back: every tensor the input's or its replacement."""
    back = KerasShardedReader(manifest)
    try:
        if back.problems:
            raise CkptDoctorError(f"verification failed: {back.problems[0].describe(manifest)}; nothing was kept")
        if [names[s] for s in reader.shards] != back.shards:
            raise CkptDoctorError("verification failed: the written manifest names other shards; nothing was kept")
        src = {e.name: e for e in reader.entries()}
        got = {e.name: e for e in back.entries()}
        if set(src) != set(got):
            raise CkptDoctorError("verification failed: the written shards hold other tensors; nothing was kept")
        untouched = updated = 0
        for name in sorted(src):
            want = replacements[name] if name in replacements else reader.read(name)
            have = back.read(name)
            if want.dtype != have.dtype or want.shape != have.shape or want.tobytes() != have.tobytes():
                raise CkptDoctorError(f"verification failed: {name} does not read back as intended; nothing was kept")
            if back.shard_of(name) != names[reader.shard_of(name)]:
                raise CkptDoctorError(f"verification failed: {name} moved to another shard; nothing was kept")
            updated += name in replacements
            untouched += name not in replacements
    finally:
        back.close()
    folder, tmp = os.path.dirname(reader.prefix), os.path.dirname(manifest)
    for shard in reader.shards:
        if shard not in touched and not _same_bytes(os.path.join(folder, shard), os.path.join(tmp, names[shard])):
            raise CkptDoctorError(f"verification failed: {names[shard]} differs from {shard}; nothing was kept")
    return {"untouched": untouched, "updated": updated}


def _write(reader: KerasShardedReader, tmp: str, names: dict, replacements: dict) -> set[str]:
    """The new shards and manifest in ``tmp``; returns the input shards that hold a replacement."""
    import h5py

    by_shard: dict[str, list[str]] = {}
    for key in replacements:
        by_shard.setdefault(reader.shard_of(key), []).append(key)
    folder = os.path.dirname(reader.prefix)
    for shard in reader.shards:
        target = os.path.join(tmp, names[shard])
        shutil.copyfile(os.path.join(folder, shard), target)
        if shard in by_shard:
            with h5py.File(target, "r+") as f:
                for key in by_shard[shard]:
                    f[key][...] = replacements[key]
    return set(by_shard)


def _old_output_shards(out: str) -> set[str]:
    """The shards an existing output manifest names (replaced with ``--force``), if it can be read."""
    try:
        old = KerasShardedReader(out)
    except CkptDoctorError:
        return set()
    try:
        return set(old.shards)
    finally:
        old.close()


def _keep_backups(reader: KerasShardedReader) -> str:
    """Keep every input file as ``<file>.backup-<UTC time>`` (a hard link where the file system allows)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    folder = os.path.dirname(reader.prefix)
    files = [reader.prefix] + [os.path.join(folder, s) for s in reader.shards]
    for file in files:
        if os.path.lexists(f"{file}.backup-{stamp}"):
            raise OutputExistsError(f"{file}.backup-{stamp} exists: wait a second and run again, or move it away")
    for file in files:
        try:
            os.link(file, f"{file}.backup-{stamp}")
        except OSError:
            shutil.copy2(file, f"{file}.backup-{stamp}")
    return f"{reader.prefix}.backup-{stamp}"


def write_sharded(reader: KerasShardedReader, path: str, out: str, replacements: dict, in_place: bool) -> Written:
    """Write the sharded weights ``path`` with ``replacements`` as the manifest ``out`` and its shards, verified,
    then moved into place (the manifest last)."""
    from ckptdoctor.writers.bundle import clean_stale_temporaries, temporary_folder

    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CkptDoctorError(f"the output folder {parent} does not exist: create it or choose --output elsewhere")
    names = shard_names(reader, out)
    same_folder = os.path.samefile(parent, os.path.dirname(os.path.abspath(path)))
    clash = [n for s, n in names.items() if same_folder and n in reader.shards and n != s]
    if clash and not in_place:
        raise CkptDoctorError(
            f"--output {out}: its shard {clash[0]} would replace another input shard; choose another name"
        )
    stale = _old_output_shards(out) - set(names.values()) - (set(reader.shards) if same_folder else set())
    backup = None
    try:
        clean_stale_temporaries(parent)
        tmp = temporary_folder(parent)
        try:
            touched = _write(reader, tmp, names, replacements)
            manifest = os.path.join(tmp, os.path.basename(out))
            with open(manifest, "w", encoding="utf-8") as f:
                f.write(_manifest_text(reader, names))
            counts = _verify(reader, manifest, names, replacements, touched)
            if in_place:
                backup = _keep_backups(reader)
            for new in names.values():
                os.replace(os.path.join(tmp, new), os.path.join(parent, new))
            os.replace(manifest, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for shard in stale:
            try:
                os.remove(os.path.join(parent, shard))
            except FileNotFoundError:
                pass
    except OSError as e:
        raise CkptDoctorError(f"cannot write {out}: {e.strerror or e}; choose a writable place with free space") from e
    n = len(names)
    return Written(
        counts["untouched"],
        counts["updated"],
        backup,
        (
            f"wrote {out} and its {n} shard{'s' if n != 1 else ''} ({', '.join(list(names.values())[:3])}"
            + (", ...)" if n > 3 else ")")
            + (f"; every input shard kept as <shard>{backup[len(path) :]}" if backup else ""),
        ),
    )
