"""The optional C decoders (``ckptdoctor/readers/_wire.c``) against the Python code they stand in for.

``_wire`` returns a result only for canonical, well-formed input and None (or, in an object graph, a node's
``(start, end)`` span) for anything else, which the Python code then decodes. So on every input:

* where C answers, its answer equals the pure-Python one (values, types, reprs; for the shape cache, its
  contents), and the Python code does not raise;
* where C defers, the Python code raises or answers, and the public function (C first, then Python) gives
  exactly what the pure-Python function gives, errors and messages included;
* on canonical input C answers (a C path that always deferred would pass the two rules above).

Inputs: the real encodings of the sample checkpoints and of the fuzz seeds, hand-built protobuf bytes
(hypothesis), and their truncations at every byte, single-byte changes, huge varints, lengths near 2**63
and 2**64, empty and non-bytes inputs. The pure-Python functions are called directly
(``_decode_bundle_entry_py``, ``iter_block``, ``_decode_object_graph_py``); a subprocess with
``CKPTDOCTOR_PURE_PYTHON=1`` checks whole indexes and listings end to end.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bundle_reader import varint

from ckptdoctor.readers import protowire, sstable
from ckptdoctor.readers.bundle import BundleReader
from ckptdoctor.readers.protowire import BundleEntry, ObjectNode

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_ckpts"
FUZZ_CORPUS = ROOT / "fuzz" / "corpus"
TF2 = SAMPLES / "tf2-manager" / "ckpts" / "ckpt-1"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 1 << 40
U64 = (1 << 64) - 1


def test_extension_is_built():
    """Fails when the build of the extension failed silently (it is optional at install time)."""
    wire = importlib.import_module("ckptdoctor.readers._wire")
    assert {"bundle_entry", "block_entries", "object_graph"} <= set(dir(wire))
    if os.environ.get("CKPTDOCTOR_PURE_PYTHON", "") in ("", "0"):
        assert protowire._wire is wire and sstable._wire is wire


wire = importlib.import_module("ckptdoctor.readers._wire")


# ------------------------------------------------------------------------------------------- helpers


def field(tag: int, payload: bytes) -> bytes:
    """A LEN field with a one-byte tag."""
    return bytes([tag]) + varint(len(payload)) + payload


def outcome(fn, *args):
    """``("ok", result)`` or ``("error", type, message)``."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - any exception: C must give the same one
        return ("error", type(e), str(e))


def same(a, b) -> bool:
    """Equal outcomes, down to the types of the results' parts (repr tells an int from a bool)."""
    return a == b and repr(a) == repr(b) and type(a[1]) is type(b[1])


def mutations(seed: bytes, few: bool = False) -> list[bytes]:
    """Every truncation, and single-byte changes at every position (a few values each, fewer if ``few``)."""
    out = [seed[:i] for i in range(len(seed))]
    for i, old in enumerate(seed):
        values = {0xFF, old ^ 1, old ^ 0x80}
        if not few:
            values |= {0, 1, 0x7F, 0x80, (old + 1) & 0xFF}
        for new in values:
            if new != old:
                out.append(seed[:i] + bytes([new]) + seed[i + 1 :])
    return out


# --------------------------------------------------------------------------------------- bundle entry

LIMIT = protowire._SHAPE_CACHE_LIMIT


def check_entry(buf, canonical: bool = False, limit: int = LIMIT) -> None:
    """C against ``_decode_bundle_entry_py`` on ``buf``, the shape cache included."""
    cache_saved = dict(protowire._SHAPE_CACHE)
    try:
        protowire._SHAPE_CACHE.clear()
        py = outcome(protowire._decode_bundle_entry_py, buf)
        py_cache = dict(protowire._SHAPE_CACHE)
        cache: dict = {}
        c = wire.bundle_entry(buf, BundleEntry, cache, limit)
        if c is None:
            assert not canonical, buf.hex()
            # What decode_bundle_entry does next: the Python code, from the cache C left.
            protowire._SHAPE_CACHE.clear()
            protowire._SHAPE_CACHE.update(cache)
            assert same(outcome(protowire._decode_bundle_entry_py, buf), py), buf
            if limit == LIMIT:
                assert py_cache == protowire._SHAPE_CACHE
        else:
            assert py[0] == "ok", (buf, py)
            assert type(c) is BundleEntry and same(("ok", c), py), (buf, c, py)
            assert all(type(d) is int for d in c.shape) and c.slices == ()
            if limit == LIMIT:
                assert cache == py_cache
            else:
                assert len(cache) <= max(limit, 0) and all(py_cache[k] == v for k, v in cache.items())
        protowire._SHAPE_CACHE.clear()
        assert same(outcome(protowire.decode_bundle_entry, buf), py), buf
    finally:
        protowire._SHAPE_CACHE.clear()
        protowire._SHAPE_CACHE.update(cache_saved)


