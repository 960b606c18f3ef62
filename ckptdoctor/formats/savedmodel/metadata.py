"""The Keras half of a tf-keras SavedModel: its model config (``keras_metadata.pb``) and where each BN layer's
variables are stored in the bundle.

Which bundle key holds which layer's statistics: tf-keras tracks the j-th layer of a
model's ``layers`` as its child ``layer-{j}`` at every nesting level, and the bundle's
object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``) records every such edge, so a BN
layer's moving mean is the ``VARIABLE_VALUE`` of the node reached by
``layer-{j}/.../layer-{k}/moving_mean``. Its key is whatever TensorFlow chose
(``layer_with_weights-1/moving_mean/.ATTRIBUTES/VARIABLE_VALUE`` for a top-level
layer, ``variables/4/.ATTRIBUTES/VARIABLE_VALUE`` for one inside a nested model).
The mapping is checked, not trusted (``runtime.keras_model.check_stored_values``).
"""

from __future__ import annotations

import os

from ckptdoctor.constants import KERAS_METADATA_PB, OBJECT_GRAPH_KEY, SAVED_MODEL_VARIABLES
from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.keras_config import CODE_CLASSES, lambda_layers

__all__ = ["read_keras_metadata", "bundle_keys"]

_BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")


def read_keras_metadata(path: str) -> tuple[dict | None, list[str], str | None]:
    """The model config, the Lambda layers and the Keras version from ``keras_metadata.pb``.

    ``keras_metadata.pb`` (``readers.keras_metadata``) holds one node per object, each with
    a JSON ``metadata``. The root node's JSON carries the model's config; every layer
    node's names its class, which also finds Lambda layers of models without a config
    (subclassed ones).

    Returns:
        ``(config, lambda layer names, keras_version)``; ``config`` is
        ``{"class_name": ..., "config": ...}`` or None.
    """
    from ckptdoctor.readers.keras_metadata import read_keras_metadata_nodes

    nodes = read_keras_metadata_nodes(path, KERAS_METADATA_PB)
    if nodes is None:
        raise CorruptCheckpointError(f"cannot read {os.path.join(path, KERAS_METADATA_PB)}: it does not exist")
    config, version, code = None, None, []
    for node in nodes:
        meta = node.metadata
        if meta.get("class_name") in CODE_CLASSES:
            code.append(str(meta.get("name") or node.node_path))
        if node.node_path == "root":
            version = meta.get("keras_version") if isinstance(meta.get("keras_version"), str) else None
            if isinstance(meta.get("config"), dict):
                config = {"class_name": meta.get("class_name", ""), "config": meta["config"]}
    code += [name for name in lambda_layers(config) if name not in code]
    return config, code, version


def _object_graph(reader) -> list | None:
    """The bundle's decoded ``TrackableObjectGraph`` nodes, or None when it has none."""
    from ckptdoctor.readers.protowire import WireFormatError, decode_object_graph

    if OBJECT_GRAPH_KEY not in {e.name for e in reader.entries()}:
        return None
    try:
        return decode_object_graph(reader.read_object_graph())
    except (WireFormatError, TensorReadError, UnsupportedFormatError) as e:
        raise CorruptCheckpointError(f"the SavedModel's object graph {OBJECT_GRAPH_KEY} is unreadable ({e})") from e


def bundle_keys(bns: list, reader) -> dict[str, dict]:
    """Each BN layer's bundle keys, found by following the layer's route through the object graph.

    tf-keras tracks the j-th layer of a model's ``layers`` as its child ``layer-{j}`` (and,
    among layers with weights, the i-th as ``layer_with_weights-{i}``), at every nesting
    level; a variable's key is the ``VARIABLE_VALUE`` attribute of the node reached by
    ``layer-{j}/.../moving_mean`` (a nested layer's key is often ``variables/{k}/...``, the
    first route TensorFlow found). The keys are then checked by ``check_stored_values``,
    not trusted.
    """
    nodes = _object_graph(reader)
    if nodes is None:
        raise CorruptCheckpointError(
            f"{SAVED_MODEL_VARIABLES}.index holds no object graph: it was not written by "
            "tf-keras model.save, so its variables cannot be matched to the model's layers"
        )
    out = {}
    for bn in bns:
        keys = {}
        for attr in _BN_WEIGHTS:
            if getattr(bn.layer, attr, None) is None:  # center=False / scale=False
                continue
            node, route = 0, []
            for parent, child in bn.chain:
                route.append(f"layer-{[id(layer) for layer in parent.layers].index(id(child))}")
                node = _child(nodes, node, route[-1], bn.name)
            node = _child(nodes, node, attr, bn.name)
            values = [a[1] for a in nodes[node].attributes if a[0] == "VARIABLE_VALUE"]
            if not values:
                raise UnsupportedFormatError(
                    f"the SavedModel's object graph stores no value for BN layer {bn.name}'s "
                    f"{attr} ({'/'.join(route)}/{attr}); nothing was written"
                )
            keys[attr] = values[0]
        out[bn.name] = keys
    return out


def _child(nodes: list, node: int, name: str, layer: str) -> int:
    for child, local in nodes[node].children:
        if local == name:
            return child
    raise UnsupportedFormatError(
        f"the SavedModel's object graph has no {name} on the way to BN layer {layer}: "
        "it was not written by the tf-keras that loads it; nothing was written"
    )
