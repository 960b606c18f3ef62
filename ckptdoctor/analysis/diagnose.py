"""Diagnosis: findings from a checkpoint's tensors and, when there is one, its graph.

Findings are data. Each has a stable code, a severity, the layer and tensor it
concerns, and a message saying what to do. Codes never change meaning.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING

from ckptdoctor import constants as C

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Finding",
    "Advice",
    "BNLayerStatus",
    "SEVERITIES",
    "CODES",
    "bn_layers_from_names",
    "role_from_name",
    "roles_from_names",
    "diagnose_bn",
    "diagnose_graph",
    "logical_name",
    "FROZEN_CODE",
    "frozen_untrained",
]

SEVERITIES = ("error", "warning", "info")

#: Every finding code, with what it means (documented in the README).
CODES = {
    "bn-stats-missing": "a BN moving mean or variance is not in the checkpoint",
    "bn-stats-at-init": "a BN layer's moving mean is all 0 and variance all 1: the update ops never ran",
    "bn-stats-invalid": "a BN moving variance is negative, or a moving statistic is NaN/Inf",
    "bn-update-ops-unused": "the graph has BN update ops but the train op does not depend on them",
    "missing-in-checkpoint": "a graph variable is not in the checkpoint",
    "unexpected-in-checkpoint": "a checkpoint tensor no graph variable restores",
    "shape-mismatch": "graph and checkpoint disagree on a shape",
    "dtype-mismatch": "graph and checkpoint disagree on a dtype",
    "non-finite": "NaN or Inf in a weight",
    "checksum-mismatch": "a tensor's bytes do not match their stored checksum",
    "tensor-unreadable": "a tensor's bytes cannot be read (a truncated or missing data file, bytes another tensor "
    "already claims, a damaged HDF5 dataset)",
    "shard-unreadable": "Keras sharded weights: a shard the manifest names is missing, is not readable HDF5, or "
    "does not hold what the manifest puts there",
    "tensor-not-stored": "a tensor declares values the file does not hold (HDF5 storage never written, missing "
    "chunks, external or virtual storage, filters inflating more than 100:1): listed, never read",
    "bn-frozen-untrained": "a Keras BN layer frozen from the start (trainable=False) kept its initial statistics",
    "bn-stats-stale": "with --data: a BN layer's stored statistics differ from its input's moments on the data",
    "repair-not-improved": "repair: the new statistics would not bring the inference outputs closer to the "
    "BN-training reference; nothing was written",
}


@dataclass(frozen=True)
class Advice:
    """How a format's users fix what ``diagnose_bn`` finds (TF1 graphs' wording by default).

    Attributes:
        source: what declared a statistic that is missing ("the graph's").
        save: how to save the statistics with the rest.
        update: why statistics are still at their initial values, and how to update them.
    """

    source: str = "the graph's"
    save: str = "save with a Saver over all global variables (not only the trainable ones)"
    update: str = (
        "the update ops (UPDATE_OPS) never ran during training; run them with the train op "
        "(tf.control_dependencies(update_ops))"
    )


@dataclass(frozen=True)
class Finding:
    """One problem found, as data."""

    code: str
    severity: str
    layer: str | None
    tensor: str | None
    message: str


@dataclass(frozen=True)
class BNLayerStatus:
    """A BN layer and the state of its moving statistics.

    status is ``ok``, ``missing`` (neither statistic stored), ``partial`` (one
    stored), ``at-init`` (mean all 0, variance all 1) or ``invalid``.
    """

    layer: str
    moving_mean: str | None
    moving_variance: str | None
    gamma: str | None
    beta: str | None
    channels: int | None
    status: str


def logical_name(key: str) -> str:
    """A TF2 key without its ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix."""
    return key[: -len(C.TF2_VALUE_SUFFIX)] if key.endswith(C.TF2_VALUE_SUFFIX) else key


_BN_ROLES = {
    C.BN_MOVING_MEAN: "bn_moving_mean",
    C.BN_MOVING_VARIANCE: "bn_moving_variance",
    C.BN_GAMMA: "bn_gamma",
    C.BN_BETA: "bn_beta",
}


#: Every match of ``OPTIMIZER_SLOT_PATTERN`` holds one of these; a key holding none cannot match, and
#: testing them first spares the pattern's search (6 us a key: a second on 100,000 tensors).
_OPTIMIZER_SLOT_HINTS = (
    "Ada",
    "Momentum",
    "RMSProp",
    "Ftrl",
    "ExponentialMovingAverage",
    "beta1_power",
    "beta2_power",
    ".OPTIMIZER_SLOT/",
    "optimizer/",
)
#: The same for ``STEP_PATTERN``.
_STEP_HINTS = ("step", "save_counter", "iter")


def _hinted_search(pattern, hints: tuple[str, ...], text: str) -> bool:
    """Whether ``pattern`` is found in ``text``, searched only when ``text`` holds one of ``hints``."""
    for hint in hints:
        if hint in text:
            return pattern.search(text) is not None
    return False


def is_optimizer_slot(key: str) -> bool:
    """Whether ``key`` names optimizer state (``OPTIMIZER_SLOT_PATTERN``, searched only where it can match)."""
    return _hinted_search(C.OPTIMIZER_SLOT_PATTERN, _OPTIMIZER_SLOT_HINTS, key)


def _is_step(name: str) -> bool:
    return _hinted_search(C.STEP_PATTERN, _STEP_HINTS, name)


#: Last names (a trailing newline dropped: ``$`` matches before one) that ``OPTIMIZER_SLOT_PATTERN`` or
#: ``STEP_PATTERN`` may match, and the first three letters of the optimizers' slot names. A key whose logical
#: name ends in none of them, without ``.OPTIMIZER_SLOT/`` and not under ``optimizer/``, matches neither.
_SPECIAL_LEAVES = frozenset(
    {"beta1_power", "beta2_power", "global_step", "save_counter", "iter", "iterations", "step", "VARIABLE_VALUE"}
)
_SLOT_PREFIXES = frozenset({"Ada", "Mom", "RMS", "Ftr", "Exp"})


def role_from_name(key: str, trainable_hint: bool | None = None) -> str:
    """A tensor's role guessed from its name (used only without a graph)."""
    name = key[: -len(C.TF2_VALUE_SUFFIX)] if key.endswith(C.TF2_VALUE_SUFFIX) else key
    leaf = name.rpartition("/")[2]
    # Most keys are none of these: the patterns' anchors say where their words can be (_SPECIAL_LEAVES), which
    # is tested in a few set lookups instead of a search of the key for each word (100,000 keys: 0.04 s).
    last = leaf[:-1] if leaf.endswith("\n") else leaf
    if (
        last in _SPECIAL_LEAVES
        or last[:3] in _SLOT_PREFIXES
        or ".OPTIMIZER_SLOT/" in key
        or key.startswith("optimizer/")
    ):
        if is_optimizer_slot(key):
            return "optimizer_slot"
        if _is_step(name):
            return "step"
    role = _BN_ROLES.get(leaf)
    if role:
        return role
    if key == C.OBJECT_GRAPH_KEY:
        return "other"
    return "weight"