def sample_values() -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the sample checkpoints' and the sstable fuzz seeds' indexes."""
    out = []
    files = sorted(SAMPLES.glob("**/*.index")) + sorted((FUZZ_CORPUS / "sstable").iterdir())
    for f in files:
        try:
            out.extend(sstable.read_table(str(f)))
        except Exception:  # noqa: BLE001 - a seed that is not a table
            continue
    return out


SAMPLE_ITEMS = sample_values()
#: The BundleEntryProto values TensorFlow wrote (not the headers, not the partitioned tensors' own entries).
REAL_ENTRIES = [v for k, v in SAMPLE_ITEMS if k and b"\x3a" not in v[:1]]


def test_real_entries_are_decoded_in_c():
    assert len(REAL_ENTRIES) > 100
    canonical = 0
    for value in REAL_ENTRIES:
        entry = protowire._decode_bundle_entry_py(value)
        check_entry(value, canonical=not entry.slices)
        canonical += not entry.slices
    assert canonical > 100


def test_entry_seeds_and_their_mutations():
    seeds = [p.read_bytes() for p in sorted((FUZZ_CORPUS / "protowire").iterdir()) if p.name.startswith("entry-")]
    seeds += [v for _k, v in SAMPLE_ITEMS[:40]]
    seeds.append(bytes.fromhex("0807120412020805 20d401 28dd01 35daf0102c".replace(" ", "")))
    for seed in seeds:
        for buf in [seed, *mutations(seed)]:
            check_entry(buf)


def test_entry_edges():
    cases = [b"", b"\x08", b"\x08\x80", b"\x35\x01\x02\x03", b"\x12", b"\x12\x01", b"\x12\x00", b"\x3a\x00"]
    for tag in (0x08, 0x18, 0x20, 0x28):
        for v in (0, 1, 127, 128, 2**21, 2**28, 2**35, 2**62, 2**63 - 1, 2**63, U64):
            cases.append(bytes([tag]) + varint(v))
        cases.append(bytes([tag]) + b"\xff" * 9 + b"\x01")  # 2**64 - 1 in ten bytes
        cases.append(bytes([tag]) + b"\xff" * 9 + b"\x02")  # 2**64: over 64 bits
        cases.append(bytes([tag]) + b"\x80" * 9 + b"\x00")  # zero, ten bytes
        cases.append(bytes([tag]) + b"\x80" * 10 + b"\x00")  # eleven bytes
        cases.append(bytes([tag]) + b"\x80" * 10)  # truncated
    for length in (1, 2**31, 2**63 - 1, 2**63, 2**64 - 2, U64):
        cases.append(b"\x12" + varint(length) + b"\x12\x02\x08\x05")
        cases.append(b"\x12\x06\x12" + varint(length) + b"\x08\x05")
        cases.append(b"\x12\x08\x12\x06\x08" + varint(length)[:5])
    for dim in (0, 5, 2**62, 2**63 - 1, 2**63, U64):
        cases.append(field(0x12, field(0x12, b"\x08" + varint(dim))))
    cases += [
        field(0x12, field(0x12, b"")),  # a Dim of size 0
        field(0x12, field(0x12, b"\x08\x05\x08\x06")),  # repeated size: last wins (Python)
        field(0x12, field(0x12, b"\x08\x05\x12\x01n")),  # a named Dim (Python)
        field(0x12, b"\x18\x01"),  # unknown_rank (Python raises)
        field(0x12, b"\x18\x00"),
        field(0x12, b"\x10\x05"),  # dim with wire type 0 (Python raises)
        b"\x08\x01\x8a\x00",  # a two-byte tag (generic decoder)
        b"\x30\x01",  # field 6 as a varint (generic decoder raises)
        b"\x18" + varint(U64) + b"\x18\x01",  # a negative shard_id, then a good one: last wins
        b"\x18\x01\x18" + varint(U64),
        b"\x35\xff\xff\xff\xff\x35\x01\x00\x00\x00",
    ]
    for buf in cases:
        check_entry(buf)
    # The forms C must answer.
    for buf in (b"", b"\x08\x01", b"\x12\x00", field(0x12, field(0x12, b"")), b"\x18" + varint(2**63 - 1)):
        check_entry(buf, canonical=True)


def test_entry_cache_and_arguments():
    buf = bytes.fromhex("0807120412020805 20d401 28dd01 35daf0102c".replace(" ", ""))
    for limit in (-5, 0, 1, 2):
        check_entry(buf, canonical=True, limit=limit)
    cache: dict = {}
    a = wire.bundle_entry(buf, BundleEntry, cache, LIMIT)
    b = wire.bundle_entry(buf, BundleEntry, cache, LIMIT)
    assert a == b and a.shape is b.shape and list(cache) == [b"\x12\x02\x08\x05"]
    cache = {b"\x12\x02\x08\x05": (7, 7)}  # a hit is used as it is, as the Python code uses it
    assert wire.bundle_entry(buf, BundleEntry, cache, LIMIT).shape == (7, 7)
    for bad in (bytearray(buf), memoryview(buf), buf.decode("latin-1"), None, 5):
        assert wire.bundle_entry(bad, BundleEntry, {}, LIMIT) is None
    assert wire.bundle_entry(buf, dict, {}, LIMIT) is None  # not a tuple type
    assert wire.bundle_entry(buf, BundleEntry, [], LIMIT) is None
    assert wire.bundle_entry(buf, BundleEntry, {}, "4096") is None
    assert wire.bundle_entry(buf, BundleEntry, {}, 2**70) is None
    with pytest.raises(TypeError):
        wire.bundle_entry(buf, BundleEntry, {})
    # The public function with a non-bytes buffer: the Python code decides (and raises on a bytearray).
    for other in (bytearray(buf), memoryview(buf), bytearray(b"\x08\x01"), memoryview(b"\x08\x01\x12\x00")):
        protowire._SHAPE_CACHE.clear()
        py = outcome(protowire._decode_bundle_entry_py, other)
        protowire._SHAPE_CACHE.clear()
        assert same(outcome(protowire.decode_bundle_entry, other), py)
    protowire._SHAPE_CACHE.clear()


dims = st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 300), max_size=5)
u64 = st.integers(0, 2**64 - 1) | st.integers(0, 2**20)


@st.composite
def entry_bytes(draw) -> bytes:
    """A BundleEntryProto: canonical fields in any order and number, sometimes an odd one."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["dtype", "shard", "offset", "size", "shape", "crc", "odd"]))
        if kind == "shape":
            shape = b"".join(field(0x12, b"\x08" + varint(d) if d or draw(st.booleans()) else b"") for d in draw(dims))
            parts.append(field(0x12, shape))
        elif kind == "crc":
            parts.append(b"\x35" + struct.pack("<I", draw(st.integers(0, 2**32 - 1))))
        elif kind == "odd":
            parts.append(draw(st.sampled_from([b"\x3a\x00", b"\x40\x01", b"\x8a\x00", b"\x3d\x00\x00\x00\x00"])))
        else:
            tag = {"dtype": 0x08, "shard": 0x18, "offset": 0x20, "size": 0x28}[kind]
            parts.append(bytes([tag]) + varint(draw(u64)))
    return b"".join(parts)


