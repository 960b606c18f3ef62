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

from collections import deque
from dataclasses import dataclass, field

from ckptdoctor.constants import OBJECT_GRAPH_KEY
from ckptdoctor.errors import CorruptCheckpointError, TensorReadError, UnsupportedFormatError
from ckptdoctor.readers.protowire import WireFormatError

__all__ = ["ObjectGraph", "read_object_graph", "has_object_graph"]

_ITERATION_NAMES = frozenset({"iterations", "_iterations", "iter"})
_VALUE = "VARIABLE_VALUE"
_BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")


def has_object_graph(reader) -> bool:
    """Whether the bundle is a TF2 object-based checkpoint (asked of the index alone: no listing is built)."""
    return reader.has_tensor(OBJECT_GRAPH_KEY)


@dataclass
class ObjectGraph:
    """The decoded object graph with what ckptdoctor derives from it."""

    nodes: list
    roots: dict[str, int]  # root child name -> node id
    optimizers: set[str]  # names of the optimizer root children
    key_of: dict[int, str] = field(default_factory=dict)  # node -> its VARIABLE_VALUE key
    node_of: dict[str, int] = field(default_factory=dict)  # the reverse
    path_of: dict[int, str] = field(default_factory=dict)  # node -> its path from its own root child
    model_nodes: set[int] = field(default_factory=set)  # nodes reachable from a non-optimizer root child

    def child(self, node: int, name: str) -> int | None:
        for child, local in self.nodes[node].children:
            if local == name:
                return child
        return None

    def bn_layers(self) -> list[dict]:
        """One ``diagnose_bn`` spec per BN layer of the model's objects, named by its path."""
        layers = []
        for node in self.model_nodes:
            children = self.nodes[node].children
            if len(children) < 2:  # a variable, or an object with one child: never a BN layer
                continue
            kids: dict = dict.fromkeys(_BN_WEIGHTS)
            for child, local in reversed(children):  # the first child of a name wins, as in child()
                if local in kids:
                    kids[local] = child
            if kids["moving_mean"] is None or kids["moving_variance"] is None:
                continue
            keys = {name: self.key_of.get(c) if c is not None else None for name, c in kids.items()}
            if keys["moving_mean"] is None or keys["moving_variance"] is None:
                continue
            layers.append({"layer": self.path_of[node], **keys, "channels": None, "trainable": None})
        return sorted(layers, key=lambda layer: layer["layer"])

    def role(self, key: str) -> str | None:
        """``optimizer_slot``/``step`` for optimizer state and root counters; None: a model tensor or unknown."""
        node = self.node_of.get(key)
        if node is None or node in self.model_nodes:
            return None
        path = self.path_of.get(node, "")
        head, _, leaf = path.partition("/")
        if head in self.optimizers:
            return "step" if leaf.rsplit("/", 1)[-1] in _ITERATION_NAMES else "optimizer_slot"
        if "/" not in path:  # a root scalar: save_counter, a step counter
            return "step"
        return None


def _walk(nodes: list, starts: list[tuple[int, str]], path_of: dict[int, str]) -> set[int]:
    """Breadth-first from ``starts`` (node, path), first route wins; returns the nodes reached."""
    seen = set()
    queue = deque(starts)
    for node, path in starts:
        path_of.setdefault(node, path)
        seen.add(node)
    while queue:
        node, path = queue.popleft()
        for child, local in nodes[node].children:
            if 0 <= child < len(nodes) and child not in seen:
                seen.add(child)
                path_of.setdefault(child, f"{path}/{local}")
                queue.append((child, f"{path}/{local}"))
        for _var, slot_name, slot in nodes[node].slot_variables:  # optimizer slots: owner's path
            if 0 <= slot < len(nodes) and slot not in seen:
                seen.add(slot)
                path_of.setdefault(slot, f"{path}/{slot_name}")
                queue.append((slot, f"{path}/{slot_name}"))
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
    roots = {name: child for child, name in nodes[0].children if 0 <= child < len(nodes)}
    optimizers = {
        name for name, node in roots.items() if any(local in _ITERATION_NAMES for _c, local in nodes[node].children)
    }
    graph = ObjectGraph(nodes, roots, optimizers)
    for i, node in enumerate(nodes):
        for attr, key in node.attributes:
            if attr == _VALUE:
                graph.key_of[i] = key
                graph.node_of.setdefault(key, i)
    graph.model_nodes = _walk(nodes, [(n, name) for name, n in roots.items() if name not in optimizers], graph.path_of)
    _walk(nodes, [(n, name) for name, n in roots.items() if name in optimizers], graph.path_of)
    return graph
