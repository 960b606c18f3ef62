"""``inspect`` for SavedModel directories: the ``variables/`` bundle checked against ``saved_model.pb``.

A SavedModel holds two object graphs written together: the ``SavedObjectGraph`` in
``saved_model.pb`` (every object, and for variables their name, dtype, shape and
``trainable`` flag) and the bundle's own ``_CHECKPOINTABLE_OBJECT_GRAPH`` (which
bundle key holds which object's value). Both are read without TensorFlow.

How a bundle key is matched to its ``SavedVariable``: every object gets the path of
its breadth-first shortest route from the root over ``children`` edges, in stored
order (TensorFlow's own rule for checkpoint keys); a slot variable the path of its
variable, ``.OPTIMIZER_SLOT``, the optimizer's path and the slot name. The same walk
is done in the bundle's object graph, and the key recorded there for the object at
the same path (its ``VARIABLE_VALUE`` attribute) is the variable's key. Node ids are
never assumed to agree between the two graphs. Without an object graph in the
bundle, the key is built from the path (``.`` escaped as ``..``, ``/`` as ``.S``).

BN layers come from, in order of preference:

1. ``keras_metadata.pb`` (tf-keras ``model.save``): every layer node whose class is
   ``BatchNormalization`` or ``SyncBatchNormalization``, named as the layer is (a
   nested model's layer by its path, ``backbone/block/bn2``, as for Keras files), with
   its ``gamma``/``beta``/``moving_mean``/``moving_variance`` children;
2. the variables' names otherwise (Keras 3 ``model.export``, ``tf.saved_model.save``
   of a ``tf.Module`` or subclassed model): variables named ``<scope>/moving_mean``,
   ``<scope>/moving_variance``, ``<scope>/gamma``, ``<scope>/beta`` form layer
   ``<scope>`` (a moving statistic is needed to count: gamma and beta alone are a
   ``LayerNormalization``; optimizer variables are skipped);
3. in addition, for BN layers with names no rule knows, every ``FusedBatchNorm*`` op
   of a saved concrete function whose mean and variance inputs read captured
   variables (``SavedConcreteFunction.bound_inputs``), named by the common scope of
   those variables' names.

A layer frozen (``trainable=False``) from the start of a model that trained, whose
statistics are still at their initial values, is ``bn-frozen-untrained`` (a warning)
as for Keras files: ``keras_metadata.pb`` says ``trainable``; without it, a gamma
listed by an object's ``non_trainable_variables`` (Keras 3) or not trainable does.
A SavedModel without an object graph (TF1 ``SavedModelBuilder``) is inspected as a
plain checkpoint, BN layers by the bundle's names.

Variables the SavedModel declares but the bundle lacks are ``missing-in-checkpoint``
(severity by ``trainable``, as for TF1 graphs); bundle tensors no object of the
SavedModel owns are ``unexpected-in-checkpoint``.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from ckptdoctor.constants import OPTIMIZER_SLOT_PATTERN
from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.protowire import WireFormatError, decode_object_graph
from ckptdoctor.readers.saved_model_pb import FusedBatchNorm, SavedNode, read_saved_model

__all__ = ["SavedModelVariable", "SavedModelLayout", "is_saved_model_dir", "describe_saved_model"]

SAVED_MODEL_PB = "saved_model.pb"
KERAS_METADATA_PB = "keras_metadata.pb"
VARIABLES_PREFIX = os.path.join("variables", "variables")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
ATTRIBUTES_SEGMENT = "/.ATTRIBUTES/"
OPTIMIZER_SLOT = ".OPTIMIZER_SLOT"
#: tf-keras layer classes (``keras_metadata.pb``) that are batch normalization.
BN_CLASSES = frozenset({"BatchNormalization", "SyncBatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2"})
BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")
#: Nested models whose flags a BN layer's path is checked against (real models nest a few levels).
_MAX_NESTING = 64


@dataclass(frozen=True)
class SavedModelVariable:
    """A variable the SavedModel declares, and the bundle key that holds (or should hold) it.

    ``shape`` is None when the SavedModel leaves a dimension or the rank unknown.
    ``frozen``: not trainable, or listed by an object's ``non_trainable_variables``
    (Keras 3 keeps a frozen layer's ``tf.Variable`` trainable and says it there).
    """

    key: str
    name: str
    dtype: str
    shape: tuple[int, ...] | None
    trainable: bool
    object_path: str
    slot: bool = False
    frozen: bool = False


@dataclass(frozen=True)
class SavedModelLayout:
    """What ``saved_model.pb`` (and ``keras_metadata.pb``) say about a bundle.

    Attributes:
        variables: bundle key -> the variable stored there, in breadth-first order.
        owned: other bundle keys an object of the SavedModel saves (``PYTHON_STATE``,
            lookup tables).
        bn_layers: layer dicts for ``diagnose_bn`` (``layer``, the four keys, ``channels``).
        bn_source: ``keras_metadata.pb`` or ``variable names``.
        notes: what the reader could not verify.
    """

    variables: dict
    owned: frozenset
    bn_layers: tuple
    bn_source: str
    notes: tuple


def is_saved_model_dir(path: str) -> bool:
    """A directory holding ``saved_model.pb``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SAVED_MODEL_PB))


