"""What a Keras model config says about the weights file beside it (no Keras import).

The config plays the graph's part for Keras files: it names each layer, its class
(so BN layers are found by class, not guessed from names), its axis, whether it is
trainable. This module maps each config layer to the file's weights and reports the
layers and roles ``inspect`` and ``repair`` use. Which weights a layer class stores is
not kept here: ``expect`` asks the Keras that wrote the file (only BN layers'
weights are named from their config, so that they are found without Keras).

Layers inside nested models (a backbone model used as a layer) are named by their
path from the top model, ``backbone/block/bn2``: layer names are unique within one
model only. Where a nested layer's weights are stored:

* Keras 3 layout: ``layers/functional/layers/sequential/layers/batch_normalization/vars/2``;
  each model's group records its name (``vars`` attribute ``name``), which gives the path.
  A layer's own sub-objects sit below its group under their attribute names (an LSTM's
  ``cell/vars/0``, MultiHeadAttention's ``query_dense/vars/0``): they are the layer's weights.
* legacy layout: every weight of a nested model sits in its top-level layer's group under
  the variable's own name, ``model_weights/backbone/bn2/moving_mean:0`` (no models in
  between; tf-keras lists trainable weights first), so the group is split by that name (the
  variable name's first scope: ``lstm/lstm_cell/kernel:0`` belongs to ``lstm``) and each part
  matched to the layer of that name inside the top-level layer's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ckptdoctor.formats.keras.expect import Expectation, expect_weights, legacy_key
from ckptdoctor.readers.keras_config import BN_CLASSES, MODEL_CLASSES, ConfigLayer, config_layers

__all__ = ["KerasLayer", "KerasLayout", "describe_keras_file"]

_OPTIMIZER_ROOTS = ("optimizer", "optimizer_weights", "metrics")
_ITERATION_LEAF = re.compile(r"(^|/)(iter|iteration|iterations)(:0)?$")


@dataclass(frozen=True)
class KerasLayer:
    """A layer of the file: its weights (keys) by role, and what the config says about it."""

    name: str
    class_name: str | None
    path: str
    keys: tuple[str, ...]
    weights: dict  # weight name (gamma, moving_mean...) -> key
    trainable: bool | None = None
    axis: object = None


@dataclass
class KerasLayout:
    """A Keras file's layers, BN layers and cross-reference problems."""

    layers: list[KerasLayer] = field(default_factory=list)
    bn_layers: list[KerasLayer] = field(default_factory=list)
    missing: list[tuple[str, str, bool]] = field(default_factory=list)  # (layer, weight, trainable)
    unexpected: list[str] = field(default_factory=list)
    config_keys: set = field(default_factory=set)  # keys that belong to a config layer
    roles: dict = field(default_factory=dict)
    iterations_key: str | None = None
    has_config: bool = False
    mismatched: list = field(default_factory=list)  # (layer, weight, key, expected shape, stored shape)
    expectation: Expectation = field(default_factory=Expectation)  # what Keras said each layer stores


def _snake(name: str) -> str:
    # Keras' naming.to_snake_case: the group names of the Keras 3 weights layout.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _suffix(path: str) -> int:
    m = re.search(r"_(\d+)$", path)
    return int(m.group(1)) if m else 0


def _leaf(key: str) -> str:
    leaf = key.rsplit("/", 1)[-1]
    return leaf[:-2] if leaf.endswith(":0") else leaf


