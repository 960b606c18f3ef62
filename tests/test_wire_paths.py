"""The C walks of a decoded object graph (``_wire.object_walk``, ``_wire.object_paths``) against the Python code.

``object_walk`` stands in for ``formats.tf2.objects._walk_py`` and ``object_paths`` for rules 1 to 3 of
``readers.bundle._object_path_lookup_py`` (``_attribute_paths``). They answer only when every part of the graph
they read is of the form the decoders give it (``ObjectNode`` nodes of exact tuples, ints and strs) and return
None otherwise, having changed nothing. So on every input:

* where C answers, its answer equals the pure-Python one: the nodes reached and every entry of ``path_of``
  (values and types), the dict of paths with its items in the same order;
* where C defers, ``path_of`` is untouched, and the public function (``_walk``, ``_object_path_lookup``) gives
  exactly what the pure-Python one gives, errors and messages included;
* on a well-formed graph C answers (a C path that always deferred would pass the two rules above).

Graphs: the object graphs of the TF2 sample and of checkpoints TensorFlow builds here (legacy optimizers' slot
variables, a hash table, a variable reached by two routes, names with "/" and non-ASCII letters); a large random
one; hypothesis-built graphs with self-loops, cycles, repeated edges, ids out of range, negative and huge, empty,
non-ASCII, surrogate and "/"-holding names, repeated starts and a ``path_of`` already partly set; and all of
these with one part of a wrong type put anywhere in them.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptdoctor.formats.tf2 import objects
from ckptdoctor.readers import bundle
from ckptdoctor.readers.bundle import OPTIMIZER_SLOT_SEGMENT, VARIABLE_VALUE_ATTRIBUTE, BundleReader
from ckptdoctor.readers.protowire import ObjectNode

ROOT = Path(__file__).resolve().parents[1]
TF2 = ROOT / "sample_ckpts" / "tf2-manager" / "ckpts" / "ckpt-1"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

wire = importlib.import_module("ckptdoctor.readers._wire")


def test_functions_are_built():
    assert {"object_walk", "object_paths"} <= set(dir(wire))
    if os.environ.get("CKPTDOCTOR_PURE_PYTHON", "") in ("", "0"):
        assert objects._wire is wire and bundle._wire is wire
    else:
        assert objects._wire is None and bundle._wire is None


# ------------------------------------------------------------------------------------------- helpers


def outcome(fn, *args):
    """``("ok", result)`` or ``("error", type, message)``."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - any exception: the public function must give the same one
        return ("error", type(e), str(e))


def same_list(a: list, b: list) -> bool:
    """Equal lists whose items have the same types (a str is not a str subclass, None is None)."""
    return a == b and [type(x) for x in a] == [type(x) for x in b]