@FUZZ
@given(entry_bytes(), st.data())
def test_entries_hand_built_and_mutated(buf, data):
    canonical = not any(t in buf for t in (b"\x3a\x00", b"\x40\x01", b"\x8a\x00", b"\x3d\x00\x00\x00\x00"))
    check_entry(buf)
    if canonical:
        try:
            protowire._decode_bundle_entry_py(buf)
        except protowire.WireFormatError:
            pass  # a negative shard_id/offset/size
        else:
            if all(t not in buf for t in (b"\x3a", b"\x40", b"\x8a", b"\x3d")):
                check_entry(buf, canonical=True)
    if buf:
        i = data.draw(st.integers(0, len(buf) - 1))
        check_entry(buf[:i] + bytes([data.draw(st.integers(0, 255))]) + buf[i + 1 :])
        check_entry(buf[:i] + data.draw(st.binary(max_size=12)) + buf[i:])


@FUZZ
@given(st.binary(max_size=64))
def test_entries_random_bytes(buf):
    check_entry(buf)


# ---------------------------------------------------------------------------------------------- blocks


def check_block(block, budget: int = BIG) -> None:
    """C against ``list(iter_block(...))``: C defers exactly when iter_block raises or the keys exceed the budget."""
    py = outcome(lambda: list(sstable.iter_block(block, "t.index", "data block 0")))
    c = wire.block_entries(block, budget)
    over = py[0] == "ok" and sum(len(k) for k, _ in py[1]) > budget
    if c is None:
        assert py[0] == "error" or over, (block, py)
    else:
        assert not over and same(("ok", c), py), (block, c, py)
        assert all(type(k) is bytes and type(v) is bytes and type(kv) is tuple for kv in c for k, v in [kv])