def _escape(local_name: str) -> str:
    return local_name.replace(".", "..").replace("/", ".S")


def _paths(children, slots, n: int) -> list[tuple[str, ...] | None]:
    """Each node's breadth-first shortest path of local names (ties: first edge in stored order).

    ``children(i)`` gives ``(node_id, local_name)`` edges; ``slots(i)`` the slot
    references of node ``i``. A slot variable's path is its variable's path,
    ``.OPTIMIZER_SLOT``, the optimizer's path and the slot name.
    """
    paths: list[tuple[str, ...] | None] = [None] * n
    if n == 0:
        return paths
    paths[0] = ()
    queue = deque([0])
    while queue:
        i = queue.popleft()
        for child, name in children(i):
            if 0 <= child < n and paths[child] is None:
                paths[child] = paths[i] + (name,)  # type: ignore[operator]
                queue.append(child)
    for owner in range(n):
        if paths[owner] is None:
            continue
        for var_id, slot_name, slot_id in slots(owner):
            if 0 <= var_id < n and 0 <= slot_id < n and paths[var_id] is not None and paths[slot_id] is None:
                paths[slot_id] = paths[var_id] + (OPTIMIZER_SLOT,) + paths[owner] + (slot_name,)
    return paths


def _key_of(path: tuple[str, ...]) -> str:
    return "/".join(s if s == OPTIMIZER_SLOT else _escape(s) for s in path) + VALUE_SUFFIX


