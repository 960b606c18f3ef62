"""What a Keras file's model config says about its weights, for ``inspect``.

The config (``config.json`` of a ``.keras`` archive, the ``model_config`` attribute of
a full legacy ``.h5``, or one given with ``--graph``) plays the graph's part: BN
layers are found by class with their ``trainable`` flag, and weights the config
declares but the file lacks (or the reverse) are reported. Without a config (a
weights-only file), BN layers are found by group and weight names.
"""

from __future__ import annotations

import os

import numpy as np

from ckptdoctor.analysis.diagnose import Advice, Finding
from ckptdoctor.errors import TensorReadError
from ckptdoctor.formats.base import Description, not_checked
from ckptdoctor.formats.keras.files import config_from
from ckptdoctor.formats.keras.layout import describe_keras_file
from ckptdoctor.readers.keras_config import lambda_layers

__all__ = ["describe_keras", "KERAS_ADVICE"]

#: What Keras users do about missing or never-updated statistics.
KERAS_ADVICE = Advice(
    save="save the whole model (model.save) rather than a subset of its weights",
    update="they were never updated (the layer never ran in training mode, e.g. frozen or called with "
    "training=False); train with it in training mode",
)


def _expectation_notes(layout, config) -> list[str]:
    """What the layers' weights were checked against (a note, so "not checked" is never silent)."""
    if not config:
        return []
    exp = layout.expectation
    if exp.keras is None or exp.reason:
        return [
            f"layer weights not checked against {exp.keras or 'Keras'} ({exp.reason}): only what the file "
            "itself names (and BN layers' weights) was checked"
        ]
    # The same words whether Keras was asked now or its answers came from the cache: one file inspected
    # twice reads the same.
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


def _config(path: str, reader, graph) -> tuple[dict | None, str | None, str | None, list[str]]:
    """The model config to check against, the Keras version that wrote it, its label, and notes."""
    config, keras_version = reader.model_config, reader.keras_version
    label = None
    notes: list[str] = []
    if graph not in (None, False, True, ""):
        config, keras_version = config_from(os.fspath(graph))
        label = os.fspath(graph)
    elif config:
        label = f"{path} (model config)"
    if graph is False:
        config, label = None, None
    if not config:
        notes.append(
            "no model config (weights only): BN layers found by group and weight names; "
            "pass --graph model.keras (or a config .json) to check against one"
        )
    names = lambda_layers(config)
    if names:
        notes.append(
            f"Lambda layers ({', '.join(names[:3])}) hold Python code: inspect never runs it; "
            "repair refuses them unless --unsafe"
        )
    return config, keras_version, label, notes


def _cross_reference(layout) -> list[Finding]:
    findings = []
    for layer_name, weight, trainable in layout.missing:
        findings.append(
            Finding(
                "missing-in-checkpoint",
                "error" if trainable or weight.rsplit("/", 1)[-1].startswith("moving_") else "warning",
                layer_name,
                f"{layer_name}/{weight}",
                f"the config's layer {layer_name} declares {weight}, which the file does not hold: loading "
                "fails or leaves it at its initial value; save the whole model again (model.save)",
            )
        )
    for key in layout.unexpected:
        findings.append(
            Finding(
                "unexpected-in-checkpoint",
                "warning",
                None,
                key,
                f"{key} belongs to no layer of the model config: it is ignored or fails on load; check that "
                "the config is the model that wrote these weights",
            )
        )
    for layer_name, weight, key, want, got in layout.mismatched:
        findings.append(
            Finding(
                "shape-mismatch",
                "error",
                layer_name,
                key,
                f"{key} ({layer_name}/{weight}) has shape {list(got)}, but the config's layer builds it as "
                f"{list(want)}: loading fails; check that the config is the model that wrote these weights",
            )
        )
    return findings


def _shard_findings(reader) -> list[Finding]:
    """Sharded weights: each shard that cannot be used (missing, not HDF5, not what the manifest says) is an error;
    what the other shards hold is still listed."""
    accept = getattr(reader, "accept_damage", None)
    if accept is None:
        return []
    return [
        Finding(
            "shard-unreadable",
            "error",
            None,
            problem.shard,
            f"{problem.describe(reader.prefix)}: its weights are not listed and the weights cannot be loaded; "
            "restore the shard or save the weights again",
        )
        for problem in accept()
    ]


def describe_keras(path: str, reader, graph=None) -> Description:
    """The ``Description`` of a Keras file, checked against its own config or the one ``graph`` names."""
    damaged = _shard_findings(reader)
    config, keras_version, label, notes = _config(path, reader, graph)
    layout = describe_keras_file(reader, config, keras_version, check_with_keras=True)
    notes.extend(_expectation_notes(layout, config))
    # A statistic the file lacks is named after the layer, so its finding says which.
    specs = [
        {
            "layer": layer.name,
            "moving_mean": layer.weights.get("moving_mean") or f"{layer.name}/moving_mean",
            "moving_variance": layer.weights.get("moving_variance") or f"{layer.name}/moving_variance",
            "gamma": layer.weights.get("gamma"),
            "beta": layer.weights.get("beta"),
            "channels": None,
            "trainable": layer.trainable,
        }
        for layer in layout.bn_layers
    ]

    def in_graph(key: str) -> bool:
        return key in layout.config_keys or layout.roles.get(key, "weight") in ("optimizer_slot", "step", "other")

    return Description(
        graph=label,
        bn_layers=specs,
        role=lambda key: layout.roles.get(key, "weight"),
        in_graph=in_graph if config else not_checked,
        findings=damaged + _cross_reference(layout),
        notes=notes,
        trained=_trained(reader, layout),
        advice=KERAS_ADVICE,
    )