def build_block(items: list[tuple[bytes, bytes]], restart_every: int = 16) -> bytes:
    """A LevelDB block: prefix-compressed entries, a restart every ``restart_every`` entries."""
    out = bytearray()
    restarts = []
    prev = b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    if not restarts:
        restarts = [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def sample_blocks() -> list[bytes]:
    """The index and data blocks of the sample checkpoints' and the sstable fuzz seeds' indexes."""
    out = []
    files = sorted(SAMPLES.glob("**/*.index")) + sorted((FUZZ_CORPUS / "sstable").iterdir())
    for f in files:
        data = f.read_bytes()
        try:
            _, index_handle = sstable.read_footer(data, "x")
            index = sstable.read_block(data, index_handle, "x", "index block")
            out.append(index)
            for _sep, handle in sstable.iter_block(index, "x", "index block"):
                h, _ = sstable._decode_handle(handle, 0, len(handle))
                out.append(sstable.read_block(data, h, "x", "data", limit=index_handle.offset))
        except Exception:  # noqa: BLE001 - a seed that is not a table
            continue
    return out


SAMPLE_BLOCKS = sample_blocks()


def test_real_blocks_and_their_mutations():
    assert len(SAMPLE_BLOCKS) >= 10
    for block in SAMPLE_BLOCKS:
        assert wire.block_entries(block, BIG) == list(sstable.iter_block(block, "x", "y"))
        for mutated in mutations(block):
            check_block(mutated)


def test_block_edges():
    good = build_block([(b"a", b"1"), (b"ab", b"2"), (b"abc", b"")], restart_every=2)
    cases = [b"", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\xff\xff\xff\xff"]
    cases += [b"\x00\x00\x00\x00\x01\x00\x00\x00", b"\x01\x00\x00\x00\x01\x00\x00\x00"]
    entries = [
        b"\x00\x01\x01ab",  # fine
        b"\x01\x01\x01ab",  # shares a byte with no key
        b"\x00" + varint(U64) + b"\x00",  # non_shared 2**64 - 1
        b"\x00" + varint(2**63) + b"\x00",
        b"\x00\x00" + varint(U64),
        b"\x00\x01" + varint(2**63 - 1) + b"a",
        b"\x00" + b"\xff" * 9 + b"\x02\x00",  # over 64 bits
        b"\x00" + b"\x80" * 10 + b"\x00\x00",  # eleven bytes
        b"\x00\x80",  # truncated
        b"\x00\x01\x05a",  # value past the entries
    ]
    for e in entries:
        cases.append(e + struct.pack("<II", 0, 1))
        cases.append(b"\x00\x01\x01xy" + e + struct.pack("<II", 0, 1))
    cases.append(good[:-8] + struct.pack("<II", 5, 1))  # first restart not at 0
    cases.append(good + b"")
    for block in cases + [good]:
        check_block(block)
    assert wire.block_entries(b"\x00\x00\x00\x00", BIG) == [] == list(sstable.iter_block(b"\x00" * 4, "x", "y"))
    assert wire.block_entries(good, BIG) == [(b"a", b"1"), (b"ab", b"2"), (b"abc", b"")]
    # The key budget: 6 key bytes in all.
    assert wire.block_entries(good, 6) is not None and wire.block_entries(good, 5) is None
    assert wire.block_entries(good, -1) is None and wire.block_entries(good, 2**70) is None
    for bad in (bytearray(good), memoryview(good), None, "abc"):
        assert wire.block_entries(bad, BIG) is None
    assert wire.block_entries(good, "6") is None
    with pytest.raises(TypeError):
        wire.block_entries(good)


@st.composite
def blocks(draw) -> bytes:
    keys = sorted(set(draw(st.lists(st.binary(max_size=12), max_size=40))))
    values = [draw(st.binary(max_size=8)) for _ in keys]
    return build_block(list(zip(keys, values)), draw(st.integers(1, 20)))


@FUZZ
@given(blocks(), st.data())
def test_blocks_hand_built_and_mutated(block, data):
    check_block(block)
    assert wire.block_entries(block, BIG) is not None
    budget = data.draw(st.integers(0, 400))
    check_block(block, budget)
    i = data.draw(st.integers(0, len(block) - 1))
    check_block(block[:i] + bytes([data.draw(st.integers(0, 255))]) + block[i + 1 :])
    check_block(block[:i] + data.draw(st.binary(max_size=8)) + block[i:])
    check_block(block[:i])


@FUZZ
@given(st.binary(max_size=48))
def test_blocks_random_bytes(block):
    check_block(block)
    check_block(block + struct.pack("<II", 0, 1))


def test_quadratic_keys_stay_within_the_budget():
    """Each entry shares its whole predecessor: C defers past the budget, and never holds more."""
    n = 20000
    body = b"\x00\x01\x00a" + b"".join(varint(i) + b"\x01\x00b" for i in range(1, n))
    block = body + struct.pack("<II", 0, 1)
    total = n * (n + 1) // 2
    assert wire.block_entries(block, total - 1) is None
    assert len(wire.block_entries(block[: 4 + 4 * 99] + struct.pack("<II", 0, 1), BIG)) == 100


# ---------------------------------------------------------------------------------------- object graph


def pure_graph(buf, keys):
    """``decode_object_graph`` in pure Python (its IndexError rule included)."""
    try:
        return protowire._decode_object_graph_py(buf, keys)
    except IndexError:
        raise protowire.WireFormatError("object graph truncated") from None


def check_graph(buf, keys=None, canonical: bool = False) -> None:
    """C against ``_decode_object_graph_py``, node by node, and the public function against the pure one."""
    keys = {} if keys is None else keys
    py = outcome(pure_graph, buf, keys)
    c = wire.object_graph(buf, keys, ObjectNode, protowire._VALUE_NAME)
    if c is None:
        assert not canonical, buf
    else:
        spans = protowire._node_spans(buf)  # C answers only when the top level is nodes only: no error here
        assert len(c) * 3 == len(spans)
        for i, node in enumerate(c):
            wt, a, b = spans[3 * i : 3 * i + 3]
            assert wt == 2
            if type(node) is tuple:
                assert not canonical, (buf, i)
                assert node == (a, b) and all(type(x) is int for x in node)
            else:
                assert type(node) is ObjectNode
                expected = outcome(protowire._decode_node, buf, a, b, keys)
                assert same(("ok", node), expected), (buf, i, node, expected)
                assert node.slot_variables == ()
                for name, key in node.attributes:
                    if name == "VARIABLE_VALUE":
                        assert name is protowire._VALUE_NAME
                    if key in keys:
                        assert key is keys[key]
    assert same(outcome(protowire.decode_object_graph, buf, keys), py), buf


def real_graph() -> tuple[bytes, dict[str, str]]:
    """The TF2 sample's object graph, and its tensor names as BundleReader.object_graph_nodes passes them."""
    reader = BundleReader(str(TF2))
    return reader.read_object_graph(), {name: name for name in reader._entries}


GRAPH, GRAPH_KEYS = real_graph()


def test_real_graph_is_decoded_in_c():
    c = wire.object_graph(GRAPH, GRAPH_KEYS, ObjectNode, protowire._VALUE_NAME)
    assert c is not None and len(c) > 20
    deferred = [n for n in c if type(n) is tuple]
    assert len(deferred) < len(c) // 2  # the optimizer's slot variables are left to Python
    assert any(n.attributes for n in c if type(n) is ObjectNode) and any(n.children for n in c if type(n) is ObjectNode)
    check_graph(GRAPH, GRAPH_KEYS)
    check_graph(GRAPH, {})
    assert protowire.decode_object_graph(GRAPH, GRAPH_KEYS) == pure_graph(GRAPH, GRAPH_KEYS)


def test_graph_mutations():
    seeds = [GRAPH, (FUZZ_CORPUS / "protowire" / "object-graph").read_bytes()]
    for seed in seeds:
        keys = GRAPH_KEYS if seed is GRAPH else {}
        for buf in mutations(seed, few=seed is GRAPH):
            check_graph(buf, keys)


def child(node_id: int, name: bytes) -> bytes:
    return b"\x08" + varint(node_id) + field(0x12, name)


def attribute(name: bytes | None, full_name: bytes | None, key: bytes | None) -> bytes:
    out = b""
    for tag, value in ((0x0A, name), (0x12, full_name), (0x1A, key)):
        if value is not None:
            out += field(tag, value)
    return out


def test_graph_edges():
    value = attribute(b"VARIABLE_VALUE", b"w", b"w/.ATTRIBUTES/VARIABLE_VALUE")
    canonical = [
        b"",
        b"\x0a\x00",
        field(0x0A, field(0x0A, child(1, b"a"))),
        field(0x0A, field(0x12, value)),
        field(0x0A, field(0x12, b"")),  # an empty attribute: ("", keys.get("", ""))
        field(0x0A, field(0x12, attribute(None, None, b"k"))),
        field(0x0A, field(0x12, attribute(b"n", None, None))),
        field(0x0A, field(0x12, attribute(b"VARIABLE_VALUE" * 10, b"f" * 200, b"k" * 300))),  # long lengths
        field(0x0A, field(0x0A, child(2**31 - 1, b"x" * 127)) + field(0x2A, b"\x01\x02")),
        field(0x0A, field(0x0A, b"\x08" + b"\x81\x80\x80\x80\x00" + field(0x12, b"z"))),  # a padded varint
        field(0x0A, field(0x0A, child(300, b"\xff\xfe") + b"")),  # not UTF-8: surrogateescape
        field(0x0A, b"") * 3,
    ]
    for buf in canonical:
        check_graph(buf, {"k": "k", "": ""}, canonical=True)
        check_graph(buf)
    odd = [
        b"\x12\x00",  # a top-level field other than nodes
        b"\x08\x01",
        b"\x8a\x00",  # a two-byte tag for field 1
        b"\x0a",
        b"\x0a\x05abc",
        b"\x0a" + varint(2**63) + b"\x00",
        b"\x0a" + varint(U64) + b"\x00",
        b"\x0a" + b"\xff" * 9 + b"\x02",
        field(0x0A, field(0x0A, child(2**31, b"a"))),  # node_id over int32: Python's generic path
        field(0x0A, field(0x0A, child(U64, b"a"))),
        field(0x0A, field(0x0A, child(1, b"x" * 128))),  # a two-byte name length
        field(0x0A, field(0x0A, b"\x08\x01\x12\x80" + b"\x00" + b"x" * 127)),  # a length byte >= 0x80
        field(0x0A, field(0x0A, b"\x08\x01\x12\x81" + b"\x00" + b"\x08\x02" * 64)),
        field(0x0A, field(0x0A, b"\x08\x01")),  # no name
        field(0x0A, field(0x0A, b"\x12\x01a\x08\x01")),  # other order
        field(0x0A, field(0x0A, b"\x08\x01\x12\x05a")),  # name past the child
        field(0x0A, field(0x12, b"\x12\x01f\x0a\x01n")),  # attribute fields out of order
        field(0x0A, field(0x12, b"\x0a\x01n\x0a\x01n")),  # repeated
        field(0x0A, field(0x12, b"\x0a\x05n")),  # past the attribute
        field(0x0A, field(0x12, b"\x0a" + varint(U64) + b"n")),
        field(0x0A, field(0x1A, b"\x08\x01\x12\x01s\x18\x02")),  # slot variables
        field(0x0A, field(0x22, b"")),  # registered saver
        field(0x0A, b"\x0a" + varint(2**63) + b"\x00"),
        field(0x0A, b"\x2a"),
        field(0x0A, field(0x12, value)) + b"\x12\x00",  # a node, then another field: all Python
    ]
    for buf in odd:
        check_graph(buf, {"k": "k"})
    for bad in (bytearray(canonical[2]), memoryview(canonical[2]), None, "x"):
        assert wire.object_graph(bad, {}, ObjectNode, "VARIABLE_VALUE") is None
    assert wire.object_graph(canonical[2], [], ObjectNode, "VARIABLE_VALUE") is None
    assert wire.object_graph(canonical[2], {}, list, "VARIABLE_VALUE") is None
    with pytest.raises(TypeError):
        wire.object_graph(canonical[2], {})
    # A Mapping that is not a dict: the Python code (keys.get) decides.
    from types import MappingProxyType

    keys = MappingProxyType({"w/.ATTRIBUTES/VARIABLE_VALUE": "w/.ATTRIBUTES/VARIABLE_VALUE"})
    assert protowire.decode_object_graph(canonical[3], keys) == pure_graph(canonical[3], keys)


names = st.binary(max_size=20) | st.sampled_from([b"VARIABLE_VALUE", b"w/.ATTRIBUTES/VARIABLE_VALUE", b"\xff"])


@st.composite
def graphs(draw) -> tuple[bytes, bool]:
    """A TrackableObjectGraph; whether every node is in the canonical form."""
    canonical = True
    nodes = []
    for _ in range(draw(st.integers(0, 6))):
        node = b""
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["child", "attribute", "has_values", "slot", "odd_child"]))
            if kind == "child":
                node += field(0x0A, child(draw(st.integers(0, 2**31 - 1) | st.integers(0, 300)), draw(names)[:127]))
            elif kind == "attribute":
                parts = [draw(st.none() | names) for _ in range(3)]
                node += field(0x12, attribute(*parts))
            elif kind == "has_values":
                node += field(0x2A, draw(st.binary(max_size=4)))
            elif kind == "slot":
                node += field(0x1A, b"\x08" + varint(draw(st.integers(0, 9))) + field(0x12, b"m") + b"\x18\x02")
                canonical = False
            else:
                node += field(0x0A, draw(st.sampled_from([b"\x08\x01", b"\x12\x01a\x08\x01", b"", b"\x10\x01"])))
                canonical = False
        nodes.append(field(0x0A, node))
    return b"".join(nodes), canonical