def _readable(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _keras_bn_layers(directory: str, nodes: list[SavedNode], key_of_node: dict[int, str]) -> list[dict] | None:
    """BN layers named by ``keras_metadata.pb``, or None when there is no such file.

    ``keras_metadata.pb`` (``readers.keras_metadata``) has one node per object with
    ``node_id`` (the SavedModel object graph's node), ``node_path``
    (``root.layer_with_weights-1``) and a JSON ``metadata`` naming the class and the
    layer. The node is found by walking ``node_path``'s names from the root;
    ``node_id`` is used only when the walk fails.
    """
    from ckptdoctor.readers.keras_metadata import read_keras_metadata_nodes

    found = read_keras_metadata_nodes(directory, KERAS_METADATA_PB)
    if found is None:
        return None
    described = {n.node_path: (n.node_id, n.metadata) for n in found}  # node_path -> (node_id, metadata)
    by_name: dict[int, dict[str, int]] = {}  # node -> its children by local name (first one wins), built on use
    layers = []
    for node_path, (node_id, meta) in described.items():
        if meta.get("class_name") not in BN_CLASSES:
            continue
        target = _walk(nodes, node_path.split(".")[1:], by_name) if node_path.startswith("root.") else None
        if target is None and node_id is not None and 0 <= node_id < len(nodes):
            target = node_id
        if target is None:
            continue
        # A nested model's layer is named by its path (backbone/block/bn2), as for Keras files, and is
        # frozen when it or any model holding it is. The holders' paths are built one part at a time,
        # for the first _MAX_NESTING levels (a path of 100,000 parts would cost the square of its length).
        parts = node_path.split(".")
        holders = []
        prefix = parts[0] if parts else ""
        for part in parts[1:-1][:_MAX_NESTING]:
            prefix = f"{prefix}.{part}"
            if prefix in described:
                holders.append(described[prefix][1])
        names = [str(m.get("name")) for m in holders if m.get("name")] + [str(meta.get("name") or node_path)]
        flags = [m.get("trainable") for m in holders + [meta]]
        trainable = False if False in flags else (True if isinstance(meta.get("trainable"), bool) else None)
        children = dict((name, child) for child, name in reversed(nodes[target].children))
        layer: dict = {"layer": "/".join(names), "channels": None, "trainable": trainable}
        for weight in BN_WEIGHTS:
            child = children.get(weight)
            layer[weight], variable = None, None
            if child is not None and 0 <= child < len(nodes):
                layer[weight], variable = key_of_node.get(child), nodes[child].variable
            shape = variable.shape if variable is not None else None
            if weight == "moving_mean" and shape and shape[-1] >= 0:
                layer["channels"] = shape[-1]
        if layer["moving_mean"] or layer["moving_variance"]:  # else a layer never built: no variables
            layers.append(layer)
    return layers


def _walk(nodes: list[SavedNode], names: list[str], by_name: dict[int, dict[str, int]]) -> int | None:
    """The node reached from the root by ``names``' children (``by_name`` caches each node's children by name:
    a long path through a graph with cycles costs one lookup per name). None when a name is missing or leads
    out of the graph."""
    node = 0
    for name in names:
        if not 0 <= node < len(nodes):
            return None  # a damaged graph: no nodes at all, or a child id past the last one
        children = by_name.get(node)
        if children is None:
            children = by_name[node] = {}
            for child, local in nodes[node].children:
                children.setdefault(local, child)
        if name not in children:
            return None
        node = children[name]
    return node if 0 <= node < len(nodes) else None


def _named_bn_layers(variables: dict) -> list[dict]:
    """BN layers from variable names: ``<scope>/moving_mean`` etc., first variable of a name wins.

    A layer needs a moving statistic: the SavedModel declares every variable its
    objects track, so a BN layer always has them, and gamma and beta alone are a
    ``LayerNormalization``. Optimizer variables (``Adam/m/bn/gamma``) are skipped.
    """
    layers: dict[str, dict] = {}
    for key, var in variables.items():
        if var.slot or OPTIMIZER_SLOT_PATTERN.search(key):
            continue
        name = var.name[:-2] if var.name.endswith(":0") else var.name
        if "/" not in name:
            continue
        scope, leaf = name.rsplit("/", 1)
        if leaf in BN_WEIGHTS:
            layer = layers.setdefault(scope, {"layer": scope})
            if leaf not in layer:
                layer[leaf] = key
                if leaf == "moving_mean" and var.shape:
                    layer["channels"] = var.shape[-1]
                if leaf == "gamma":  # a frozen Keras layer's weights are all non-trainable
                    layer["trainable"] = not var.frozen
    return [
        {
            "moving_mean": None,
            "moving_variance": None,
            "gamma": None,
            "beta": None,
            "channels": None,
            "trainable": None,
            **layer,
        }
        for _scope, layer in sorted(layers.items())
        if "moving_mean" in layer or "moving_variance" in layer
    ]


def _fused_bn_layers(
    fused: list[FusedBatchNorm], nodes: list[SavedNode], key_of_node: dict, variables: dict, known: list[dict]
) -> list[dict]:
    """BN layers no other rule found: ``FusedBatchNorm*`` ops whose mean and variance are saved variables.

    The layer is named by the common scope of the mean's and variance's variable
    names (``stem`` for ``stem/running_avg`` and ``stem/running_var``).
    """
    covered = {
        variables[k].name
        for layer in known
        for k in (layer.get("moving_mean"), layer.get("moving_variance"))
        if k in variables
    }
    layers, seen = [], set()
    for op in fused:
        ids = (op.mean, op.variance, op.scale, op.offset)
        if (
            op.mean is None
            or op.variance is None
            or (op.mean, op.variance) in seen
            or not all(i is None or 0 <= i < len(nodes) for i in ids)
        ):
            continue
        seen.add((op.mean, op.variance))
        mean, var = nodes[op.mean].variable, nodes[op.variance].variable
        if mean is None or var is None or mean.name in covered or var.name in covered:
            continue
        a, b = mean.name.split("/"), var.name.split("/")
        common = []
        for x, y in zip(a[:-1], b[:-1]):
            if x != y:
                break
            common.append(x)
        layer = {
            "layer": "/".join(common) or mean.name,
            "channels": mean.shape[-1] if mean.shape else None,
            "trainable": None,
        }
        for weight, node in zip(BN_WEIGHTS, ids):
            layer[weight] = key_of_node.get(node) if node is not None and nodes[node].variable is not None else None
        covered.update((mean.name, var.name))
        layers.append(layer)
    return layers


def describe_saved_model(directory: str, reader) -> SavedModelLayout:
    """Match the bundle's keys to the variables ``saved_model.pb`` declares, and find the BN layers.

    Args:
        directory: the SavedModel directory.
        reader: a ``BundleReader`` of its ``variables/variables``.

    Raises:
        CorruptCheckpointError: ``saved_model.pb`` is unreadable (an unreadable
            ``keras_metadata.pb`` is only a note: the names rule is used instead).
    """
    from ckptdoctor.readers.bundle import _dtype_name

    pb = os.path.join(directory, SAVED_MODEL_PB)
    nodes, fused = read_saved_model(pb)
    notes: list[str] = []
    if nodes is None:
        return SavedModelLayout(
            {}, frozenset(), (), "", (f"{pb} has no object graph (a TF1 SavedModel): variables not cross-referenced",)
        )
    keys = {e.name for e in reader.entries()}

    # The bundle's own object graph says which key holds the object at each path.
    bundle_key_at: dict[tuple[str, ...], str] = {}
    attribute_keys_at: dict[tuple[str, ...], list[str]] = {}
    if OBJECT_GRAPH_KEY in keys:
        try:
            bundle_nodes = decode_object_graph(reader.read_object_graph())
        except (TensorReadError, UnsupportedFormatError, WireFormatError) as e:
            bundle_nodes = []
            notes.append(f"the bundle's object graph is unusable ({e}): keys built from saved_model.pb's paths")
        bpaths = _paths(lambda i: bundle_nodes[i].children, lambda i: bundle_nodes[i].slot_variables, len(bundle_nodes))
        for i, path in enumerate(bpaths):
            if path is None:
                continue
            for attr_name, ckey in bundle_nodes[i].attributes:
                if attr_name == VARIABLE_VALUE:
                    bundle_key_at[path] = ckey
                else:
                    attribute_keys_at.setdefault(path, []).append(ckey)
    else:
        notes.append("the bundle has no object graph: keys built from saved_model.pb's paths")

    paths = _paths(lambda i: nodes[i].children, lambda i: nodes[i].slot_variables, len(nodes))
    slot_ids = {slot for node in nodes for _v, _s, slot in node.slot_variables}
    listed_non_trainable = {
        member
        for node in nodes
        for child, name in node.children
        if name == "non_trainable_variables"
        for member, _n in nodes[child].children
    }
    order = sorted((p is None, len(p or ()), i) for i, p in enumerate(paths))
    variables: dict[str, SavedModelVariable] = {}
    key_of_node: dict[int, str] = {}
    owned: set[str] = set()
    for _unreached, _depth, i in order:
        path, node = paths[i], nodes[i]
        if path is None:
            continue
        if node.variable is None:
            owned.update(attribute_keys_at.get(path, ()))
            continue
        key = bundle_key_at.get(path) or _key_of(path)
        key_of_node[i] = key
        if key in variables:
            continue
        v = node.variable
        shape = v.shape if v.shape is not None and all(d >= 0 for d in v.shape) else None
        variables[key] = SavedModelVariable(
            key,
            v.name,
            _dtype_name(v.dtype),
            shape,
            v.trainable,
            _readable(path),
            i in slot_ids,
            not v.trainable or i in listed_non_trainable,
        )
    # Legacy multi-tensor saveables record a prefix; the bundle keys extend it.
    for key in keys - set(variables) - owned:
        marker = key.find(ATTRIBUTES_SEGMENT)
        if marker >= 0 and any(key.startswith(k) for k in owned if k.find(ATTRIBUTES_SEGMENT) == marker):
            owned.add(key)

    try:
        bn = _keras_bn_layers(directory, nodes, key_of_node)
    except CorruptCheckpointError as e:  # saved_model.pb is enough: fall back on the variables' names
        bn = None
        notes.append(f"{e}; BN layers found by variable names instead")
    source = KERAS_METADATA_PB
    if bn is None:
        bn, source = _named_bn_layers(variables), "variable names"
    if fused is None:
        notes.append(f"the function library of {SAVED_MODEL_PB} is malformed: FusedBatchNorm ops not searched")
    structural = _fused_bn_layers(fused or [], nodes, key_of_node, variables, bn)
    if structural:
        bn, source = bn + structural, f"{source} and FusedBatchNorm ops"
    return SavedModelLayout(variables, frozenset(owned), tuple(bn), source, tuple(notes))