def roles_from_names(keys: Sequence[str]) -> list[str]:
    """``[role_from_name(key) for key in keys]``, a list at a time (100,000 keys: about half the time).

    A key is asked of ``role_from_name`` itself only when one of its tests can hold: its leaf is one of
    ``_SPECIAL_LEAVES`` (or the object graph's key) or starts with a slot prefix, or the key holds a newline,
    ``.OPTIMIZER_SLOT/`` or ``optimizer/``. Each test is first made of all keys at once (a set or a substring
    of the keys joined), and key by key only when it holds somewhere. The others are a BN role or ``weight``.
    """
    keys = list(keys)
    joined = "".join(keys)  # a word found here may span two keys: then each key is tested
    leaves = _leaves(keys, "\0" not in joined)
    roles = list(map(_BN_ROLES.get, leaves, repeat("weight")))
    asked: set[int] = set()
    for leaf in _ASKED_LEAVES.intersection(leaves):  # a TF2 checkpoint's object graph key, its step counter...
        asked.update(_positions(leaves, leaf))
    heads = list(map(_HEAD, leaves))
    for head in _SLOT_PREFIXES.intersection(heads):
        asked.update(_positions(heads, head))
    for word in ("\n", ".OPTIMIZER_SLOT/"):
        if word in joined:
            asked.update(i for i, key in enumerate(keys) if word in key)
    if "optimizer/" in joined:
        asked.update(i for i, key in enumerate(keys) if key.startswith("optimizer/"))
    for i in asked:
        roles[i] = role_from_name(keys[i])
    return roles