def same_outcome(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return a == b
    x, y = a[1], b[1]
    if isinstance(x, dict):
        return type(x) is type(y) and same_list(list(x.items()), list(y.items()))
    return type(x) is type(y) and x == y


def check_walk(nodes, starts, path_of=None, answers: bool | None = None):
    """``object_walk`` against ``_walk_py``, then ``_walk`` against ``_walk_py``; each on its own copy of ``path_of``.

    ``answers``: True, C must answer; False, it must defer; None, either. Returns C's answer.
    """
    path_of = [None] * len(nodes) if path_of is None else path_of
    starts = list(starts)
    py_paths = list(path_of)
    py = outcome(objects._walk_py, nodes, starts, py_paths)
    c_paths = list(path_of)
    c = wire.object_walk(nodes, ObjectNode, starts, c_paths)
    if c is None:
        assert answers is not True, (nodes, starts)
        assert len(c_paths) == len(path_of) and all(x is y for x, y in zip(c_paths, path_of))
    else:
        assert answers is not False, (nodes, starts)
        assert py[0] == "ok", (nodes, starts, py)
        assert type(c) is bytearray and c == py[1], (nodes, starts, c, py)
        assert same_list(c_paths, py_paths), (nodes, starts, c_paths, py_paths)
    public_paths = list(path_of)
    assert same_outcome(outcome(objects._walk, nodes, iter(starts), public_paths), py)
    assert same_list(public_paths, py_paths)
    return c


def pure_attribute_paths(nodes):
    return bundle._attribute_paths(nodes) if len(nodes) else {}


def check_paths(nodes, keys=(), answers: bool | None = None):
    """``object_paths`` against ``_attribute_paths``, then ``_object_path_lookup`` against ``_object_path_lookup_py``
    (rule 4 for ``keys`` included). ``answers`` as in ``check_walk``. Returns C's answer."""
    py = outcome(pure_attribute_paths, nodes)
    c = wire.object_paths(nodes, ObjectNode, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT)
    if c is None:
        assert answers is not True, nodes
    else:
        assert answers is not False, nodes
        assert py[0] == "ok", (nodes, py)
        assert same_outcome(("ok", c), py), (nodes, c, py)
    keys = list(keys)
    expected = outcome(bundle._object_path_lookup_py, nodes, keys)
    assert same_outcome(outcome(bundle._object_path_lookup, nodes, keys), expected), nodes
    return c


def root_starts(nodes) -> tuple[list, list]:
    """The starts of ``_derive``'s two walks: the model's root children, then the optimizers'."""
    roots = objects._roots(nodes[0].children, len(nodes))
    optimizers = {
        name
        for name, node in roots.items()
        if any(local in objects._ITERATION_NAMES for _c, local in nodes[node].children)
    }
    model = [(node, name) for name, node in roots.items() if name not in optimizers]
    return model, [(node, name) for name, node in roots.items() if name in optimizers]


def check_graph(nodes, keys=(), answers: bool | None = None) -> None:
    """Both functions on ``nodes``: the walks of ``_derive`` (the second from the first's ``path_of``), walks from
    the root and from every node, and the paths."""
    n = len(nodes)
    check_paths(nodes, keys, answers)
    if n == 0:
        check_walk(nodes, [], answers=answers)
        return
    try:
        model, optimizers = root_starts(nodes)
    except Exception:  # the root itself of a wrong type (_derive stops there too): the walks from every node only
        model = optimizers = []
    path_of: list = [None] * n
    check_walk(nodes, model, path_of, answers)
    try:  # the second walk starts from the first's path_of, as in _derive (as far as the first got)
        objects._walk_py(nodes, model, path_of)
    except Exception:  # a part of a wrong type: what the first walk set before it stopped
        pass
    check_walk(nodes, optimizers, path_of, answers)
    check_walk(nodes, [(0, "")], answers=answers)
    check_walk(nodes, [(i, f"s{i}") for i in range(n)] + [(0, "again")], answers=answers)


# ---------------------------------------------------------------------------------------- real graphs

_BUILD = r"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
import tf_keras

out = sys.argv[1]
# A tf_keras model with a nested one, legacy Adam (slot variables); a hash table (keys found by rule 4).
inner = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,)), tf_keras.layers.BatchNormalization()])
model = tf_keras.Sequential([tf_keras.layers.Dense(4, input_shape=(3,)), inner, tf_keras.layers.Dense(2)])
adam = tf_keras.optimizers.legacy.Adam()
with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(tf.ones([2, 3]), training=True))
adam.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
table = tf.lookup.experimental.MutableHashTable(key_dtype=tf.string, value_dtype=tf.int64, default_value=-1)
table.insert(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64))
step = tf.Variable(3, dtype=tf.int64)
tf.train.Checkpoint(model=model, optimizer=adam, table=table, step=step).write(os.path.join(out, "legacy", "ckpt"))