@FUZZ
@given(graphs(), st.data())
def test_graphs_hand_built_and_mutated(graph, data):
    buf, canonical = graph
    keys = {"w/.ATTRIBUTES/VARIABLE_VALUE": "w/.ATTRIBUTES/VARIABLE_VALUE", "": ""}
    check_graph(buf, keys, canonical=canonical)
    if buf:
        i = data.draw(st.integers(0, len(buf) - 1))
        check_graph(buf[:i] + bytes([data.draw(st.integers(0, 255))]) + buf[i + 1 :], keys)
        check_graph(buf[:i] + data.draw(st.binary(max_size=8)) + buf[i:], keys)
        check_graph(buf[:i], keys)


@FUZZ
@given(st.binary(max_size=64))
def test_graphs_random_bytes(buf):
    check_graph(buf)
    check_graph(b"\x0a" + varint(len(buf)) + buf)


# ------------------------------------------------------------------------- end to end, both processes

_SCRIPT = r"""
import json, sys
from ckptdoctor.readers import protowire, sstable
from ckptdoctor.readers.bundle import BundleReader

def outcome(fn):
    try:
        return ["ok", repr(fn())]
    except Exception as e:
        return ["error", type(e).__name__, str(e)]

out = {"native": protowire._wire is not None}
for path in sys.argv[1:]:
    data = open(path + ".index", "rb").read()
    def listing():
        r = BundleReader(path)
        return r._entries, r._slice_entries
    def graph():
        return protowire.decode_object_graph(BundleReader(path).read_object_graph())
    out[path] = [outcome(lambda: sstable.parse_table(data, "t.index")), outcome(listing), outcome(graph)]
print(json.dumps(out))
"""