def _leaves(keys: list[str], separable: bool) -> list[str]:
    """Each key's last name (``/.ATTRIBUTES/VARIABLE_VALUE`` dropped), as ``role_from_name`` takes it.

    ``separable`` (no key holds a zero character): the suffixes are dropped from the keys joined by zeros, in one
    ``str.replace`` (the suffix and a zero can only be found at a key's end), and split again.
    """
    if separable and keys:
        names = ("\0".join(keys) + "\0").replace(C.TF2_VALUE_SUFFIX + "\0", "\0").split("\0")[:-1]
    else:
        cut = len(C.TF2_VALUE_SUFFIX)
        names = [key[:-cut] if key.endswith(C.TF2_VALUE_SUFFIX) else key for key in keys]
    return list(map(_LAST, map(str.rpartition, names, repeat("/"))))


def _positions(items: list, value) -> Iterator[int]:
    """The positions of ``value`` in ``items``, each found by ``list.index`` (a scan in C, not a loop in Python)."""
    at = -1
    while True:
        try:
            at = items.index(value, at + 1)
        except ValueError:
            return
        yield at


#: Leaves whose key ``roles_from_names`` asks ``role_from_name`` about, and the first three letters of a leaf.
_ASKED_LEAVES = _SPECIAL_LEAVES | {C.OBJECT_GRAPH_KEY}
_HEAD = operator.itemgetter(slice(None, 3))
_LAST = operator.itemgetter(2)


def bn_layers_from_names(keys: list[str]) -> list[dict]:
    """BN layers guessed from tensor names: keys ending in gamma/beta/moving_mean/moving_variance."""
    layers: dict[str, dict] = {}
    fields = {
        C.BN_MOVING_MEAN: "moving_mean",
        C.BN_MOVING_VARIANCE: "moving_variance",
        C.BN_GAMMA: "gamma",
        C.BN_BETA: "beta",
    }
    for key in keys:
        if is_optimizer_slot(key):
            continue
        name = logical_name(key)
        if "/" not in name:
            continue
        scope, leaf = name.rsplit("/", 1)
        if leaf in fields:
            layers.setdefault(scope, {"layer": scope})[fields[leaf]] = key
    # A layer needs moving statistics or both gamma and beta to count as BN.
    return [
        {"moving_mean": None, "moving_variance": None, "gamma": None, "beta": None, **layer}
        for scope, layer in sorted(layers.items())
        if "moving_mean" in layer or "moving_variance" in layer or ("gamma" in layer and "beta" in layer)
    ]


