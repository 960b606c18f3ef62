"""``formats.tf2.objects``: what a TF2 checkpoint's object graph says, derived without keeping the decoded nodes.

The graph is kept as lists indexed by node id (the nodes' children only), not as the decoded nodes and dicts
over them: on 100,000 tensors that is 30 MB less. Everything it answers is checked here against the dict-based
derivation it replaced (``_Reference``, the earlier code), on random graphs with the oddities a hostile or
unusual checkpoint has: edges to nodes that do not exist, two root names for one object, duplicate child names,
slot variables, several keys per node and one key on several nodes. No TensorFlow needed.
"""

from __future__ import annotations

import gc
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from ckptdoctor.formats.tf2.objects import read_object_graph
from ckptdoctor.readers.protowire import ObjectNode

_ITERATION_NAMES = frozenset({"iterations", "_iterations", "iter"})
_BN = ("moving_mean", "moving_variance", "gamma", "beta")


class _Reference:
    """The derivation as it was: dicts and sets over the decoded nodes."""

    def __init__(self, nodes: list):
        self.nodes = nodes
        self.roots = {name: child for child, name in nodes[0].children if 0 <= child < len(nodes)}
        self.optimizers = {
            name
            for name, node in self.roots.items()
            if any(local in _ITERATION_NAMES for _c, local in nodes[node].children)
        }
        self.key_of: dict[int, str] = {}
        self.node_of: dict[str, int] = {}
        self.path_of: dict[int, str] = {}
        for i, node in enumerate(nodes):
            for attr, key in node.attributes:
                if attr == "VARIABLE_VALUE":
                    self.key_of[i] = key
                    self.node_of.setdefault(key, i)
        model = [(n, name) for name, n in self.roots.items() if name not in self.optimizers]
        self.model_nodes = self._walk(model)
        self._walk([(n, name) for name, n in self.roots.items() if name in self.optimizers])

    def _walk(self, starts) -> set[int]:
        nodes, seen, queue = self.nodes, set(), deque(starts)
        for node, path in starts:
            self.path_of.setdefault(node, path)
            seen.add(node)
        while queue:
            node, path = queue.popleft()
            for child, local in nodes[node].children:
                if 0 <= child < len(nodes) and child not in seen:
                    seen.add(child)
                    self.path_of.setdefault(child, f"{path}/{local}")
                    queue.append((child, f"{path}/{local}"))
            for _var, slot_name, slot in nodes[node].slot_variables:
                if 0 <= slot < len(nodes) and slot not in seen:
                    seen.add(slot)
                    self.path_of.setdefault(slot, f"{path}/{slot_name}")
                    queue.append((slot, f"{path}/{slot_name}"))
        return seen

    def bn_layers(self) -> list[dict]:
        layers = []
        for node in self.model_nodes:
            children = self.nodes[node].children
            if len(children) < 2:
                continue
            kids: dict = dict.fromkeys(_BN)
            for child, local in reversed(children):
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
        node = self.node_of.get(key)
        if node is None or node in self.model_nodes:
            return None
        path = self.path_of.get(node, "")
        head, _, leaf = path.partition("/")
        if head in self.optimizers:
            return "step" if leaf.rsplit("/", 1)[-1] in _ITERATION_NAMES else "optimizer_slot"
        if "/" not in path:
            return "step"
        return None

    def child(self, node: int, name: str) -> int | None:
        for child, local in self.nodes[node].children:
            if local == name:
                return child
        return None


class _Reader:
    def __init__(self, nodes: list):
        self.nodes = nodes

    def object_graph_nodes(self) -> list:
        return self.nodes


_NAMES = st.sampled_from(["net", "opt", "iter", "m", "v", "moving_mean", "moving_variance", "gamma", "beta", "k"])


@st.composite
def object_graphs(draw) -> list:
    n = draw(st.integers(1, 14))
    ids = st.integers(-1, n + 1)  # -1 and n, n + 1: edges to nodes that do not exist
    keys = st.sampled_from([f"k{i}" for i in range(6)])
    nodes = []
    for _ in range(n):
        children = draw(st.lists(st.tuples(ids, _NAMES), max_size=5))
        attributes = draw(st.lists(st.tuples(st.sampled_from(["VARIABLE_VALUE", "OTHER"]), keys), max_size=2))
        slots = draw(st.lists(st.tuples(ids, _NAMES, ids), max_size=2))
        nodes.append(ObjectNode(tuple(children), tuple(attributes), tuple(slots)))
    return nodes


@settings(max_examples=400, deadline=None)
@given(object_graphs())
def test_derived_as_the_dict_based_derivation_did(nodes):
    graph, reference = read_object_graph(_Reader(nodes)), _Reference(nodes)
    n = len(nodes)
    assert graph.roots == reference.roots
    assert graph.optimizers == reference.optimizers
    assert {i: k for i, k in enumerate(graph.key_of) if k is not None} == reference.key_of
    assert graph.node_of == reference.node_of
    assert {i: p for i, p in enumerate(graph.path_of) if p is not None} == reference.path_of
    assert {i for i in range(n) if graph.in_model[i]} == reference.model_nodes
    for key in [f"k{i}" for i in range(6)]:
        assert graph.role(key) == reference.role(key), key
    for node in range(-2, n + 2):
        expected = reference.key_of.get(node)
        assert graph.key(node) == expected
        if 0 <= node < n:
            for name in ("net", "m", "gamma", "absent"):
                assert graph.child(node, name) == reference.child(node, name)
    ours, theirs = graph.bn_layers(), reference.bn_layers()
    assert sorted(map(sorted_items, ours), key=repr) == sorted(map(sorted_items, theirs), key=repr)
    if len({layer["layer"] for layer in theirs}) == len(theirs):  # no two layers of one path: one order
        assert ours == theirs


def sorted_items(layer: dict) -> tuple:
    return tuple(sorted(layer.items(), key=lambda kv: kv[0]))


def test_a_flat_checkpoint_keeps_no_decoded_node():
    # 100,000 variables under the root, as tf.train.Checkpoint(w00000=..., ...) writes them: the derived graph
    # holds the root's edges and one key and path per node, and none of the decoded nodes.
    n = 1000
    nodes = [ObjectNode(tuple((i + 1, f"w{i:05d}") for i in range(n)), (), ())]
    nodes += [ObjectNode((), (("VARIABLE_VALUE", f"w{i:05d}/.ATTRIBUTES/VARIABLE_VALUE"),), ()) for i in range(n)]
    graph = read_object_graph(_Reader(nodes))
    fields = list(vars(graph).values())
    assert not any(isinstance(x, ObjectNode) or x is nodes for x in fields + gc.get_referents(*fields))
    assert graph.children[0] is nodes[0].children and all(c == () for c in graph.children[1:])
    assert graph.path_of[1:] == [f"w{i:05d}" for i in range(n)] and graph.bn_layers() == []
    assert graph.role("w00007/.ATTRIBUTES/VARIABLE_VALUE") is None  # a model tensor
