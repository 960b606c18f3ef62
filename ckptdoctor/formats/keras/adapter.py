"""The Keras adapter: ``.keras`` archives (HDF5 or npz weights), Keras 3 model directories, full legacy ``.h5``,
``.weights.h5`` and sharded ``.weights.json``, read with zipfile, numpy's ``.npy`` headers and h5py.

Inspect never imports Keras to list or cross-reference (``describe``). Repair loads
the model with Keras' safe mode (Lambda layers are refused before loading unless
``--unsafe``), or for a weights-only file builds the one ``--graph`` describes and loads
the weights into it; for npz weights, which Keras refuses to unpickle, it builds the model
from the file's config and assigns the values ckptdoctor read (``keras_weights.config_runner``).
It checks that each BN layer's file key holds the loaded variable's bytes before anything
runs, runs it (``runtime.keras_runner``), and writes a copy of the file (directory, shards)
with only the statistics' datasets overwritten (``store``, ``sharded_store``; for npz
weights only the statistics' bytes, ``npz_store``). BN layers at any depth of nested models
are repaired; frozen ones are left as they are.
"""

from __future__ import annotations

import os

from ckptdoctor.errors import CkptDoctorError, OutputExistsError, UnsupportedFormatError
from ckptdoctor.formats.base import Description, RepairOptions, Written
from ckptdoctor.formats.keras.describe import describe_keras
from ckptdoctor.formats.keras.files import open_keras_reader
from ckptdoctor.formats.keras.layout import describe_keras_file
from ckptdoctor.formats.keras.store import default_output, write_keras, write_keras_dir
from ckptdoctor.readers.keras_config import lambda_layers

__all__ = ["KerasFile"]

_LEGACY_ROOT = "model_weights/"
_NPZ_FORMATS = ("keras-v3-npz", "keras-v3-dir-npz")
_SHARDED = "keras-weights-sharded"
_MANIFEST_SUFFIX = ".weights.json"
_WHAT = {
    "keras-v3-dir": "Keras model directory",
    "keras-v3-dir-npz": "Keras model directory (npz weights)",
    "keras-v3-npz": "Keras file (npz weights)",
    _SHARDED: "Keras sharded weights",
}


