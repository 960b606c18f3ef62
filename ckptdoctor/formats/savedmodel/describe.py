"""What ``saved_model.pb`` (and ``keras_metadata.pb``) say about the ``variables/`` bundle, for ``inspect``.

The tensors listed are the bundle's (names as stored); the BN layers and the
cross-reference findings come from the SavedModel's object graph (``layout``). A
SavedModel without an object graph (TF1 ``SavedModelBuilder``) is described as a plain
checkpoint: BN layers by the bundle's names.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from ckptdoctor.analysis.diagnose import (
    Advice,
    Finding,
    bn_layers_from_names,
    diagnose_graph,
    logical_name,
    role_from_name,
)
from ckptdoctor.errors import TensorReadError
from ckptdoctor.formats.base import Description, not_checked
from ckptdoctor.formats.savedmodel.layout import (
    BN_WEIGHTS,
    KERAS_METADATA_PB,
    OBJECT_GRAPH_KEY,
    SAVED_MODEL_PB,
    VALUE_SUFFIX,
    VARIABLES_PREFIX,
    describe_saved_model,
)

__all__ = ["describe_saved_model_dir", "SAVEDMODEL_ADVICE"]

#: What SavedModel users do about missing or never-updated statistics.
SAVEDMODEL_ADVICE = Advice(
    source=f"{SAVED_MODEL_PB}'s",
    save="save the model again (model.save / model.export / tf.saved_model.save) so that variables/ holds every "
    "variable",
    update="they were never updated (the layer never ran in training mode, or the model was saved before "
    "training); train with it in training mode before saving",
)


def _trained(reader, variables: dict, by_key: dict) -> bool | None:
    """Whether the optimizer took a step (its iteration counter is above 0); None without one."""
    for key, var in variables.items():
        if key in by_key and var.name.rsplit("/", 1)[-1] in ("iter", "iteration", "iterations") and not var.shape:
            try:
                return bool(np.asarray(reader.read(key)).ravel()[0] > 0)
            except (TensorReadError, IndexError, TypeError):
                return None
    return None


def _savedmodel_findings(findings: list[Finding], variables: dict, label: str) -> list[Finding]:
    """The findings of ``diagnose_graph`` with SavedModel wording."""
    out = []
    for f in findings:
        message = f.message
        var = variables.get(f.tensor or "")
        if f.code == "missing-in-checkpoint" and var is not None:
            what = message.split("(", 1)[1].split(")", 1)[0] if "(" in message else ""
            message = (
                f"the SavedModel declares variable {var.name} ({var.object_path}), stored as {f.tensor}, "
                f"but {label} lacks it ({what}): save the model again"
            )
        elif f.code == "unexpected-in-checkpoint":
            message = (
                f"{label} holds {f.tensor}, which no object of saved_model.pb owns: it is ignored on "
                "load; check that variables/ belongs to this saved_model.pb"
            )
        elif f.code in ("shape-mismatch", "dtype-mismatch"):
            message = message.replace("the graph expects", "saved_model.pb declares").replace(
                "pass the matching --graph", "variables/ belongs to another saved_model.pb"
            )
        out.append(replace(f, message=message) if message != f.message else f)
    return out


def _roles(layout, by_key: dict, specs: list[dict]) -> dict[str, str]:
    """Every key's role, the variables the bundle lacks included (their findings' severity needs it)."""
    bn_role = {spec[a]: "bn_" + a for spec in specs for a in BN_WEIGHTS if spec.get(a)}
    roles = {}
    for key in set(by_key) | set(layout.variables):
        var = layout.variables.get(key)
        role = bn_role.get(key) or role_from_name(key)
        if role == "weight" and var is not None:
            role = role_from_name(var.name + VALUE_SUFFIX)
            if var.slot:
                role = "optimizer_slot"
            elif role == "weight" and not var.trainable:  # metric totals and counts, not weights
                role = "other"
        roles[key] = "other" if key == OBJECT_GRAPH_KEY else role
    return roles


def describe_saved_model_dir(directory: str, reader) -> Description:
    """The ``Description`` of a SavedModel directory's bundle (``reader``)."""
    layout = describe_saved_model(directory, reader)
    by_key = {e.name: e for e in reader.entries()}
    graph_label: str | None = os.path.join(directory, SAVED_MODEL_PB) + (
        f" + {KERAS_METADATA_PB}" if layout.bn_source == KERAS_METADATA_PB else ""
    )
    notes = list(layout.notes)
    if not layout.variables and not layout.bn_layers:
        specs = bn_layers_from_names(list(by_key))
        graph_label = None
    else:
        specs = [dict(layer) for layer in layout.bn_layers]
        notes.append(
            f"BN layers found by {'layer class in ' if layout.bn_source == KERAS_METADATA_PB else ''}"
            f"{layout.bn_source}; {len(layout.variables)} variables declared by {SAVED_MODEL_PB}"
        )
    roles = _roles(layout, by_key, specs)
    findings: list[Finding] = []
    if layout.variables:
        stat_keys = {s[k] for s in specs for k in ("moving_mean", "moving_variance") if s.get(k)}
        checked = {k: e for k, e in by_key.items() if k not in layout.owned}
        findings = diagnose_graph(layout.variables, checked, roles, stat_keys, None, ())
    if graph_label is not None:  # a TF1 SavedModel keeps the TF1 advice (UPDATE_OPS, Saver)
        findings = _savedmodel_findings(findings, layout.variables, os.path.join(directory, VARIABLES_PREFIX))

    def object_path(entry):
        var = layout.variables.get(entry.name)
        path = entry.object_path or (var.object_path if var else None)
        if var is not None and var.name and var.name != logical_name(path or ""):
            return f"{path} ({var.name})" if path else var.name
        return path

    def in_graph(key: str) -> bool | None:
        return None if key == OBJECT_GRAPH_KEY else (key in layout.variables or key in layout.owned)

    return Description(
        graph=graph_label,
        bn_layers=specs,
        role=lambda key: roles.get(key, "other"),
        in_graph=in_graph if layout.variables else not_checked,
        findings=findings,
        notes=notes,
        trained=_trained(reader, layout.variables, by_key),
        advice=SAVEDMODEL_ADVICE if graph_label is not None else Advice(),
        object_path=object_path,
        match_object_paths=True,
        bn_from_names=graph_label is None,
    )