def describe_keras_file(
    reader, config: dict | None, keras_version: str | None = None, check_with_keras: bool = False
) -> KerasLayout:
    """Map the file's weight groups to the config's layers; find BN layers and cross-reference problems.

    What each layer should store comes from the file and, with ``check_with_keras``, from the Keras
    that wrote it (``expect``): a legacy file names its weights (``weight_names``), and a name
    it lists without the dataset is missing whatever Keras says; Keras 3 numbers them (``vars/0``),
    and a gap in the numbers is missing. Beyond that, a layer Keras could not rebuild (or without
    Keras) is not checked: never reported missing. BN layers' weights are named by their config
    when Keras does not name them.

    Args:
        reader: a ``KerasH5Reader`` (or archive reader).
        config: the model config, or None (a weights-only file): BN layers are then
            found by group name (Keras 3 layout) or weight names (legacy layout).
        keras_version: the Keras that wrote the config (default: the file's ``keras_version``).
        check_with_keras: rebuild the config's layers with that Keras to learn their weights.
    """
    layout = KerasLayout(has_config=bool(config))
    groups = [g for g in reader.layer_groups() if g["path"] and g["path"].split("/")[0] not in _OPTIMIZER_ROOTS]
    if reader.layout == "v3":
        groups = _fold_sublayer_groups(groups)
    entries = reader.entries()
    keys = [e.name for e in entries]
    shapes = {e.name: tuple(e.shape) for e in entries}
    present = set(keys)
    for key in keys:
        if key.split("/")[0] in _OPTIMIZER_ROOTS:
            layout.roles[key] = "optimizer_slot"
            if key.startswith("optimizer_weights/") and _ITERATION_LEAF.search(key):
                layout.roles[key] = "step"
                layout.iterations_key = key
            if key.split("/")[0] == "metrics":
                layout.roles[key] = "other"
    if reader.layout == "v3" and "optimizer/vars/0" in keys:
        layout.roles["optimizer/vars/0"] = "step"
        layout.iterations_key = "optimizer/vars/0"

    cfg_layers = config_layers(config)
    if check_with_keras and config:
        layout.expectation = expect_weights(cfg_layers, config, keras_version or reader.keras_version, reader.layout)
    expected_of = layout.expectation.layers
    by_path = {c.path: c for c in cfg_layers}
    by_name: dict[str, ConfigLayer] = {}
    for cfg in cfg_layers:
        by_name.setdefault(cfg.name, cfg)
    if reader.layout == "legacy":
        groups = _split_legacy_groups(groups, by_path, cfg_layers, bool(config))
        matched = {g["path"]: by_path.get(g["name"]) for g in groups}
    elif any(g["name"] is None for g in groups):
        # No names recorded (tf-keras save_weights): match groups to layers of the same class, in order,
        # level by level down the nested models.
        matched = _match_unnamed_groups(groups, cfg_layers) if cfg_layers else {}
    else:
        named = _name_paths(groups)
        groups = [dict(g, name=named.get(g["path"]) or g["name"]) for g in groups]
        matched = {g["path"]: by_path.get(g["name"]) or by_name.get(g["name"].rsplit("/", 1)[-1]) for g in groups}

    seen_layers = set()
    for g in groups:
        c = matched.get(g["path"])
        cls = c.class_name if c else _class_from_group(g, reader.layout)
        expected = expected_of.get(c.path) if c else None
        weights = _name_weights(g, reader.layout, cls, expected, c.bn_weights() if c else None, present)
        name = c.path if c else (g["name"] or g["path"])
        layer = KerasLayer(
            name=name,
            class_name=cls,
            path=g["path"],
            keys=tuple(g["keys"]),
            weights=weights,
            trainable=_trainable(c, by_path) if c else None,
            axis=c.config.get("axis", -1) if c else -1,
        )
        layout.layers.append(layer)
        if c is not None:
            seen_layers.add(c.path)
            layout.config_keys.update(g["keys"])
            gone, extra, mismatched = _cross_reference(g, reader.layout, expected, c.bn_weights(), present, shapes)
            layout.missing.extend((c.path, w, c.trainable) for w in gone)
            layout.unexpected.extend(extra)
            layout.mismatched.extend((c.path, w, key, want, got) for w, key, want, got in mismatched)
        elif config and g["keys"]:
            layout.unexpected.extend(k for k in g["keys"] if k in present)
        if cls in BN_CLASSES and ("moving_mean" in weights or "moving_variance" in weights or c is not None):
            layout.bn_layers.append(layer)
            for w, key in weights.items():
                if w in ("moving_mean", "moving_variance", "gamma", "beta"):
                    layout.roles[key] = "bn_" + w
    for cfg in cfg_layers:
        if cfg.path in seen_layers or cfg.class_name in MODEL_CLASSES:
            continue
        expected = expected_of.get(cfg.path)
        for w in [e.name for e in expected] if expected is not None else cfg.bn_weights() or []:
            layout.missing.append((cfg.path, w, cfg.trainable))
        if cfg.class_name in BN_CLASSES:
            layer = KerasLayer(
                name=cfg.path,
                class_name=cfg.class_name,
                path="",
                keys=(),
                weights={},
                trainable=_trainable(cfg, by_path),
                axis=cfg.config.get("axis", -1),
            )
            layout.bn_layers.append(layer)
    for key in keys:
        layout.roles.setdefault(key, "weight")
    return layout