# A variable reached by two routes, local names with "/" and non-ASCII letters, two optimizers' slots.
root = tf.Module()
shared = tf.Variable([1.0, 2.0])
setattr(root, "n\u00e4me/\u00e9", shared)
root.alias = shared
root.sub = tf.Module()
root.sub.w = tf.Variable([[1.0]])
root.sub.items = [tf.Variable(0.5), {"k/ey": tf.Variable(1.5)}]
variables = [shared, root.sub.w, root.sub.items[0]]
sgd = tf_keras.optimizers.legacy.SGD(momentum=0.9)
rms = tf_keras.optimizers.legacy.RMSprop(momentum=0.5)
for opt in (sgd, rms):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(shared) + tf.reduce_sum(root.sub.w) + root.sub.items[0]
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
tf.train.Checkpoint(root=root, **{"sgd": sgd, "rms/\u00fc": rms}).write(os.path.join(out, "odd", "ckpt"))
"""


def read_graph(prefix) -> tuple[list, list[str]]:
    reader = BundleReader(str(prefix))
    return reader.object_graph_nodes(), list(reader._entries)


@pytest.fixture(scope="module")
def real_graphs(tmp_path_factory) -> list[tuple[list, list[str]]]:
    """The TF2 sample's graph, and those of two checkpoints with slot variables TensorFlow writes here."""
    out = tmp_path_factory.mktemp("graphs")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    graphs = [read_graph(TF2), read_graph(out / "legacy" / "ckpt"), read_graph(out / "odd" / "ckpt")]
    assert not any(node.slot_variables for node in graphs[0][0])
    assert all(any(node.slot_variables for node in nodes) for nodes, _keys in graphs[1:])
    return graphs


def test_real_graphs(real_graphs):
    for nodes, keys in real_graphs:
        check_graph(nodes, keys, answers=True)
        paths = bundle._object_path_lookup(nodes, keys)
        assert any(OPTIMIZER_SLOT_SEGMENT in p for p in paths.values()) == any(n.slot_variables for n in nodes)
    legacy = bundle._object_path_lookup(*real_graphs[1])
    assert legacy["table/.ATTRIBUTES/table-keys"] == "table/table-keys"  # rule 4, after the C part
    odd = bundle._object_path_lookup(*real_graphs[2])
    assert odd["n\u00e4me.S\u00e9/.OPTIMIZER_SLOT/rms.S\u00fc/momentum/.ATTRIBUTES/VARIABLE_VALUE"] == (
        "n\u00e4me/\u00e9/.OPTIMIZER_SLOT/rms/\u00fc/momentum"
    )


def test_derive_is_the_same_without_c(real_graphs, monkeypatch):
    """The whole ObjectGraph (path_of and in_model from the two walks) with C and with the Python walk."""
    for nodes, _keys in real_graphs:
        with_c = objects._derive(nodes)
        monkeypatch.setattr(objects, "_wire", None)
        without = objects._derive(nodes)
        monkeypatch.undo()
        assert with_c == without and same_list(with_c.path_of, without.path_of)
        assert type(with_c.in_model) is bytearray and any(with_c.in_model)


def test_real_graphs_with_one_part_of_a_wrong_type(real_graphs):
    rng = random.Random(1)
    for nodes, keys in real_graphs:
        for _ in range(150):
            check_graph(corrupt(nodes, rng), keys)