def diagnose_bn(
    layer: dict, present: set[str], values: dict[str, np.ndarray], from_graph: bool, advice: Advice = Advice()
) -> tuple[BNLayerStatus, list[Finding]]:
    """Status and findings of one BN layer.

    Args:
        layer: dict with ``layer``, ``moving_mean``, ``moving_variance``, ``gamma``,
            ``beta`` (expected keys or None) and optionally ``channels``.
        present: keys stored in the checkpoint.
        values: values of the moving statistics that are stored and readable.
        from_graph: whether the layer came from the graph (affects messages only).
        advice: the format's wording of what to do.
    """
    import numpy as np

    name = layer["layer"]
    findings: list[Finding] = []
    stats = [(kind, layer.get(kind)) for kind in ("moving_mean", "moving_variance")]
    expected = [(kind, key) for kind, key in stats if key is not None]
    if not from_graph:
        # Without a graph, the stats' names are guessed from gamma/beta's scope.
        base = layer.get("gamma") or layer.get("beta") or ""
        suffix = C.TF2_VALUE_SUFFIX if base.endswith(C.TF2_VALUE_SUFFIX) else ""
        scope = logical_name(base).rsplit("/", 1)[0] if base else name
        expected = [(kind, key or f"{scope}/{kind}{suffix}") for kind, key in stats]
    missing = [(kind, key) for kind, key in expected if key not in present]
    for kind, key in missing:
        how = advice.source if from_graph else "this layer's"
        findings.append(
            Finding(
                "bn-stats-missing",
                "error",
                name,
                key,
                f"{how} {kind.replace('_', ' ')} {key} is not in the checkpoint, so a restore leaves it at its "
                f"initial value and inference-mode outputs are wrong: {advice.save}, or run `ckptdoctor repair` to "
                "compute it from data",
            )
        )
    channels = layer.get("channels")
    for _kind, key in expected:
        if key in values and channels is None:
            channels = int(values[key].size)
    if len(missing) == len(expected):
        status = "missing"
    elif missing:
        status = "partial"
    else:
        status = "ok"
    mean = values.get(layer.get("moving_mean") or "")
    var = values.get(layer.get("moving_variance") or "")
    invalid = []
    for kind, v in (("moving mean", mean), ("moving variance", var)):
        if v is not None and v.dtype.kind in "fc" and not np.isfinite(v).all():
            invalid.append(f"its {kind} holds {int((~np.isfinite(v)).sum())} NaN/Inf values")
    if var is not None and var.dtype.kind == "f" and (var[np.isfinite(var)] < 0).any():
        invalid.append(f"its moving variance has {int((var < 0).sum())} negative values")
    if invalid:
        status = "invalid"
        findings.append(
            Finding(
                "bn-stats-invalid",
                "error",
                name,
                layer.get("moving_variance") or layer.get("moving_mean"),
                f"BN layer {name}: {'; '.join(invalid)}; inference outputs will be NaN or wrong: "
                "run `ckptdoctor repair` to recompute the statistics from data",
            )
        )
    elif mean is not None and var is not None and status == "ok" and _at_init(mean, var):
        status = "at-init"
        findings.append(
            Finding(
                "bn-stats-at-init",
                "error",
                name,
                layer.get("moving_mean"),
                f"BN layer {name}: moving mean is all 0 and moving variance all 1, their initial values: "
                f"{advice.update} or run `ckptdoctor repair` to compute the statistics",
            )
        )
    status_row = BNLayerStatus(
        layer=name,
        moving_mean=layer.get("moving_mean") or dict(expected).get("moving_mean"),
        moving_variance=layer.get("moving_variance") or dict(expected).get("moving_variance"),
        gamma=layer.get("gamma"),
        beta=layer.get("beta"),
        channels=channels,
        status=status,
    )
    return status_row, findings


#: A BN layer frozen (trainable=False) from the start of a model that trained.
FROZEN_CODE = "bn-frozen-untrained"