def _relative(group: dict, key: str, layout: str) -> str:
    """A key relative to its layer: ``vars/0``, ``cell/vars/1`` (Keras 3); ``kernel``, ``lstm_cell/kernel`` (legacy)."""
    root = group.get("root", group["path"])
    rel = key[len(root) + 1 :]
    return legacy_key(rel) if layout == "legacy" else rel


def _cross_reference(group: dict, layout: str, expected, bn_weights, present: set, shapes: dict):
    """(weights missing, keys unexpected, (weight, key, expected shape, stored shape) that differ) for one layer.

    ``expected`` (from Keras) decides when given; otherwise only what the file itself says: names its
    ``weight_names`` list without a dataset (legacy), gaps in the ``vars`` numbering (Keras 3), and a BN
    layer's weights from its config.
    """
    rel = {_relative(group, k, layout): k for k in group["keys"]}
    stored = {r: k for r, k in rel.items() if k in present}
    gone = [r for r, k in rel.items() if k not in present]  # legacy: listed in weight_names, not stored
    extra, mismatched = [], []
    if expected is not None:
        want = {e.key: e for e in expected}
        gone += [e.name for e in expected if e.key not in stored and e.name not in gone]
        extra = [k for r, k in stored.items() if r not in want]
        mismatched = [
            (want[r].name, k, want[r].shape, shapes[k])
            for r, k in stored.items()
            if r in want and want[r].shape and tuple(shapes[k]) != tuple(want[r].shape)
        ]
    elif layout == "v3":
        for prefix in {r.rsplit("/vars/", 1)[0] if "/vars/" in r else "" for r in stored}:
            own = "vars/" if not prefix else prefix + "/vars/"
            numbers = {int(r[len(own) :]) for r in stored if r.startswith(own) and r[len(own) :].isdigit()}
            gone += [f"{own}{i}" for i in range(max(numbers, default=-1) + 1) if i not in numbers]
        if bn_weights is not None:
            stored_vars = [r for r in stored if r.startswith("vars/")]
            gone += [w for w in bn_weights[len(stored_vars) :] if w not in gone]
    elif bn_weights is not None:
        gone += [w for w in bn_weights if w not in stored and w not in gone]
    return gone, extra, mismatched


