"""A TensorFlow-free reader of ``saved_model.pb``: the object graph and its variables.

``saved_model.pb`` is a serialized ``SavedModel`` protobuf. Only what ``inspect``
needs is decoded, by hand (``protowire``), so reading it needs neither TensorFlow
nor the protobuf library. The field numbers, from TensorFlow's
``saved_model.proto``, ``meta_graph.proto`` and ``saved_object_graph.proto``:

- ``SavedModel``: 2 ``meta_graphs`` (repeated ``MetaGraphDef``; the first is used).
- ``MetaGraphDef``: 2 ``graph_def``, 7 ``object_graph_def`` (``SavedObjectGraph``).
- ``SavedObjectGraph``: 1 ``nodes`` (repeated ``SavedObject``; node 0 is the root).
- ``SavedObject``: 1 ``children`` (``ObjectReference{1 node_id, 2 local_name}``),
  3 ``slot_variables`` (``{1 original_variable_node_id, 2 slot_name,
  3 slot_variable_node_id}``), and one kind: 4 ``user_object``
  (``SavedUserObject{1 identifier}``), 7 ``variable``, others (functions,
  assets, constants, resources) kept only as their field number.
- ``SavedVariable``: 1 ``dtype`` (enum), 2 ``shape`` (``TensorShapeProto``),
  3 ``trainable``, 6 ``name``.

The graph itself (field 2, the function library) is skipped without decoding.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import CorruptCheckpointError
from .protowire import WireFormatError, iter_fields

__all__ = ["SavedVariable", "SavedNode", "read_saved_object_graph", "decode_saved_object_graph", "KIND_NAMES"]

_VARINT, _LEN = 0, 2

#: ``SavedObject`` kind field numbers and their names.
KIND_NAMES = {4: "user_object", 5: "asset", 6: "function", 7: "variable", 8: "bare_concrete_function",
              9: "constant", 10: "resource", 12: "captured_tensor"}


class SavedVariable(NamedTuple):
    """A ``SavedVariable``: what the SavedModel declares about one variable.

    ``dtype`` is TensorFlow's enum value; ``shape`` is None for an unknown rank,
    with -1 for unknown dimensions.
    """

    dtype: int
    shape: tuple[int, ...] | None
    trainable: bool
    name: str


class SavedNode(NamedTuple):
    """One ``SavedObject`` of the object graph.

    Attributes:
        children: ``(node_id, local_name)`` edges, in stored order.
        slot_variables: ``(original_variable_node_id, slot_name, slot_variable_node_id)``.
        kind: ``user_object``, ``variable``, ``function``... or ``""``.
        identifier: a user object's identifier (``_tf_keras_layer``), else ``""``.
        variable: the ``SavedVariable`` when ``kind == "variable"``.
    """

    children: tuple[tuple[int, str], ...]
    slot_variables: tuple[tuple[int, str, int], ...]
    kind: str
    identifier: str
    variable: SavedVariable | None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= (1 << 63) else v


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _need(wtype: int, want: int, what: str) -> None:
    if wtype != want:
        raise WireFormatError(f"{what} has wire type {wtype}, expected {want}")


def _ints_and_strings(buf: bytes, kinds: dict[int, str]) -> dict[int, int | str]:
    out: dict[int, int | str] = {}
    for f, wt, v in iter_fields(buf):
        kind = kinds.get(f)
        if kind == "s":
            _need(wt, _LEN, f"string field {f}")
            out[f] = _text(v)  # type: ignore[arg-type]
        elif kind == "i":
            _need(wt, _VARINT, f"int field {f}")
            out[f] = _signed(v)  # type: ignore[arg-type]
    return out


def _decode_shape(buf: bytes) -> tuple[int, ...] | None:
    dims = []
    for f, wt, v in iter_fields(buf):
        if f == 2:
            _need(wt, _LEN, "TensorShapeProto.dim")
            size = 0
            for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
                if f2 == 1:
                    _need(wt2, _VARINT, "Dim.size")
                    size = _signed(v2)  # type: ignore[arg-type]
            dims.append(size)
        elif f == 3:
            _need(wt, _VARINT, "TensorShapeProto.unknown_rank")
            if v:
                return None
    return tuple(dims)


def _decode_variable(buf: bytes) -> SavedVariable:
    dtype, shape, trainable, name = 0, (), False, ""
    for f, wt, v in iter_fields(buf):
        if f == 1:
            _need(wt, _VARINT, "SavedVariable.dtype")
            dtype = v  # type: ignore[assignment]
        elif f == 2:
            _need(wt, _LEN, "SavedVariable.shape")
            shape = _decode_shape(v)  # type: ignore[arg-type,assignment]
        elif f == 3:
            _need(wt, _VARINT, "SavedVariable.trainable")
            trainable = bool(v)
        elif f == 6:
            _need(wt, _LEN, "SavedVariable.name")
            name = _text(v)  # type: ignore[arg-type]
    return SavedVariable(dtype, shape, trainable, name)


def _decode_node(buf: bytes) -> SavedNode:
    children, slots = [], []
    kind, identifier, variable = "", "", None
    for f, wt, v in iter_fields(buf):
        if f == 1:
            _need(wt, _LEN, "SavedObject.children")
            d = _ints_and_strings(v, {1: "i", 2: "s"})  # type: ignore[arg-type]
            children.append((d.get(1, 0), d.get(2, "")))
        elif f == 3:
            _need(wt, _LEN, "SavedObject.slot_variables")
            d = _ints_and_strings(v, {1: "i", 2: "s", 3: "i"})  # type: ignore[arg-type]
            slots.append((d.get(1, 0), d.get(2, ""), d.get(3, 0)))
        elif f in KIND_NAMES:
            _need(wt, _LEN, f"SavedObject.{KIND_NAMES[f]}")
            kind = KIND_NAMES[f]
            if f == 4:
                identifier = str(_ints_and_strings(v, {1: "s"}).get(1, ""))  # type: ignore[arg-type]
            elif f == 7:
                variable = _decode_variable(v)  # type: ignore[arg-type]
    return SavedNode(tuple(children), tuple(slots), kind, identifier,
                     variable if kind == "variable" else None)  # type: ignore[arg-type]


def _first_meta_graph(buf: bytes) -> bytes | None:
    for f, wt, v in iter_fields(buf):
        if f == 2:
            _need(wt, _LEN, "SavedModel.meta_graphs")
            return v  # type: ignore[return-value]
    return None


def decode_saved_object_graph(buf: bytes) -> list[SavedNode] | None:
    """The object graph of the first meta graph of a serialized ``SavedModel``.

    Returns:
        The nodes (node 0 is the root), or None when the meta graph has no
        object graph (a TF1 SavedModel written by ``SavedModelBuilder``).

    Raises:
        WireFormatError: the bytes are not a ``SavedModel``.
    """
    # A memoryview: the graph (often most of the file) is skipped without being copied.
    meta = _first_meta_graph(memoryview(buf))
    if meta is None:
        raise WireFormatError("no meta graph (SavedModel.meta_graphs is empty)")
    graph = None
    for f, wt, v in iter_fields(meta):
        if f == 7:
            _need(wt, _LEN, "MetaGraphDef.object_graph_def")
            graph = bytes(v)  # type: ignore[arg-type]
    if graph is None:
        return None
    nodes = []
    for f, wt, v in iter_fields(graph):  # type: ignore[arg-type]
        if f == 1:
            _need(wt, _LEN, "SavedObjectGraph.nodes")
            nodes.append(_decode_node(v))  # type: ignore[arg-type]
    for node in nodes:
        for child, _name in node.children:
            if not 0 <= child < len(nodes):
                raise WireFormatError(f"a child refers to node {child}, the graph has {len(nodes)}")
    return nodes


def read_saved_object_graph(path: str) -> list[SavedNode] | None:
    """Read ``path`` (a ``saved_model.pb``) and decode its object graph.

    Raises:
        CorruptCheckpointError: the file cannot be read or is not a SavedModel.
    """
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise CorruptCheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    hint = f"inspect its variables alone with `ckptdoctor inspect {os.path.dirname(path) or '.'} --graph False`"
    if not buf:
        raise CorruptCheckpointError(f"{path} is empty, not a SavedModel: {hint}")
    try:
        return decode_saved_object_graph(buf)
    except WireFormatError as e:
        raise CorruptCheckpointError(f"{path} is not a readable SavedModel ({e}): {hint}") from e

