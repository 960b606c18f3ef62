"""Matching a Keras model to a TF2 checkpoint by the object graph's structure, not by names.

The model is walked as TensorFlow's saver walks it (``tf.train.TrackableView``: each
object's named children), side by side with the checkpoint's object graph from one
of its root children: a model object and a checkpoint node correspond when they are
reached by the same child names. The root child the model is is the one where the
most of the model's variables are reached (``net``, ``model``, ``encoder``...; the
optimizer's children are never candidates). Each variable is then named by its
layer's path in the model (``backbone/block_3_expand_BN/moving_mean``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ckptdoctor.errors import GraphError
from ckptdoctor.formats.tf2.objects import ObjectGraph

__all__ = ["Match", "match_model", "variable_paths"]


@dataclass
class Match:
    """Where each of the model's variables is stored."""

    root: str  # the root child that is the model
    key_of: dict[int, str] = field(default_factory=dict)  # id(variable) -> checkpoint key
    unmatched: list = field(default_factory=list)  # the model's variables the checkpoint does not hold
    subtree_keys: set[str] = field(default_factory=set)  # every key saved by an object under the root child


def _pairs(tf, model, node: int, graph: ObjectGraph) -> dict[int, int]:
    """id(object) -> node, for the model's objects reached by the same child names as the checkpoint's."""
    view = tf.train.TrackableView
    found: dict[int, int] = {}
    queue = deque([(model, node)])
    while queue:
        obj, at = queue.popleft()
        if id(obj) in found:
            continue
        found[id(obj)] = at
        try:
            children = view.children(obj)
        except Exception:  # noqa: BLE001 - an object TensorFlow cannot list has no children to match
            children = {}
        for name, child in children.items():
            below = graph.child(at, name)
            if below is not None:
                queue.append((child, below))
    return found


def _subtree(graph: ObjectGraph, node: int) -> set[int]:
    seen, queue = {node}, deque([node])
    while queue:
        for child, _name in graph.children[queue.popleft()]:
            if child not in seen and 0 <= child < len(graph.children):
                seen.add(child)
                queue.append(child)
    return seen


def match_model(tf, model, graph: ObjectGraph) -> Match:
    """The root child the model is, and the checkpoint key of each of its variables.

    Raises:
        GraphError: the model's variables are found under no root child.
    """
    variables = list(model.weights)
    if not variables:
        raise GraphError(
            "the model has no weights yet (a subclassed model is built by its first call): build it "
            "in the factory, e.g. from keras.Input shapes, and pass it again"
        )
    roots = graph.roots  # derived when asked: once here
    best: tuple[int, str, dict] | None = None
    for name, node in roots.items():
        if name in graph.optimizers:
            continue
        pairs = _pairs(tf, model, node, graph)
        hits = sum(1 for v in variables if graph.key(pairs.get(id(v))) is not None)
        if best is None or hits > best[0]:
            best = (hits, name, pairs)
    if best is None or best[0] == 0:
        paths = variable_paths(model)
        shown = ", ".join(f"{paths.get(id(v), '?')} {list(v.shape)}" for v in variables[:4])
        more = f" and {len(variables) - 4} more" if len(variables) > 4 else ""
        raise GraphError(
            f"the model does not match the checkpoint: none of its variables ({shown}{more}) is under the "
            f"checkpoint's root objects ({', '.join(roots) or 'none'}); pass the model that wrote it"
        )
    _hits, root, pairs = best
    match = Match(root)
    for v in variables:
        key = graph.key(pairs.get(id(v)))
        if key is not None:
            match.key_of[id(v)] = key
        else:
            match.unmatched.append(v)
    subtree_keys = (graph.key(n) for n in _subtree(graph, roots[root]))
    match.subtree_keys = {key for key in subtree_keys if key is not None}
    return match


def _children(layer) -> list:
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        return list(getattr(layer, "layers", None) or [])


def _leaf(variable) -> str:
    name = str(getattr(variable, "name", "") or "")
    return name.rsplit("/", 1)[-1].split(":")[0]


def variable_paths(model) -> dict[int, str]:
    """id(variable) -> ``layer/path/name`` (the innermost layer holding it)."""
    names: dict[int, str] = {}
    seen: set[int] = set()

    def walk(layer, prefix: list[str]) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for sub in _children(layer):
            walk(sub, prefix + [sub.name])
        for v in getattr(layer, "weights", []):
            names.setdefault(id(v), "/".join(prefix + [_leaf(v)]))

    walk(model, [])
    return names