def _fold_sublayer_groups(groups: list[dict]) -> list[dict]:
    """Keras 3 layout: a layer's sub-objects (an LSTM's ``cell``, MultiHeadAttention's ``query_dense``, a
    wrapper's ``layer``) are groups below the layer's own ``.../layers/<name>`` group: their weights are the
    layer's. A sub-object without such a group above it stays a group of its own."""
    layer_group = re.compile(r"(^|/)layers/[^/]+$")
    out: list[dict] = []
    by_path: dict[str, dict] = {}
    for g in groups:
        parts = g["path"].split("/")
        owner = (
            next(
                (p for p in ("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if layer_group.search(p)), None
            )
            if not layer_group.search(g["path"])
            else None
        )
        if owner is None:
            if g["path"] in by_path:  # its sub-objects came first
                by_path[g["path"]].update(name=g["name"], keys=list(g["keys"]) + by_path[g["path"]]["keys"])
            else:
                by_path[g["path"]] = dict(g, keys=list(g["keys"]))
                out.append(by_path[g["path"]])
            continue
        if owner not in by_path:
            by_path[owner] = {"path": owner, "name": None, "keys": []}
            out.append(by_path[owner])
        by_path[owner]["keys"].extend(g["keys"])
    return out


def _trainable(c: ConfigLayer | None, by_path: dict) -> bool:
    """The layer and every nested model holding it are trainable (``base.trainable = False`` freezes all)."""
    while c is not None:
        if not c.trainable:
            return False
        c = by_path.get(c.parent) if c.parent else None
    return True


def _name_paths(groups: list[dict]) -> dict[str, str]:
    """Keras 3 layout: each group's layer path from the names the nested models' groups record.

    ``layers/functional/layers/sequential/layers/batch_normalization`` lies inside the groups
    ``layers/functional`` (name ``backbone``) and ``layers/functional/layers/sequential``
    (``block``): its path is ``backbone/block/bn2``.
    """
    names = {g["path"]: g["name"] for g in groups}
    out = {}
    for g in groups:
        parts = g["path"].split("/")
        chain = [names.get("/".join(parts[:i])) for i in range(1, len(parts)) if parts[i] == "layers"]
        if g["name"] is not None and all(chain):
            out[g["path"]] = "/".join(chain + [g["name"]])
    return out


def _match_unnamed_groups(groups: list[dict], cfg_layers: list[ConfigLayer]) -> dict:
    """Keras 3 layout without names: ``<prefix>layers/<snake class>[_i]`` is the i-th layer of that class of
    the model at ``prefix``, matched level by level."""
    children: dict[str, list[ConfigLayer]] = {}
    for layer in cfg_layers:
        children.setdefault(layer.parent, []).append(layer)
    paths = {g["path"] for g in groups}
    matched: dict[str, ConfigLayer | None] = {}

    def match(prefix: str, parent: str | None) -> None:
        below = f"{prefix}/layers/" if prefix else "layers/"
        segments = sorted(
            {p[len(below) :].split("/", 1)[0] for p in paths if p.startswith(below)},
            key=lambda seg: (re.sub(r"_\d+$", "", seg), _suffix(seg)),
        )
        pools: dict[str, list[ConfigLayer]] = {}
        for child in children.get(parent, []) if parent is not None else []:
            pools.setdefault(_snake(child.class_name), []).append(child)
        for seg in segments:
            pool = pools.get(re.sub(r"_\d+$", "", seg)) or []
            c = pool.pop(0) if pool else None
            matched[below + seg] = c
            match(below + seg, c.path if c else None)

    match("", "")
    return matched


def _split_legacy_groups(
    groups: list[dict], by_path: dict, cfg_layers: list[ConfigLayer], has_config: bool
) -> list[dict]:
    """Legacy layout: a nested model's weights are all in its top-level group, as
    ``model_weights/backbone/bn1/moving_mean:0`` (the variable's name: its own layer's name, not the
    models between); one group per inner layer, named by its config path (``backbone/block/bn1``)."""
    out = []
    for g in groups:
        inner: dict[str | None, list[str]] = {}
        for key in g["keys"]:
            parts = key[len(g["path"]) + 1 :].split("/")
            inner.setdefault(parts[0] if len(parts) >= 2 else None, []).append(key)
        top = by_path.get(g["name"])
        nested = top is not None and any(c.parent == top.path for c in cfg_layers)
        if not (nested or (not has_config and len(set(inner) - {None}) > 1)):  # one layer: its own group
            out.append(g)
            continue
        for name, keys in inner.items():
            if name is None:
                out.append(dict(g, keys=keys, root=g["path"]))
                continue
            found = [c for c in cfg_layers if c.name == name and c.path.startswith(g["name"] + "/")]
            out.append(
                {
                    "path": f"{g['path']}/{name}",
                    "name": found[0].path if found else f"{g['name']}/{name}",
                    "keys": keys,
                    "root": g["path"],
                }
            )
    return out


def _class_from_group(group: dict, layout: str) -> str | None:
    """The layer class without a config: from the group name (Keras 3) or weight names (legacy)."""
    leaves = {_leaf(k) for k in group["keys"]}
    if layout == "v3":
        stem = re.sub(r"_\d+$", "", group["path"].rsplit("/", 1)[-1])
        if stem in ("batch_normalization", "sync_batch_normalization"):
            return "BatchNormalization" if stem == "batch_normalization" else "SyncBatchNormalization"
        return None
    if {"moving_mean", "moving_variance"} & leaves:
        return "BatchNormalization"
    return None


def _name_weights(
    group: dict, layout: str, cls: str | None, expected, bn_weights: list[str] | None, present: set
) -> dict:
    """Weight name -> key for one group (Keras 3 keys are numbered: named by Keras or by the BN rule)."""
    keys = group["keys"]
    if layout == "legacy":
        return {_leaf(k): k for k in keys}
    if expected is not None:
        return {e.name: f"{group['path']}/{e.key}" for e in expected if f"{group['path']}/{e.key}" in present}
    own = [k for k in keys if k.startswith(f"{group['path']}/vars/")]
    if bn_weights is not None and len(bn_weights) == len(own):
        return dict(zip(bn_weights, own))
    if cls in BN_CLASSES and len(own) >= 2:
        named = {"moving_mean": own[-2], "moving_variance": own[-1]}
        if len(own) == 4:
            named.update(gamma=own[0], beta=own[1])
        return named
    return {}