class KerasFile:
    """A Keras file (or model directory, or sharded weights) opened for inspect, diff or repair."""

    family = "keras"

    def __init__(self, path: str, graph=None):
        self.path = os.path.normpath(os.fspath(path)) if os.path.isdir(path) else os.fspath(path)
        self._graph = graph
        self.reader = open_keras_reader(self.path)
        self.format = self.reader.format
        self.config = self.reader.model_config
        self.resolved_from = f"{_WHAT.get(self.format, 'Keras file')} {self.path}"
        if self.format == _SHARDED:
            n = len(self.reader.shards)
            self.resolved_from += f" ({n} shard{'s' if n != 1 else ''}: {', '.join(self.reader.shards[:3])}"
            self.resolved_from += ", ...)" if n > 3 else ")"

    def close(self) -> None:
        self.reader.close()

    def describe(self) -> Description:
        return describe_keras(self.path, self.reader, self._graph)

    def comparable_name(self, key: str) -> str:
        """A legacy full model's ``model_weights/`` prefix is dropped: it compares with its ``save_weights`` file."""
        if self.reader.layout == "legacy" and key.startswith(_LEGACY_ROOT):
            return key[len(_LEGACY_ROOT) :]
        return key

    # ------------------------------------------------------------------ repair

    def check_repair(self, options: RepairOptions) -> None:
        path = self.path
        if options.training or options.feed:
            raise CkptDoctorError("--training and --feed are for TF1 checkpoints: a Keras model has neither; drop them")
        if self.format == "keras-v3-dir-npz":
            raise UnsupportedFormatError(
                f"{path} is a model directory whose npz weights Keras writes as model.weights.h5 and cannot load "
                "back (it reads that name as HDF5), so a repaired copy could not be loaded either: save the model "
                "with HDF5 weights (the default) or as a zipped .keras, and repair that"
            )
        if self.config:
            if self._graph:
                raise CkptDoctorError(
                    f"--graph is for weights-only files (.weights.h5, .weights.json): {path} brings its own model; "
                    "drop it"
                )
            return
        if self.reader.layout == "legacy":
            raise UnsupportedFormatError(
                f"{path} holds weights only, in the legacy tf-keras layout (save_weights to .h5), which repair does "
                "not rewrite: save the whole model with model.save() and repair that"
            )
        if not self._graph:
            raise UnsupportedFormatError(
                f"{path} holds weights only (no model config): pass --graph with the model they belong to (a .keras "
                "file, a model config .json or a package.module:function factory), or save the whole model with "
                "model.save('model.keras') and repair that"
            )

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        out = self.path if in_place else os.path.normpath(output) if output else default_output(self.path)
        if self.format == _SHARDED and not out.endswith(_MANIFEST_SUFFIX):
            raise CkptDoctorError(
                f"--output {out}: sharded weights are written as a manifest named *{_MANIFEST_SUFFIX} (the name "
                "Keras loads them from) with its shards beside it"
            )
        several = self.format == _SHARDED or os.path.isdir(self.path)  # a directory, or a manifest and its shards
        here, there = os.path.abspath(self.path), os.path.abspath(out)
        if several and not in_place and there == here:
            raise CkptDoctorError(
                f"--output is the input {self.path} itself: pass --in-place to replace it (keeping a backup)"
            )
        if os.path.isdir(self.path) and there.startswith(here + os.sep):
            raise CkptDoctorError(
                f"--output {out} is inside the input directory {self.path}: choose --output elsewhere"
            )
        if not dry_run and not in_place and os.path.lexists(out) and not force:
            raise OutputExistsError(f"{out} exists: pass --force to overwrite it, or choose --output elsewhere")
        return out

    def runner(self, arrays: dict, options: RepairOptions):
        if not self.config:
            from ckptdoctor.runtime.keras_weights import weights_runner

            return weights_runner(
                os.fspath(self._graph),
                self.path,
                {e.name: tuple(e.shape) for e in self.reader.entries()},
                arrays,
                data=options.data,
                input=options.input,
                unsafe=options.unsafe,
                read=self.reader.read,
            )
        from ckptdoctor.runtime.keras_runner import load_runner

        path, config = self.path, self.config
        # The config's layers rebuilt without allocating them (keras_expect): a config whose layers do not
        # fit the stored weights is refused here, before Keras builds (allocates) the whole model from it.
        layout = describe_keras_file(self.reader, config, check_with_keras=True)
        if layout.mismatched:
            layer, weight, key, want, got = layout.mismatched[0]
            raise UnsupportedFormatError(
                f"{path}: its config and its weights disagree ({len(layout.mismatched)} weights): {key} ({layer} "
                f"{weight}) is stored as {list(got)} but the config builds {list(want)}; nothing was loaded"
            )
        keys = {layer.name: layer.weights for layer in layout.bn_layers}
        if self.format in _NPZ_FORMATS:  # Keras refuses its own pickled npz members: ckptdoctor's values go in
            from ckptdoctor.runtime.keras_weights import config_runner

            return config_runner(
                path,
                config,
                lambda_layers(config),
                {e.name: tuple(e.shape) for e in self.reader.entries()},
                arrays,
                data=options.data,
                input=options.input,
                unsafe=options.unsafe,
                read=self.reader.read,
                graph=f"{path} (model config, {{keras}})",
            )

        def keys_of(bns: list) -> dict:
            for bn in bns:
                if "moving_mean" not in keys.get(bn.name, {}) or "moving_variance" not in keys.get(bn.name, {}):
                    raise UnsupportedFormatError(f"the file does not store the moving statistics of BN layer {bn.name}")
            return keys

        return load_runner(
            path,
            config,
            lambda_layers(config),
            self.reader.keras_version,
            self.format,
            arrays,
            data=options.data,
            input=options.input,
            unsafe=options.unsafe,
            keys_of=keys_of,
            read=self.reader.read,
            graph=f"{path} (model config, {{keras}})",
        )

    def write(self, replacements: dict, output: str, in_place: bool, force: bool) -> Written:
        if self.format == _SHARDED:
            from ckptdoctor.formats.keras.sharded_store import write_sharded

            return write_sharded(self.reader, self.path, output, replacements, in_place)
        if self.format == "keras-v3-dir":
            return write_keras_dir(self.reader, self.path, output, replacements, in_place)
        if self.format == "keras-v3-npz":
            from ckptdoctor.formats.keras.npz_store import write_keras_npz

            return write_keras_npz(self.reader, self.path, output, replacements, in_place)
        return write_keras(self.reader, self.path, output, replacements, in_place)
