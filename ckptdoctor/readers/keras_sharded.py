"""Keras 3 sharded weights: ``model.save_weights("w.weights.json", max_shard_size=...)``, read with h5py.

The manifest ``w.weights.json`` is JSON::

    {"metadata": {"total_size": 10904.0},
     "weight_map": {"/layers/dense/vars": ["w_00000.weights.h5"],
                    "/layers/batch_normalization/vars": ["w_00000.weights.h5", "w_00001.weights.h5"], ...}}

and each shard, beside it, is an HDF5 file in the Keras 3 weights layout holding part of the
groups (``layers/<path>/vars/<i>``; one layer's variables may be split over two shards). The
tensors are listed under the names they have in the unsharded ``.weights.h5`` of the same
model, so ``diff w.weights.json w.weights.h5`` compares them name by name.

A shard that is missing or not readable HDF5, or that does not hold a group the manifest puts
in it (or holds data of a group the manifest does not put there), is a ``ShardProblem``. The
reader lists what the readable shards hold only once ``accept_damage`` was called (``inspect``
reports each problem as a finding); otherwise listing fails with one line naming the shard,
since a comparison or a repair needs every tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ckptdoctor.errors import CkptDoctorError, CorruptCheckpointError, TensorReadError
from ckptdoctor.readers.base import DEFAULT_CHUNK_BYTES, TensorEntry
from ckptdoctor.readers.keras_dir import not_weights_reason
from ckptdoctor.readers.keras_h5 import HDF5_SIGNATURE, KerasH5Reader
from ckptdoctor.readers.limits import MAX_JSON_BYTES, load_json

__all__ = ["KerasShardedReader", "ShardProblem", "is_sharded_manifest", "MANIFEST_SUFFIX"]

#: Keras loads sharded weights from a file whose name ends so (and saves them only to ``*.weights.json``).
MANIFEST_SUFFIX = ".weights.json"


def is_sharded_manifest(path: str) -> bool:
    """Whether ``path`` is a file named like a Keras sharded-weights manifest (``*.weights.json``)."""
    return path.endswith(MANIFEST_SUFFIX) and os.path.isfile(path)


class ShardProblem(NamedTuple):
    """A shard the manifest names that cannot be used: which, why, and the groups the manifest puts in it."""

    shard: str
    reason: str
    groups: tuple[str, ...]

    def describe(self, manifest: str) -> str:
        groups = ""
        if self.groups:
            more = f" and {len(self.groups) - 1} more" if len(self.groups) > 1 else ""
            groups = f" (the manifest puts {self.groups[0]}{more} there)"
        return f"shard {self.shard} of {manifest} {self.reason}{groups}"


def _read_manifest(path: str) -> tuple[dict, str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)  # one byte over the limit is enough for load_json to refuse it
        manifest = load_json(raw, "the manifest")
        text = raw.decode("utf-8")
    except (OSError, ValueError) as e:  # limits.LimitExceeded and UnicodeDecodeError are ValueErrors
        raise CorruptCheckpointError(
            f"{path} is not a readable JSON manifest ({e}): Keras sharded weights are saved by "
            "model.save_weights('w.weights.json', max_shard_size=...)"
        ) from e
    weight_map = manifest.get("weight_map") if isinstance(manifest, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, (str, list)) for v in weight_map.values()):
        raise CorruptCheckpointError(
            f"{path} is JSON but not a Keras sharded-weights manifest (no 'weight_map' of group -> shard files)"
        )
    return manifest, text


def _shard_names(path: str, weight_map: dict) -> tuple[list[str], dict[str, list[str]]]:
    """The shards in manifest order, and the groups (``/layers/dense/vars``) the manifest puts in each."""
    groups: dict[str, list[str]] = {}
    for group, files in weight_map.items():
        for shard in [files] if isinstance(files, str) else files:
            if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise CorruptCheckpointError(
                    f"{path} names the shard {shard!r}, which is not a file name beside it: a damaged manifest"
                )
            groups.setdefault(shard, []).append(group)
    return list(groups), groups


class KerasShardedReader:
    """The tensors of a Keras sharded-weights manifest and its shards.

    Attributes:
        manifest: the manifest as a dict; ``manifest_text`` as written.
        shards: the shard file names, in manifest order.
        problems: the shards that cannot be used (``ShardProblem``).
    """

    format = "keras-weights-sharded"
    layout = "v3"
    model_config = None
    keras_version = None

    def __init__(self, path: str):
        self.prefix = path
        self.manifest, self.manifest_text = _read_manifest(path)
        self.shards, groups = _shard_names(path, self.manifest["weight_map"])
        self.groups = groups
        self.problems: list[ShardProblem] = []
        self._strict = True
        self._readers: dict[str, KerasH5Reader] = {}
        self._entries: dict[str, tuple[str, TensorEntry]] = {}
        folder = os.path.dirname(path)
        try:
            for shard in self.shards:
                file = os.path.join(folder, shard)
                if not os.path.isfile(file):
                    self.problems.append(ShardProblem(shard, "is missing", tuple(groups[shard])))
                    continue
                try:
                    self._readers[shard] = KerasH5Reader(file, label=shard, shard=True)
                except CkptDoctorError as e:
                    self.problems.append(ShardProblem(shard, _unreadable(file, shard, e), tuple(groups[shard])))
                    continue
                self._collect(shard)
        except BaseException:
            self.close()
            raise

    def _collect(self, shard: str) -> None:
        reader = self._readers[shard]
        found = reader.entries()
        for entry in found:
            if entry.name in self._entries:
                raise CorruptCheckpointError(
                    f"{self.prefix}: {entry.name} is stored in two shards, {self._entries[entry.name][0]} and "
                    f"{shard}: a damaged set of shards; save the weights again"
                )
            self._entries[entry.name] = (shard, entry)
        mapped = set(self.groups[shard])
        absent = [g for g in self.groups[shard] if not reader.has_group(g)]
        if absent:
            self.problems.append(ShardProblem(shard, f"does not hold {absent[0]}, which the manifest puts there", ()))
        unmapped = sorted({"/" + e.name.rsplit("/", 1)[0] for e in found} - mapped)
        if unmapped:
            self.problems.append(
                ShardProblem(shard, f"holds data of {unmapped[0]}, which the manifest does not put there", ())
            )

    def accept_damage(self) -> list[ShardProblem]:
        """List what the readable shards hold from now on, and return the problems (for findings)."""
        self._strict = False
        return list(self.problems)

    def _check(self) -> None:
        if self._strict and self.problems:
            more = f"; {len(self.problems) - 1} more problem(s)" if len(self.problems) > 1 else ""
            raise CorruptCheckpointError(
                f"{self.problems[0].describe(self.prefix)}{more}: every shard is needed; restore it or save the "
                "weights again (ckptdoctor inspect lists what the other shards hold)"
            )

    # ------------------------------------------------------------------ interface

    def entries(self) -> list[TensorEntry]:
        """Every dataset of every shard, sorted by HDF5 path."""
        self._check()
        return [self._entries[name][1] for name in sorted(self._entries)]

    def shard_of(self, name: str) -> str:
        """The shard file name holding the tensor ``name``."""
        return self._lookup(name)[0]

    def read(self, name: str) -> np.ndarray:
        """The dataset's values with their stored dtype and shape, once its shard's reader has checked them.

        Raises:
            TensorReadError: as ``KerasH5Reader.read``, naming the shard.
        """
        shard, reader = self._lookup(name)
        try:
            return reader.read(name)
        except TensorReadError as e:
            raise TensorReadError(e.code, name, f"{e} (shard {shard})") from e

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Flat chunks of about ``chunk_bytes`` in C order (``KerasH5Reader.iter_chunks``)."""
        shard, reader = self._lookup(name)
        try:
            yield from reader.iter_chunks(name, chunk_bytes)
        except TensorReadError as e:
            raise TensorReadError(e.code, name, f"{e} (shard {shard})") from e

    def close(self) -> None:
        """Close every shard."""
        readers, self._readers = getattr(self, "_readers", {}), {}
        for reader in readers.values():
            reader.close()

    def __enter__(self) -> KerasShardedReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _lookup(self, name: str) -> tuple[str, KerasH5Reader]:
        try:
            shard = self._entries[name][0]
        except KeyError:
            raise KeyError(f"{self.prefix} has no tensor {name!r}") from None
        return shard, self._readers[shard]

    # ------------------------------------------------------------------ Keras structure

    def layer_groups(self) -> list[dict]:
        """The layers the shards store weights for, as ``KerasH5Reader.layer_groups`` gives them for one file: a
        layer split over two shards is one group (its name from whichever shard records it)."""
        merged: dict[str, dict[str, Any]] = {}
        for shard in self.shards:
            if shard not in self._readers:
                continue
            for group in self._readers[shard].layer_groups():
                g = merged.setdefault(group["path"], {"path": group["path"], "name": None, "keys": []})
                g["name"] = g["name"] if g["name"] is not None else group["name"]
                g["keys"].extend(group["keys"])
        for g in merged.values():
            g["keys"].sort(key=_variable_order)
        # The order one file's walk gives: depth first, each group's children by name.
        return sorted(merged.values(), key=lambda g: tuple(g["path"].split("/")) if g["path"] else ())


def _unreadable(file: str, shard: str, error: CkptDoctorError) -> str:
    """Why a shard that ``KerasH5Reader`` refused cannot be used, for a ``ShardProblem``."""
    try:
        with open(file, "rb") as f:
            hdf5 = f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        hdf5 = False
    if hdf5:  # damaged, or hostile: the reader's own words, after the shard's name
        return str(error).removeprefix(f"{shard} ")
    reason = not_weights_reason(file)
    if reason.startswith("is not an HDF5 file"):
        reason = f"is not a readable HDF5 file ({str(error.__cause__ or error).splitlines()[0][:120]})"
    return reason


def _variable_order(key: str) -> tuple:
    leaf = key.rsplit("/", 1)[-1]
    return (0, int(leaf), "") if leaf.isdigit() else (1, 0, leaf)