def frozen_untrained(
    layers: list[tuple[dict, BNLayerStatus, list[Finding]]], trained: bool | None
) -> list[tuple[dict, BNLayerStatus, list[Finding]]]:
    """``diagnose_bn``'s results with ``bn-frozen-untrained`` for frozen layers still at their initial values.

    A layer whose spec says ``trainable`` False, at its initial statistics, in a model
    that trained (``trained``; None: any layer's statistics moved) was frozen from the
    start: the warning replaces its ``bn-stats-at-init`` error.
    """
    if trained is None:
        trained = any(row.status == "ok" for _spec, row, _f in layers)
    out = []
    for spec, row, found in layers:
        if row.status == "at-init" and spec.get("trainable") is False and trained:
            found = [f for f in found if f.code != "bn-stats-at-init"] + [
                Finding(
                    FROZEN_CODE,
                    "warning",
                    row.layer,
                    row.moving_mean,
                    f"BN layer {row.layer} is trainable=False and its statistics are at their initial values "
                    "(mean 0, variance 1) in a model that trained: it was frozen from the start, so it normalises "
                    "nothing; set trainable=True before training if it was meant to learn (repair leaves it as "
                    "it is: the model learned with it)",
                )
            ]
        out.append((spec, row, found))
    return out


def _at_init(mean: np.ndarray, var: np.ndarray) -> bool:
    import numpy as np

    return mean.size > 0 and bool(np.all(mean == 0)) and bool(np.all(var == 1))


def diagnose_graph(
    graph_vars: dict,
    ckpt: dict,
    roles: dict[str, str],
    bn_keys: set[str],
    update_ops_unused: bool | None,
    bn_update_ops: tuple[str, ...],
) -> list[Finding]:
    """Cross-reference findings between a graph's variables and a checkpoint's tensors.

    Args:
        graph_vars: key -> GraphVariable.
        ckpt: key -> TensorEntry.
        roles: key -> role.
        bn_keys: keys of BN moving statistics (reported by ``diagnose_bn`` instead).
        update_ops_unused: whether the train op ignores the BN update ops (None: unknown).
        bn_update_ops: names of those update ops, for the message.
    """
    findings: list[Finding] = []
    if update_ops_unused:
        shown = ", ".join(bn_update_ops[:3]) + (" ..." if len(bn_update_ops) > 3 else "")
        findings.append(
            Finding(
                "bn-update-ops-unused",
                "warning",
                None,
                None,
                f"the graph has {len(bn_update_ops)} BN update ops ({shown}) but nothing in the train op depends on "
                "them, so the moving statistics are never updated: build the train op inside "
                "tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS))",
            )
        )
    for key, var in sorted(graph_vars.items()):
        entry = ckpt.get(key)
        if entry is None:
            if key in bn_keys:
                continue
            role = roles.get(key, "other")
            if var.trainable and role not in ("optimizer_slot", "step"):
                sev, what = "error", "a trainable variable; a restore leaves it at its initial value"
            elif role in ("optimizer_slot", "step"):
                sev, what = "info", f"an {role.replace('_', ' ')}; only needed to resume training"
            else:
                sev, what = "warning", "a non-trainable variable; a restore leaves it at its initial value"
            findings.append(
                Finding(
                    "missing-in-checkpoint",
                    sev,
                    None,
                    key,
                    f"graph variable {key} is not in the checkpoint ({what}): save with a Saver whose var_list "
                    "includes it",
                )
            )
            continue
        if var.shape is not None and tuple(entry.shape) != tuple(var.shape):
            findings.append(
                Finding(
                    "shape-mismatch",
                    "error",
                    None,
                    key,
                    f"{key}: the graph expects shape {list(var.shape)}, the checkpoint holds {list(entry.shape)}: "
                    "the checkpoint was written by a different model; pass the matching --graph",
                )
            )
        if entry.dtype != var.dtype:
            findings.append(
                Finding(
                    "dtype-mismatch",
                    "error",
                    None,
                    key,
                    f"{key}: the graph expects {var.dtype}, the checkpoint holds {entry.dtype}: "
                    "the checkpoint was written by a different model; pass the matching --graph",
                )
            )
    for key in sorted(set(ckpt) - set(graph_vars)):
        if key == C.OBJECT_GRAPH_KEY:
            continue
        findings.append(
            Finding(
                "unexpected-in-checkpoint",
                "warning",
                None,
                key,
                f"checkpoint tensor {key} is restored by no variable of the graph: it is ignored on restore; "
                "check that --graph is the model that wrote this checkpoint",
            )
        )
    return findings
