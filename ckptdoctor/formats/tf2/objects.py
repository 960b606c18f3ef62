"""What a TF2 object-based checkpoint's own object graph says, read without TensorFlow.

``tf.train.Checkpoint`` (and ``CheckpointManager``) store the ``TrackableObjectGraph``
under ``_CHECKPOINTABLE_OBJECT_GRAPH``: every object, its named children, and the
checkpoint key of each value it saves. A tensor's key follows the *first* route the
saver found to it, so a Keras 3 model's kernel may be stored as
``opt/_trainable_variables/0/...``, under the optimizer that also tracks it. The
structure, not the key, therefore says what each tensor is:

* the **optimizer** root children are those with an iteration counter
  (``iterations``, ``_iterations``, ``iter``); objects reachable from the other root
  children are the **model's**, whatever their key;
* a **BN layer** is a model object with ``moving_mean`` and ``moving_variance``
  children that hold values; its ``gamma`` and ``beta`` are its children of those names;
* each model tensor is shown by its path from its own root child
  (``net/_operations/2/gamma``), each optimizer tensor by the optimizer's.
"""

from __future__ import annotations

import operator
from collections import deque
from dataclasses import dataclass
from itertools import compress, repeat

from ckptdoctor.collector import paused_gc
from ckptdoctor.constants import OBJECT_GRAPH_KEY
from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.protowire import ObjectNode, WireFormatError, _wire

__all__ = ["ObjectGraph", "read_object_graph", "has_object_graph"]

_ITERATION_NAMES = frozenset({"iterations", "_iterations", "iter"})
_VALUE = "VARIABLE_VALUE"
_BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")


def has_object_graph(reader) -> bool:
    """Whether the bundle is a TF2 object-based checkpoint (asked of the index alone: no listing is built)."""
    return reader.has_tensor(OBJECT_GRAPH_KEY)


@dataclass
class ObjectGraph:
    """What ckptdoctor derives from the decoded object graph, indexed by node id.

    The decoded nodes themselves are not kept: of each node only its named children are
    (the rest, an attribute tuple and a key per tensor, was a third of the memory of
    listing 100,000 tensors). Lists indexed by node id stand for dicts over all nodes.
    """

    children: list  # node -> its (child node, local name) edges, in stored order
    optimizers: set[str]  # names of the optimizer root children
    key_of: list  # node -> its VARIABLE_VALUE key (None: it saves none)
    node_of: dict[str, int]  # the reverse (the first node of a key)
    path_of: list  # node -> its path from its own root child (None: reached from no root child)
    in_model: bytearray  # node -> 1 when reachable from a non-optimizer root child

    @property
    def roots(self) -> dict[str, int]:
        """Root child name -> node id (made when asked: a flat checkpoint's root has 100,000 children)."""
        return _roots(self.children[0], len(self.children))

    def key(self, node: int | None) -> str | None:
        """The VARIABLE_VALUE key of ``node`` (None: no such node, or it saves none)."""
        if node is None or not 0 <= node < len(self.key_of):
            return None
        return self.key_of[node]

    def child(self, node: int, name: str) -> int | None:
        for child, local in self.children[node]:
            if local == name:
                return child
        return None

    def bn_layers(self) -> list[dict]:
        """One ``diagnose_bn`` spec per BN layer of the model's objects, named by its path."""
        layers = []
        # A variable, or an object of one child, is never a BN layer: only the others are looked at (found by
        # map and compress, not a loop over 100,000 variables).
        candidates = compress(range(len(self.children)), map(operator.lt, repeat(1), map(len, self.children)))
        for node in candidates:
            children = self.children[node]
            if not self.in_model[node]:
                continue
            kids: dict = dict.fromkeys(_BN_WEIGHTS)
            for child, local in reversed(children):  # the first child of a name wins, as in child()
                if local in kids:
                    kids[local] = child
            if kids["moving_mean"] is None or kids["moving_variance"] is None:
                continue
            keys = {name: self.key(c) for name, c in kids.items()}
            if keys["moving_mean"] is None or keys["moving_variance"] is None:
                continue
            layers.append({"layer": self.path_of[node], **keys, "channels": None, "trainable": None})
        return sorted(layers, key=lambda layer: layer["layer"])

    def role(self, key: str) -> str | None:
        """``optimizer_slot``/``step`` for optimizer state and root counters; None: a model tensor or unknown."""
        node = self.node_of.get(key)
        if node is None or self.in_model[node]:
            return None
        return self._path_role(self.path_of[node] or "")

    def outside_roles(self, nodes: list[int]) -> list[str | None]:
        """``role`` of a key of each of ``nodes``, nodes outside the model (a key's node is ``node_of[key]``)."""
        path_of = self.path_of
        return list(map(self._path_role, [path_of[node] or "" for node in nodes]))

    def _path_role(self, path: str) -> str | None:
        head, _, leaf = path.partition("/")
        if head in self.optimizers:
            return "step" if leaf.rsplit("/", 1)[-1] in _ITERATION_NAMES else "optimizer_slot"
        if "/" not in path:  # a root scalar: save_counter, a step counter
            return "step"
        return None