def big_graph(n: int, seed: int) -> list:
    """``n`` nodes: a tree under the root, extra edges (back, cross, self, duplicate, out of range), slot variables
    between random nodes, two attributes a node on a third of them (some keys shared)."""
    rng = random.Random(seed)
    children: list[list] = [[] for _ in range(n)]
    for i in range(1, n):
        children[rng.randrange(max(1, i // 2), i) if i > 2 else 0].append((i, f"c{i % 97}"))
    for _ in range(n):
        a = rng.randrange(n)
        children[a].append((rng.choice([rng.randrange(n), a, -1, n, 2**64]), rng.choice(["", "x", "\u00e9/\udc80"])))
    slots: list[list] = [[] for _ in range(n)]
    for _ in range(n // 10):
        slots[rng.randrange(n)].append((rng.randrange(-1, n + 1), rng.choice(["m", "v", ""]), rng.randrange(n + 1)))
    out = []
    for i in range(n):
        attributes = []
        if i % 3 == 0:
            attributes = [(VARIABLE_VALUE_ATTRIBUTE, f"k{i}"), ("other", f"k{rng.randrange(n)}")]
        out.append(ObjectNode(tuple(children[i]), tuple(attributes), tuple(slots[i])))
    return out


def test_big_random_graphs():
    for seed in range(3):
        nodes = big_graph(20000, seed)
        check_graph(nodes, [f"k{i}/.ATTRIBUTES/x" for i in range(0, 300, 3)], answers=True)
        assert sum(objects._walk(nodes, [(0, "r")], [None] * len(nodes))) > 15000


# ------------------------------------------------------------------------------------ random graphs

_LETTERS = ["a", "b", "/", ".", "", "\u00e9", "\u0100", "\udc80", "\ud83d", "\U0001f600", "VARIABLE_VALUE", " "]
names = st.lists(st.sampled_from(_LETTERS), max_size=3).map("".join)
_HUGE = [2**31, 2**63 - 1, 2**63, 2**64, 2**100, -1, -2, -(2**63), -(2**63) - 1, -(2**100)]


def ids(n: int):
    return st.integers(0, max(n - 1, 0)) | st.integers(-2, n + 1) | st.sampled_from(_HUGE)


@st.composite
def graphs(draw, min_size: int = 0) -> list:
    n = draw(st.integers(min_size, 7))
    nodes = []
    for _ in range(n):
        children = draw(st.lists(st.tuples(ids(n), names), max_size=4))
        keys = st.sampled_from(["k0", "k1", "a/.ATTRIBUTES/b", ""]) | names
        attributes = draw(
            st.lists(st.tuples(st.sampled_from([VARIABLE_VALUE_ATTRIBUTE, "t"]) | names, keys), max_size=3)
        )
        slots = draw(st.lists(st.tuples(ids(n), names, ids(n)), max_size=3))
        nodes.append(ObjectNode(tuple(children), tuple(attributes), tuple(slots)))
    return nodes


@FUZZ
@given(graphs(), st.data())
def test_random_graphs(nodes, data):
    n = len(nodes)
    keys = data.draw(st.lists(st.sampled_from(["k0/x", "a/.ATTRIBUTES/b/c", "k1"]) | names, max_size=4))
    check_paths(nodes, keys, answers=True)
    if n == 0:
        check_walk(nodes, [], answers=True)
        return
    starts = data.draw(st.lists(st.tuples(st.integers(0, n - 1), names), max_size=5))
    path_of = data.draw(st.lists(st.none() | names, min_size=n, max_size=n))
    check_walk(nodes, starts, answers=True)
    check_walk(nodes, starts, path_of, answers=True)
    check_graph(nodes, keys, answers=True)


@FUZZ
@given(graphs(min_size=1), st.data())
def test_random_graphs_with_odd_starts_and_arguments(nodes, data):
    """Starts out of range or not (int, str) pairs, path_of too short or long: C defers, Python decides."""
    n = len(nodes)
    good = data.draw(st.lists(st.tuples(st.integers(0, n - 1), names), max_size=3))
    odd = data.draw(
        st.sampled_from(
            [(-1, "p"), (n, "p"), (2**64, "p"), (0, None), (0, 1), (0, b"p"), [0, "p"], (0,), (0, "p", 1), (True, "p")]
        )
    )
    starts = good + [odd] + good
    check_walk(nodes, starts, answers=False)
    for path_of in ([None] * (n - 1), [None] * (n + 1)):
        assert wire.object_walk(nodes, ObjectNode, good, path_of) is None
        py_paths = list(path_of)
        py = outcome(objects._walk_py, nodes, good, py_paths)
        assert same_outcome(outcome(objects._walk, nodes, good, path_of), py) and same_list(path_of, py_paths)


# ------------------------------------------------------------------------------- parts of a wrong type


class Int(int):
    pass


class Str(str):
    pass


class Node(ObjectNode):
    pass


Pair = namedtuple("Pair", "id name")

BAD_IDS = [1.0, True, "1", None, Int(1), b"\x01", 0.0]
BAD_NAMES = [b"a", None, Str("a"), 1, Str("")]
BAD_EDGES = [[1, "a"], (1,), (1, "a", "x"), Pair(1, "a"), "ab", None, ()]
BAD_TUPLES = [None, 0, "ab"]  # children, attributes or slot variables; a list of its items is added too


def corrupt_tuple(items: tuple, rng: random.Random, bad_item) -> object:
    """``items`` with one item replaced by (or, when empty, holding only) ``bad_item()``; or not a tuple."""
    if rng.random() < 0.2:
        return rng.choice([*BAD_TUPLES, list(items)])
    out = list(items)
    if out and rng.random() < 0.8:
        i = rng.randrange(len(out))
        out[i] = bad_item(out[i])
    else:
        out.insert(rng.randrange(len(out) + 1), bad_item((0, "a", 0)))
    return tuple(out)


def bad_edge(edge, rng: random.Random, width: int) -> object:
    """``edge`` ((id, name) or (var, name, slot)) with one part of a wrong type, or not such a tuple."""
    edge = tuple(edge)[:width] if len(edge) >= width else (0, "a", 0)[:width]
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(BAD_EDGES)
    parts = list(edge)
    if kind == 1:
        parts[rng.choice([0, 2]) if width == 3 else 0] = rng.choice(BAD_IDS)
    else:
        parts[1] = rng.choice(BAD_NAMES)
    return tuple(parts)


def bad_attribute(attribute, rng: random.Random) -> object:
    """``attribute`` (name, key) with one part of a wrong type, or not such a tuple."""
    if rng.random() < 0.3:
        return rng.choice(BAD_EDGES)
    parts = list(attribute)
    parts[rng.randrange(2)] = rng.choice(BAD_NAMES)
    return tuple(parts)


def corrupt(nodes: list, rng: random.Random, at: int | None = None) -> list:
    """A copy of ``nodes`` with one part of a wrong type: in node ``at`` (or a random one)."""
    out = list(nodes)
    i = rng.randrange(len(out)) if at is None else at
    children, attributes, slots = out[i]
    kind = rng.randrange(4)
    if kind == 0:
        children = corrupt_tuple(children, rng, lambda e: bad_edge(e, rng, 2))
    elif kind == 1:
        attributes = corrupt_tuple(attributes, rng, lambda e: bad_attribute(e, rng))
    elif kind == 2:
        slots = corrupt_tuple(slots, rng, lambda e: bad_edge(e, rng, 3))
    else:
        out[i] = rng.choice(
            [tuple(out[i]), Node(*out[i]), tuple.__new__(ObjectNode, (children, attributes)), None, list(out[i])]
        )
        return out
    out[i] = tuple.__new__(ObjectNode, (children, attributes, slots))
    return out


@FUZZ
@given(graphs(min_size=1), st.integers(0, 2**32))
def test_random_graphs_with_one_part_of_a_wrong_type(nodes, seed):
    check_graph(corrupt(nodes, random.Random(seed)), ["k0/x", "a/.ATTRIBUTES/b/c"])


def test_a_wrong_part_where_c_reads_it_defers():
    """At the root (read by every walk from it), each kind of wrong part: C defers."""
    base = [
        ObjectNode(((1, "a"), (2, "b")), (("t", "k0"), (VARIABLE_VALUE_ATTRIBUTE, "k1")), ((1, "s", 2),)),
        ObjectNode(((0, "up"),), ((VARIABLE_VALUE_ATTRIBUTE, "k2"),), ()),
        ObjectNode((), (), ()),
    ]
    rng = random.Random(7)
    for _ in range(400):
        nodes = corrupt(base, rng, at=0)
        children, attributes, slots = nodes[0] if isinstance(nodes[0], tuple) and len(nodes[0]) == 3 else (0, 0, 0)
        walk_reads = type(nodes[0]) is not ObjectNode or not (
            type(children) is tuple
            and type(slots) is tuple
            and all(type(e) is tuple and len(e) == 2 for e in children)
            and all(type(s) is tuple and len(s) == 3 for s in slots)
            and all(type(e[0]) is int and type(e[1]) is str for e in children)
            and all(type(s[1]) is str and type(s[2]) is int for s in slots)
        )
        check_walk(nodes, [(0, "r")], answers=None if not walk_reads else False)
        check_paths(nodes, ["k0"], answers=None if nodes[0] == base[0] else False)
    # The variable of a slot is not read by the walk (nor by _walk_py): a wrong one there changes nothing.
    nodes = [base[0]._replace(slot_variables=((1.5, "s", 2),)), base[1], base[2]]
    check_walk(nodes, [(0, "r")], answers=True)
    check_paths(nodes, answers=False)
    # Parts of a node no walk reaches are not read.
    nodes = [*base, ObjectNode(None, None, None), "not a node"]
    check_paths(nodes, ["k0"], answers=True)
    check_walk(nodes, [(0, "r")], answers=True)
    check_walk(nodes, [(0, "r"), (4, "x")], answers=False)


def test_arguments():
    nodes = [ObjectNode(((1, "a"),), (), ()), ObjectNode((), ((VARIABLE_VALUE_ATTRIBUTE, "k"),), ())]
    assert wire.object_walk(nodes, ObjectNode, [(0, "r")], [None, None]) == bytearray(b"\x01\x01")
    assert wire.object_paths(nodes, ObjectNode, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT) == {"k": "a"}
    assert wire.object_paths(tuple(nodes), ObjectNode, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT) == {"k": "a"}
    assert wire.object_walk(tuple(nodes), ObjectNode, [(0, "r")], [None, None]) is None
    assert wire.object_walk(nodes, ObjectNode, ((0, "r"),), [None, None]) is None
    assert wire.object_walk(nodes, ObjectNode, [(0, "r")], (None, None)) is None
    for node_type in (list, None, Node, tuple):
        paths = [None, None]
        assert wire.object_walk(nodes, node_type, [(0, "r")], paths) is None and paths == [None, None]
        assert wire.object_paths(nodes, node_type, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT) is None
    for value, segment in ((None, "s"), ("v", b"s"), (Str("v"), "s")):
        assert wire.object_paths(nodes, ObjectNode, value, segment) is None
    assert wire.object_paths([], ObjectNode, "v", "s") == {}
    assert wire.object_walk([], ObjectNode, [], []) == bytearray()
    for fn in (wire.object_walk, wire.object_paths):
        with pytest.raises(TypeError):
            fn(nodes, ObjectNode, [])


def test_strings_are_built_exactly():
    """Joins of every width of character (ASCII, Latin-1, UCS-2 with lone surrogates, astral), empty parts."""
    parts = ["", "a", "\u00e9", "\u0100", "\udc80", "\U0001f600", "a/b", "VARIABLE_VALUE"]
    nodes = [ObjectNode(tuple((i + 1, p) for i, p in enumerate(parts)), (), ())]
    for i in range(len(parts)):
        node_children = tuple((j + 1, q) for j, q in enumerate(parts) if j != i)
        attributes = tuple((q, f"k{i}/{q}") for q in parts)
        slots = tuple((j + 1, q, len(parts) + 1 + (i * len(parts) + j) % 5) for j, q in enumerate(parts))
        nodes.append(ObjectNode(node_children, attributes, slots))
    nodes += [ObjectNode((), ((VARIABLE_VALUE_ATTRIBUTE, f"slot{k}"), ("x", f"sx{k}")), ()) for k in range(5)]
    check_graph(nodes, answers=True)
    for p in parts:
        check_walk(nodes, [(i, p) for i in range(len(nodes))], answers=True)
    paths = wire.object_paths(nodes, ObjectNode, VARIABLE_VALUE_ATTRIBUTE, OPTIMIZER_SLOT_SEGMENT)
    assert paths["k0/"] == ""  # node 1 (the root's child "") has the root's path "": the attribute's name alone
    assert paths["k1/"] == "a/"  # node 2's path "a" and the attribute "" joined
    assert paths["k2/\u00e9"] == "\u00e9/\u00e9"
    assert paths["k1/VARIABLE_VALUE"] == "a"
    assert "\udc80/\U0001f600" in paths.values() or "\U0001f600/\udc80" in paths.values()
