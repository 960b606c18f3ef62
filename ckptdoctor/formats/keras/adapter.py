"""The Keras adapter: ``.keras`` archives, full legacy ``.h5`` and ``.weights.h5``, read with zipfile and h5py.

Inspect never imports Keras to list or cross-reference (``describe``). Repair loads
the model with Keras' safe mode (Lambda layers are refused before loading unless
``--unsafe``), checks that each BN layer's file key holds the loaded variable's bytes
before anything runs, runs it (``runtime.keras_runner``), and writes a copy of the
file with only the statistics' datasets overwritten (``store``). BN layers at any
depth of nested models are repaired; frozen ones are left as they are.
"""

from __future__ import annotations

import os
import warnings

from ckptdoctor.errors import CkptDoctorError, OutputExistsError, UnsupportedFormatError
from ckptdoctor.formats.base import Description, RepairOptions, Written
from ckptdoctor.formats.keras.describe import describe_keras
from ckptdoctor.formats.keras.files import open_keras_reader
from ckptdoctor.formats.keras.layout import describe_keras_file
from ckptdoctor.formats.keras.store import default_output, write_keras
from ckptdoctor.readers.keras_config import lambda_layers

__all__ = ["KerasFile"]

_LEGACY_ROOT = "model_weights/"


class KerasFile:
    """A Keras file opened for inspect, diff or repair."""

    family = "keras"

    def __init__(self, path: str, graph=None):
        self.path = os.fspath(path)
        self.resolved_from = f"Keras file {self.path}"
        self._graph = graph
        self.reader = open_keras_reader(self.path)
        self.format = self.reader.format
        self.config = self.reader.model_config

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
        if self._graph or options.training or options.feed:
            raise CkptDoctorError(
                "--graph, --training and --feed are for TF1 checkpoints: a Keras file brings its own model; drop them"
            )

    def output_path(self, output: str | None, in_place: bool, force: bool, dry_run: bool) -> str:
        out = self.path if in_place else (output or default_output(self.path))
        if not dry_run and not in_place and os.path.exists(out) and not force:
            raise OutputExistsError(f"{out} exists: pass --force to overwrite it, or choose --output elsewhere")
        return out

    def runner(self, arrays: dict, options: RepairOptions):
        from ckptdoctor.runtime.keras_model import (
            bind_inputs,
            check_loadable,
            check_stored_values,
            frozen_note,
            held_in_inference,
            input_arrays,
            keras_module,
            load_keras_model,
            targets,
            trainable_bn_layers,
            variant_notes,
        )
        from ckptdoctor.runtime.keras_runner import KerasRunner

        path, config = self.path, self.config
        if not config:
            raise UnsupportedFormatError(
                f"{path} holds weights only (no model config): repair needs the model; save it with "
                "model.save('model.keras') (or a full .h5) and repair that"
            )
        code = lambda_layers(config)
        if code and not options.unsafe:
            raise UnsupportedFormatError(
                f"{path} has Lambda layers ({', '.join(code[:3])}) whose Python code would run on load: "
                "pass --unsafe only if you trust the file"
            )
        # The config's layers rebuilt without allocating them (keras_expect): a config whose layers do not
        # fit the stored weights is refused below, before Keras builds (allocates) the whole model from it.
        layout = describe_keras_file(self.reader, config, check_with_keras=True)
        keys = {layer.name: layer.weights for layer in layout.bn_layers}
        names, xs = input_arrays(config, arrays, options.data, options.input)
        check_loadable(config, path)
        if layout.mismatched:
            layer, weight, key, want, got = layout.mismatched[0]
            raise UnsupportedFormatError(
                f"{path}: its config and its weights disagree ({len(layout.mismatched)} weights): {key} ({layer} "
                f"{weight}) is stored as {list(got)} but the config builds {list(want)}; nothing was loaded"
            )
        K, legacy = keras_module(self.reader.keras_version, self.format)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
            model = load_keras_model(K, legacy, path, options.unsafe)
        bns, frozen = trainable_bn_layers(K, model, path)
        for bn in bns:
            if "moving_mean" not in keys.get(bn.name, {}) or "moving_variance" not in keys.get(bn.name, {}):
                raise UnsupportedFormatError(f"the file does not store the moving statistics of BN layer {bn.name}")
        stored = check_stored_values(bns, keys, self.reader.read, path)
        return KerasRunner(
            model,
            bns,
            frozen,
            targets(bns, keys, stored),
            bind_inputs(model, names, xs),
            graph=f"{path} (model config, {'tf-keras' if legacy else 'Keras 3'})",
            held=held_in_inference(K, model),
            notes=frozen_note(frozen) + variant_notes(bns),
        )

    def write(self, replacements: dict, output: str, in_place: bool, force: bool) -> Written:
        return write_keras(self.reader, self.path, output, replacements, in_place)