def run_both(paths: list[str]) -> tuple[dict, dict]:
    results = []
    for pure in ("0", "1"):
        env = dict(os.environ, CKPTDOCTOR_PURE_PYTHON=pure)
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, *paths], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout))
    return results[0], results[1]


def test_whole_indexes_agree_with_the_pure_python_process(tmp_path):
    """Indexes rebuilt from the TF2 sample's items with changed values (valid checksums), read end to end with
    and without the C decoders, in one process each."""
    import random
    import shutil

    from test_bundle_reader import build_sstable

    items = sstable.read_table(str(TF2) + ".index")
    rng = random.Random(0)
    variants = [(items, 4096), (items, 64)]
    for _ in range(120):
        changed = list(items)
        i = rng.randrange(1, len(items))
        key, value = changed[i]
        j = rng.randrange(len(value))
        how = rng.choice(["flip", "byte", "cut", "insert"])
        if how == "flip":
            value = value[:j] + bytes([value[j] ^ rng.choice([0x01, 0x80, 0x40])]) + value[j + 1 :]
        elif how == "byte":
            value = value[:j] + bytes([rng.randrange(256)]) + value[j + 1 :]
        elif how == "cut":
            value = value[:j]
        else:
            value = value[:j] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 11))) + value[j:]
        changed[i] = (key, value)
        variants.append((changed, rng.choice([64, 4096])))
    paths = []
    for n, (variant, block_size) in enumerate(variants):
        folder = tmp_path / f"v{n}"
        folder.mkdir()
        for f in TF2.parent.glob(TF2.name + ".data-*"):
            shutil.copy(f, folder / f.name.replace(TF2.name, "ckpt"))
        (folder / "ckpt.index").write_bytes(build_sstable(variant, block_size=block_size))
        paths.append(str(folder / "ckpt"))
    native, pure = run_both(paths)
    assert native.pop("native") is True and pure.pop("native") is False
    assert native == pure
    assert all(native[p][0][0] == "ok" for p in paths)
    assert native[paths[0]][1][0] == "ok" and native[paths[0]][2][0] == "ok"
    assert sum(native[p][1][0] == "error" for p in paths) > 10  # the changes reached the entry decoder


