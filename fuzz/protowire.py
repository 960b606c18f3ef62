"""Harness: the protobuf wire-format decoders of a bundle (``readers/protowire.py``), and their C versions.

Input: one serialized message (the seeds are a real ``BundleHeaderProto``, ``BundleEntryProto`` values of
TF1 and TF2 checkpoints, a partitioned tensor's piece, and a TF2 ``TrackableObjectGraph``). It is
decoded as each of them; an object graph is then mapped to object paths for its own keys and for keys
extending them (rule 4 of ``object_paths_from_graph``).

When the C decoders (``readers/_wire.c``) are built, each input is also decoded by them and by the pure-Python
code, as a bundle entry, as an object graph, as one node of a graph, as a shape and as an SSTable block, and a
decoded graph is walked by both: where C answers, its answer must equal Python's; where C defers, the public
function must give exactly what the pure Python gives, errors included (``check_native``). A difference is an
``AssertionError``: a crash to atheris.

    python -m fuzz.protowire -max_total_time=60
"""

import importlib

from fuzz.common import fuzz, instrumented

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.formats.tf2 import objects
    from ckptdoctor.readers import bundle, protowire, sstable
    from ckptdoctor.readers.bundle import object_paths_from_graph
    from ckptdoctor.readers.protowire import decode_bundle_entry, decode_bundle_header, decode_object_graph

try:  # directly, also under CKPTDOCTOR_PURE_PYTHON=1 (which only keeps protowire from using it)
    _native = importlib.import_module("ckptdoctor.readers._wire")
except ImportError:
    _native = None

_KEYS = {"w/.ATTRIBUTES/VARIABLE_VALUE": "w/.ATTRIBUTES/VARIABLE_VALUE", "": ""}


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except CkptDoctorError as e:
        return ("error", type(e).__name__, str(e))


def _same(a, b) -> bool:
    return a == b and repr(a) == repr(b)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _entry_pure(buf: bytes):
    """``_decode_bundle_entry_py`` from an empty shape cache: its outcome and the cache it leaves."""
    saved = dict(protowire._SHAPE_CACHE)
    protowire._SHAPE_CACHE.clear()
    try:
        return _outcome(protowire._decode_bundle_entry_py, buf), dict(protowire._SHAPE_CACHE)
    finally:
        protowire._SHAPE_CACHE.clear()
        protowire._SHAPE_CACHE.update(saved)


def _check_entry(buf: bytes) -> None:
    pure, pure_cache = _entry_pure(buf)
    cache: dict = {}
    c = _native.bundle_entry(buf, protowire.BundleEntry, cache, protowire._SHAPE_CACHE_LIMIT)
    if c is not None:
        assert pure[0] == "ok" and _same(("ok", c), pure), (buf, c, pure)
        assert type(c) is protowire.BundleEntry and cache == pure_cache, (buf, cache, pure_cache)
    else:
        assert all(pure_cache.get(k) == v for k, v in cache.items()), (buf, cache, pure_cache)
    saved = dict(protowire._SHAPE_CACHE)
    protowire._SHAPE_CACHE.clear()
    try:
        assert _same(_outcome(decode_bundle_entry, buf), pure), buf
    finally:
        protowire._SHAPE_CACHE.clear()
        protowire._SHAPE_CACHE.update(saved)


def _graph_pure(buf: bytes, keys: dict):
    try:
        return protowire._decode_object_graph_py(buf, keys)
    except IndexError:
        raise protowire.WireFormatError("object graph truncated") from None


def _check_graph(buf: bytes, keys: dict) -> None:
    pure = _outcome(_graph_pure, buf, keys)
    c = _native.object_graph(buf, keys, protowire.ObjectNode, protowire._VALUE_NAME)
    if c is not None:
        spans = protowire._node_spans(buf)
        assert len(spans) == 3 * len(c), buf
        for i, node in enumerate(c):
            wt, a, b = spans[3 * i : 3 * i + 3]
            assert wt == 2, buf
            if type(node) is tuple:
                assert node == (a, b), (buf, node, a, b)
            else:
                assert _same(("ok", node), _outcome(protowire._decode_node, buf, a, b, keys)), (buf, i, node)
    assert _same(_outcome(decode_object_graph, buf, keys), pure), buf


def _check_block(block: bytes, budget: int) -> None:
    pure = _outcome(lambda: list(sstable.iter_block(block, "fuzz.index", "block")))
    c = _native.block_entries(block, budget)
    over = pure[0] == "ok" and sum(len(k) for k, _ in pure[1]) > budget
    if c is None:
        assert pure[0] == "error" or over, (block, pure)
    else:
        assert not over and _same(("ok", c), pure), (block, c, pure)


def _check_walks(buf: bytes, keys: dict) -> None:
    """The C walks of a decoded graph (every part of the decoded form: C must answer) against the Python ones."""
    try:
        nodes = decode_object_graph(buf, keys)
    except CkptDoctorError:
        return
    paths = _native.object_paths(
        nodes, protowire.ObjectNode, bundle.VARIABLE_VALUE_ATTRIBUTE, bundle.OPTIMIZER_SLOT_SEGMENT
    )
    expected = bundle._attribute_paths(nodes) if nodes else {}
    assert paths is not None and list(paths.items()) == list(expected.items()), (buf, paths, expected)
    n = len(nodes)
    for starts in ([(0, "")], [(i, f"s{i}") for i in range(n - 1, -1, -1)][:16]):
        if not n:
            break
        c_paths, py_paths = [None] * n, [None] * n
        seen = _native.object_walk(nodes, protowire.ObjectNode, starts, c_paths)
        assert seen is not None and seen == objects._walk_py(nodes, starts, py_paths), buf
        assert c_paths == py_paths, (buf, c_paths, py_paths)


def check_native(data: bytes) -> None:
    """The C decoders against the pure-Python ones on ``data`` (nothing without the extension)."""
    if _native is None:
        return
    _check_entry(data)
    _check_entry(b"\x12" + _varint(len(data)) + data)  # data as a TensorShapeProto
    _check_graph(data, _KEYS)
    _check_graph(b"\x0a" + _varint(len(data)) + data, _KEYS)  # data as one TrackableObject
    _check_walks(data, _KEYS)
    _check_block(data, 64 * len(data) + 1024)
    _check_block(data, len(data) // 2)


def test_one_input(data: bytes) -> None:
    check_native(data)
    for decode in (decode_bundle_header, decode_bundle_entry):
        try:
            decode(data)
        except CkptDoctorError:
            pass
    try:
        nodes = decode_object_graph(data)
    except CkptDoctorError:
        return
    keys = [key for node in nodes for _name, key in node.attributes]
    object_paths_from_graph(nodes, keys + [k + "-keys" for k in keys[:64]] + ["a/.ATTRIBUTES/b"])


if __name__ == "__main__":
    fuzz(test_one_input, "protowire")
