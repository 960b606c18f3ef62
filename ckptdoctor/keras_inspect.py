"""``inspect`` for Keras files (``.keras``, ``.weights.h5``, legacy ``.h5``), read with zipfile and h5py only.

The model config (``config.json`` of a ``.keras`` archive, the ``model_config``
attribute of a full legacy ``.h5``) plays the graph's part: BN layers are found by
class with their axis and ``trainable`` flag, and weights the config declares but
the file lacks (or the reverse) are reported. A weights-only file may be given its
config with ``--graph model.keras`` (or a config ``.json``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .diagnose import Finding, diagnose_bn
from .errors import CorruptCheckpointError, GraphError, TensorReadError
from .keras_model import describe_keras_file, lambda_layers

__all__ = ["is_keras_file", "open_keras_reader", "inspect_keras", "FROZEN_CODE"]

#: A BN layer frozen (trainable=False) from the start of a model that trained.
FROZEN_CODE = "bn-frozen-untrained"


#: File names Keras writes; a file so named that is not a Keras file is damaged, not a checkpoint.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras_file(path: str) -> bool:
    """Whether ``path`` is a Keras ``.keras`` archive or a Keras HDF5 file.

    Raises:
        CorruptCheckpointError: a file named ``.keras``/``.h5``/``.hdf5`` that is neither
            a zip archive nor HDF5 (truncated, or something else renamed): without this it
            would be read as a TensorFlow checkpoint and fail with a confusing message.
    """
    from .readers.keras_archive import is_keras_archive
    from .readers.keras_h5 import is_keras_h5

    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if is_keras_h5(path) or is_keras_archive(path):
        return True
    if path.lower().endswith(KERAS_SUFFIXES):
        what = "a zip archive with config.json" if path.lower().endswith(".keras") else "an HDF5 file"
        raise CorruptCheckpointError(f"{path} is named like a Keras file but is not {what} (truncated, or another "
                                     "format renamed): save the model again with model.save()")
    return False


def open_keras_reader(path: str):
    """The reader for a Keras file: ``KerasArchiveReader`` for a zip, ``KerasH5Reader`` for HDF5."""
    from .readers.keras_archive import KerasArchiveReader, is_keras_archive
    from .readers.keras_h5 import KerasH5Reader

    return KerasArchiveReader(path) if is_keras_archive(path) else KerasH5Reader(path)


def _config_from(path: str) -> tuple[dict, str | None]:
    """The model config in ``path`` and the Keras version that wrote it (None: not recorded)."""
    if not os.path.isfile(path):
        raise GraphError(f"no model config at {path}: pass --graph with a .keras file, a full .h5 or a config .json")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise GraphError(f"{path} is not a readable JSON model config ({e})") from e
        return config, config.get("keras_version") if isinstance(config, dict) else None
    reader = open_keras_reader(path)
    try:
        if not reader.model_config:
            raise GraphError(f"{path} holds no model config: pass a .keras file, a full .h5 or a config .json")
        return reader.model_config, reader.keras_version
    finally:
        reader.close()


def _expectation_notes(layout, config) -> list[str]:
    """What the layers' weights were checked against (a note, so "not checked" is never silent)."""
    if not config:
        return []
    exp = layout.expectation
    if exp.keras is None or exp.reason:
        return [f"layer weights not checked against {exp.keras or 'Keras'} ({exp.reason}): only what the file "
                "itself names (and BN layers' weights) was checked"]
    notes = [f"layer weights checked against {exp.keras}, which rebuilt {len(exp.layers)} layers from the config"]
    if exp.unchecked:
        shown = "; ".join(f"{path}: {why}" for path, why in exp.unchecked[:3])
        more = f" and {len(exp.unchecked) - 3} more" if len(exp.unchecked) > 3 else ""
        count = f"{len(exp.unchecked)} layer{'s' if len(exp.unchecked) > 1 else ''}"
        notes.append(f"{count} not checked against Keras ({shown}{more})")
    return notes


def _trained(reader, layout) -> bool | None:
    key = layout.iterations_key
    if key is None:
        return None
    try:
        return bool(np.asarray(reader.read(key)).ravel()[0] > 0)
    except (TensorReadError, IndexError):
        return None