# ------------------------------------------------------------------------------------------- byte ranges


def numpy_may_overlap(entries) -> bool:
    """``bundle._may_overlap`` without the C part (its numpy sort)."""
    from ckptdoctor.readers import bundle

    saved, bundle._wire = bundle._wire, None
    try:
        return bundle._may_overlap(entries)
    finally:
        bundle._wire = saved


def pairwise_overlap(entries) -> bool:
    return any(
        a.shard_id == b.shard_id and a.size and b.size and a.offset < b.offset + b.size and b.offset < a.offset + a.size
        for i, a in enumerate(entries)
        for b in entries[i + 1 :]
    )


spans = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 40) | st.sampled_from([2**62, 2**63 - 1]),
        st.sampled_from([0, 1, 2, 5, 10, 2**62]),
    ),
    max_size=14,
)


@FUZZ
@given(spans, st.booleans())
def test_byte_ranges_overlap_as_the_pairwise_test_says(spans, in_file_order):
    """``may_overlap`` (C) against every pair and against the numpy sort; in the writer's file order as well."""
    entries = [BundleEntry(1, (), shard, offset, size, 0, ()) for shard, offset, size in spans]
    if in_file_order:
        entries.sort(key=lambda e: (e.shard_id, e.offset))
    expected = pairwise_overlap(entries)
    assert wire.may_overlap(entries, BundleEntry) is expected
    assert numpy_may_overlap(entries) is expected