def _walk(nodes: list, starts, path_of: list) -> bytearray:
    """``_walk_py``, in C (``readers/_wire.c``) when it is built and every part of the graph it reads is of the
    decoded form (exact tuples, ints and strs); else, ``path_of`` unchanged by C, in Python."""
    starts = list(starts)
    if _wire is not None:
        seen = _wire.object_walk(nodes, ObjectNode, starts, path_of)
        if seen is not None:
            return seen
    return _walk_py(nodes, starts, path_of)


def _walk_py(nodes: list, starts, path_of: list) -> bytearray:
    """Breadth-first from ``starts`` (node, path), first route wins; returns the nodes reached (1 each).

    A node is visited once per walk, by its first route (a second start at a node already reached
    would find all its children reached too); the queue holds node ids, ``route`` their paths.
    """
    n = len(nodes)
    seen = bytearray(n)
    route: list = [None] * n
    queue: deque[int] = deque()
    for node, path in starts:
        if path_of[node] is None:
            path_of[node] = path
        if not seen[node]:
            seen[node] = 1
            route[node] = path
            queue.append(node)
    while queue:
        node = queue.popleft()
        here, path = nodes[node], route[node]
        edges = here.children
        if here.slot_variables:  # optimizer slots, after the children: below their owner's path
            edges = edges + tuple((slot, slot_name) for _var, slot_name, slot in here.slot_variables)
        for child, local in edges:
            if 0 <= child < n and not seen[child]:
                seen[child] = 1
                below = route[child] = f"{path}/{local}"
                if path_of[child] is None:
                    path_of[child] = below
                queue.append(child)
    return seen


def read_object_graph(reader) -> ObjectGraph:
    """Decode the checkpoint's object graph.

    Raises:
        CorruptCheckpointError: it cannot be read or decoded.
    """
    try:
        nodes = reader.object_graph_nodes()
    except (TensorReadError, UnsupportedFormatError, WireFormatError, IndexError, AttributeError, TypeError) as e:
        raise CorruptCheckpointError(f"the checkpoint's object graph {OBJECT_GRAPH_KEY} is unusable ({e})") from e
    if not nodes:
        raise CorruptCheckpointError(f"the checkpoint's object graph {OBJECT_GRAPH_KEY} is empty")
    with paused_gc():  # a list and a dict entry per node, none cyclic: no collection walks them while made
        return _derive(nodes)


def _roots(edges, n: int) -> dict[str, int]:
    return {name: child for child, name in edges if 0 <= child < n}


def _derive(nodes: list) -> ObjectGraph:
    n = len(nodes)
    edges = nodes[0].children
    roots = _roots(edges, n)
    optimizers = {
        name
        for name, node in roots.items()
        if nodes[node].children and any(local in _ITERATION_NAMES for _c, local in nodes[node].children)
    }
    key_of: list = [None] * n
    node_of: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for attr, key in node.attributes:
            if attr == _VALUE:
                key_of[i] = key
                if key not in node_of:
                    node_of[key] = i
    path_of: list = [None] * n
    if not optimizers and len(roots) == len(edges):
        # Each edge names a node of its own (no name repeated, none out of range): the starts are the root's
        # edges themselves, in the same order (a flat checkpoint's 100,000 pairs are not made again).
        in_model = _walk(nodes, edges, path_of)
    else:
        in_model = _walk(nodes, [(node, name) for name, node in roots.items() if name not in optimizers], path_of)
        _walk(nodes, [(node, name) for name, node in roots.items() if name in optimizers], path_of)
    children = [node.children for node in nodes]
    return ObjectGraph(children, optimizers, key_of, node_of, path_of, in_model)