def inspect_keras(path: str, graph=None, stats: bool = True, match: str | None = None):
    """Inspect a Keras file; returns an ``InspectReport`` like ``inspection.inspect``."""
    from .inspection import assemble_report, compile_match, list_tensors, read_stat_values

    pattern = compile_match(match)
    reader = open_keras_reader(path)
    try:
        config, keras_version = reader.model_config, reader.keras_version
        config_label = None
        notes: list[str] = []
        if graph not in (None, False, True, ""):
            config, keras_version = _config_from(os.fspath(graph))
            config_label = os.fspath(graph)
        elif config:
            config_label = f"{path} (model config)"
        if graph is False:
            config, config_label = None, None
        if not config:
            notes.append("no model config (weights only): BN layers found by group and weight names; "
                         "pass --graph model.keras (or a config .json) to check against one")
        names = lambda_layers(config)
        if names:
            notes.append(f"Lambda layers ({', '.join(names[:3])}) hold Python code: inspect never runs it; "
                         "repair refuses them unless --unsafe")
        layout = describe_keras_file(reader, config, keras_version, check_with_keras=True)
        notes.extend(_expectation_notes(layout, config))
        entries = reader.entries()
        by_key = {e.name: e for e in entries}
        findings: list[Finding] = []
        unreadable: dict[str, TensorReadError] = {}

        stat_keys = {layer.weights.get(w) for layer in layout.bn_layers for w in ("moving_mean", "moving_variance")}
        values = read_stat_values(reader, stat_keys & set(by_key), unreadable)
        trained = _trained(reader, layout)
        rows, statuses = [], {}
        for layer in layout.bn_layers:
            w = layer.weights
            # A statistic the file lacks is named after the layer, so its finding says which.
            spec = {"layer": layer.name,
                    "moving_mean": w.get("moving_mean") or f"{layer.name}/moving_mean",
                    "moving_variance": w.get("moving_variance") or f"{layer.name}/moving_variance",
                    "gamma": w.get("gamma"), "beta": w.get("beta"), "channels": None}
            row, layer_findings = diagnose_bn(spec, set(by_key), values, from_graph=True)
            rows.append((layer, row, layer_findings))
            statuses[layer.name] = row.status
        any_trained_stats = any(s == "ok" for s in statuses.values())
        bn_rows = []
        for layer, row, layer_findings in rows:
            if row.status == "at-init" and layer.trainable is False and (trained or (trained is None and any_trained_stats)):
                layer_findings = [f for f in layer_findings if f.code != "bn-stats-at-init"]
                layer_findings.append(Finding(
                    FROZEN_CODE, "warning", layer.name, row.moving_mean,
                    f"BN layer {layer.name} is trainable=False and its statistics are at their initial values "
                    "(mean 0, variance 1) in a model that trained: it was frozen from the start, so it normalises "
                    "nothing; set trainable=True before training if it was meant to learn (repair leaves it as "
                    "it is: the model learned with it)",
                ))
            elif row.status != "missing":
                layer_findings = [
                    Finding(f.code, f.severity, f.layer, f.tensor, f.message.replace(
                        "the update ops (UPDATE_OPS) never ran during training; run them with the train op "
                        "(tf.control_dependencies(update_ops))",
                        "they were never updated (the layer never ran in training mode, e.g. frozen or called "
                        "with training=False); train with it in training mode"))
                    for f in layer_findings]
            else:
                layer_findings = [
                    Finding(f.code, f.severity, f.layer, f.tensor, f.message.replace(
                        "save with a Saver over all global variables (not only the trainable ones)",
                        "save the whole model (model.save) rather than a subset of its weights"))
                    for f in layer_findings]
            findings.extend(layer_findings)
            bn_rows.append(row)

        for layer_name, weight, trainable in layout.missing:
            findings.append(Finding(
                "missing-in-checkpoint",
                "error" if trainable or weight.rsplit("/", 1)[-1].startswith("moving_") else "warning",
                layer_name, f"{layer_name}/{weight}",
                f"the config's layer {layer_name} declares {weight}, which the file does not hold: loading "
                "fails or leaves it at its initial value; save the whole model again (model.save)",
            ))
        for key in layout.unexpected:
            findings.append(Finding(
                "unexpected-in-checkpoint", "warning", None, key,
                f"{key} belongs to no layer of the model config: it is ignored or fails on load; check that "
                "the config is the model that wrote these weights",
            ))

        for layer_name, weight, key, want, got in layout.mismatched:
            findings.append(Finding(
                "shape-mismatch", "error", layer_name, key,
                f"{key} ({layer_name}/{weight}) has shape {list(got)}, but the config's layer builds it as "
                f"{list(want)}: loading fails; check that the config is the model that wrote these weights",
            ))

        tensors, listed = list_tensors(
            reader, entries, stats=stats, pattern=pattern, role_of=lambda n: layout.roles.get(n, "weight"),
            in_graph_of=lambda n: (n in layout.config_keys or layout.roles.get(n, "weight") in
                                   ("optimizer_slot", "step", "other")) if config else None,
            unreadable=unreadable,
        )
        return assemble_report(
            checkpoint=os.fspath(path), format=reader.format, graph=config_label, entries=entries,
            tensors=tensors, bn_rows=bn_rows, findings=findings + listed, unreadable=unreadable, notes=notes,
            stats=stats, resolved_from=f"Keras file {path}",
        )
    finally:
        reader.close()