class Int(int):
    pass


def test_byte_ranges_of_another_form_are_left_to_numpy():
    good = [BundleEntry(1, (), 0, 0, 4, 0, ()), BundleEntry(1, (), 0, 2, 4, 0, ())]
    assert wire.may_overlap(good, BundleEntry) is True and wire.may_overlap(good[:1], BundleEntry) is False
    assert wire.may_overlap([], BundleEntry) is False
    odd_values = [True, Int(2), 2.0, -1, 2**63, 2**64, None, "2"]
    for field in ("shard_id", "offset", "size"):
        for value in odd_values:
            entries = [good[0], good[1]._replace(**{field: value})]
            assert wire.may_overlap(entries, BundleEntry) is None, (field, value)
    assert wire.may_overlap(tuple(good), BundleEntry) is None
    assert wire.may_overlap([tuple(good[0]), good[1]], BundleEntry) is None
    assert wire.may_overlap(good, tuple) is None and wire.may_overlap(good, None) is None
    with pytest.raises(TypeError):
        wire.may_overlap(good)


_NO_NUMPY = r"""
import json, sys
import ckptdoctor
report = ckptdoctor.inspect(sys.argv[1], graph=False, stats=False)
print(json.dumps(["numpy" in sys.modules, len(report.tensors), [t.object_path for t in report.tensors]]))
"""

_TF2_WITHOUT_BN = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
step = tf.Variable(7, dtype=tf.int64)
net = tf.Module()
net.dense = tf.Module()
net.dense.kernel = tf.Variable(tf.ones([3, 2]))
net.dense.bias = tf.Variable(tf.zeros([2]))
net.names = tf.Variable([b"a", b"bc"])
tf.train.Checkpoint(net=net, step=step).write(sys.argv[1])
"""


def test_a_listing_without_bn_layers_imports_no_numpy(tmp_path):
    """Listing a checkpoint whose BN statistics need not be read (none), a TF2 one's object graph read, needs no
    numpy: its import is a tenth of a listing of 100,000 tensors. Without the C part (CKPTDOCTOR_PURE_PYTHON=1)
    the byte ranges of a TF2 checkpoint are checked with numpy; the listing is the same."""
    prefix = tmp_path / "tf2" / "ckpt"
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    subprocess.run([sys.executable, "-c", _TF2_WITHOUT_BN, str(prefix)], check=True, env=env, timeout=300)
    for path in (prefix, SAMPLES / "nobn" / "model.ckpt"):
        listings = []
        for pure in ("0", "1"):
            env = dict(os.environ, CKPTDOCTOR_PURE_PYTHON=pure)
            proc = subprocess.run(
                [sys.executable, "-c", _NO_NUMPY, str(path)], capture_output=True, text=True, env=env, timeout=300
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            imported, listed, paths = json.loads(proc.stdout)
            # (a TF1 listing reads no tensor; a TF2 one reads its object graph, after checking the byte ranges)
            assert imported is (pure == "1" and path == prefix), (path, pure)
            listings.append((listed, paths))
        assert listings[0] == listings[1] and listings[0][0] >= 4
    assert "net/dense/kernel" in listings_of_tf2(prefix)


def listings_of_tf2(prefix) -> list:
    return [e.object_path for e in BundleReader(str(prefix)).entries()]
