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

- ``SavedObjectGraph``: 2 ``concrete_functions`` (map: 1 name -> 2
  ``SavedConcreteFunction{2 bound_inputs}``, the object ids a function captures).
- ``GraphDef``: 2 ``library`` (``FunctionDefLibrary{1 function}``); ``FunctionDef``:
  1 ``signature`` (``OpDef{1 name, 2 input_arg{1 name}}``), 3 ``node_def``
  (``NodeDef{1 name, 2 op, 3 input}``).

The graph (field 2) is decoded only when its bytes contain ``FusedBatchNorm``, and
then only the functions that do; everything else is skipped without a copy.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ckptdoctor.errors import CorruptCheckpointError
from ckptdoctor.readers.protowire import WireFormatError, iter_fields, read_varint
from ckptdoctor.readers.protowire import decode_strings_and_ints as _ints_and_strings
from ckptdoctor.readers.protowire import expect_wire_type as _need
from ckptdoctor.readers.protowire import signed64 as _signed
from ckptdoctor.readers.protowire import text as _text

__all__ = [
    "SavedVariable",
    "SavedNode",
    "FusedBatchNorm",
    "read_saved_object_graph",
    "decode_saved_object_graph",
    "decode_fused_batch_norms",
    "read_saved_model",
    "KIND_NAMES",
]

_VARINT, _LEN = 0, 2

#: ``SavedObject`` kind field numbers and their names.
KIND_NAMES = {
    4: "user_object",
    5: "asset",
    6: "function",
    7: "variable",
    8: "bare_concrete_function",
    9: "constant",
    10: "resource",
    12: "captured_tensor",
}


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
    return SavedNode(tuple(children), tuple(slots), kind, identifier, variable if kind == "variable" else None)  # type: ignore[arg-type]


def _first_meta_graph(buf: bytes | memoryview) -> bytes | None:
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
            graph = bytes(v)
    if graph is None:
        return None
    nodes = []
    for f, wt, v in iter_fields(graph):
        if f == 1:
            _need(wt, _LEN, "SavedObjectGraph.nodes")
            nodes.append(_decode_node(v))  # type: ignore[arg-type]
    for node in nodes:
        for child, _name in node.children:
            if not 0 <= child < len(nodes):
                raise WireFormatError(f"a child refers to node {child}, the graph has {len(nodes)}")
    return nodes


class FusedBatchNorm(NamedTuple):
    """A ``FusedBatchNorm*`` op of a saved function whose inputs are captured objects.

    Each of ``scale``, ``offset``, ``mean`` and ``variance`` is the object graph node
    id of the variable the input reads (through ``ReadVariableOp``/``Identity``),
    or None when the input is computed or comes from a caller.
    """

    function: str
    op: str
    scale: int | None
    offset: int | None
    mean: int | None
    variance: int | None


_FUSED_OPS = (b"FusedBatchNorm", b"FusedBatchNormV2", b"FusedBatchNormV3")
_READ_OPS = frozenset({"ReadVariableOp", "Identity", "IdentityN", "Snapshot"})


def _bound_inputs(object_graph: bytes) -> dict[str, list[int]]:
    """``SavedObjectGraph.concrete_functions`` (field 2, a map): function name -> ``bound_inputs``."""
    out: dict[str, list[int]] = {}
    for f, wt, v in iter_fields(object_graph):
        if f != 2 or wt != _LEN:
            continue
        name, bound = "", []
        for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
            if f2 == 1 and wt2 == _LEN:
                name = _text(v2)  # type: ignore[arg-type]
            elif f2 == 2 and wt2 == _LEN:
                for f3, wt3, v3 in iter_fields(v2):  # type: ignore[arg-type]
                    if f3 == 2:  # SavedConcreteFunction.bound_inputs, packed or not
                        if wt3 == _VARINT:
                            bound.append(_signed(v3))  # type: ignore[arg-type]
                        else:
                            _need(wt3, _LEN, "SavedConcreteFunction.bound_inputs")
                            pos = 0
                            while pos < len(v3):  # type: ignore[arg-type]
                                x, pos = read_varint(v3, pos, len(v3))  # type: ignore[arg-type]
                                bound.append(_signed(x))
        out[name] = bound
    return out


def _fused_in_function(fdef: bytes, bound: dict[str, list[int]]) -> list[FusedBatchNorm]:
    """FunctionDef: 1 signature (OpDef: 1 name, 2 input_arg{1 name}), 3 node_def (NodeDef: 1 name, 2 op, 3 input)."""
    name, args, ops = "", [], {}
    for f, wt, v in iter_fields(fdef):
        if f == 1 and wt == _LEN:
            for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
                if f2 == 1 and wt2 == _LEN:
                    name = _text(v2)  # type: ignore[arg-type]
                elif f2 == 2 and wt2 == _LEN:
                    args.append(str(_ints_and_strings(v2, {1: "s"}).get(1, "")))  # type: ignore[arg-type]
        elif f == 3 and wt == _LEN:
            node_name, op, inputs = "", "", []
            for f2, wt2, v2 in iter_fields(v):  # type: ignore[arg-type]
                if wt2 != _LEN:
                    continue
                if f2 == 1:
                    node_name = _text(v2)  # type: ignore[arg-type]
                elif f2 == 2:
                    op = _text(v2)  # type: ignore[arg-type]
                elif f2 == 3:
                    inputs.append(_text(v2))  # type: ignore[arg-type]
            ops[node_name] = (op, inputs)
    captured = bound.get(name)
    if not captured or len(captured) > len(args):
        return []
    # Captured objects are the last arguments of a saved concrete function.
    by_arg = dict(zip(args[len(args) - len(captured) :], captured))

    def source(tensor: str) -> int | None:
        for _ in range(32):  # a chain of reads and identities, never a cycle
            node = tensor.split(":", 1)[0]
            if node in by_arg and node not in ops:
                return by_arg[node]
            op, inputs = ops.get(node, ("", []))
            data = [i for i in inputs if not i.startswith("^")]
            if op not in _READ_OPS or not data:
                return None
            tensor = data[0]
        return None

    found = []
    for op, inputs in ops.values():
        if op.encode() in _FUSED_OPS:
            data = [i for i in inputs if not i.startswith("^")]
            if len(data) >= 5:
                found.append(FusedBatchNorm(name, op, *(source(t) for t in data[1:5])))
    return found


def decode_fused_batch_norms(buf: bytes) -> list[FusedBatchNorm]:
    """Every ``FusedBatchNorm*`` op of the saved functions, with the variables it reads.

    Only ops in a function that ``SavedObjectGraph.concrete_functions`` lists are
    resolved (their captured inputs are ``bound_inputs``); a variable passed down by
    a calling function is not followed. ``MetaGraphDef.graph_def`` (2) ->
    ``GraphDef.library`` (2) -> ``FunctionDefLibrary.function`` (1).

    Raises:
        WireFormatError: the graph or object graph is malformed.
    """
    if _FUSED_OPS[0] not in buf:
        return []  # the common case of no fused BN: the library is never decoded
    meta = _first_meta_graph(memoryview(buf))
    if meta is None:
        return []
    graph_def: bytes | None = None
    object_graph: bytes | None = None
    for f, wt, v in iter_fields(meta):
        if f == 2 and wt == _LEN:
            graph_def = bytes(v)
        elif f == 7 and wt == _LEN:
            object_graph = bytes(v)
    if graph_def is None or object_graph is None:
        return []
    bound = _bound_inputs(object_graph)
    found = []
    for f, wt, library in iter_fields(graph_def):
        if f == 2 and wt == _LEN:
            for f2, wt2, fdef in iter_fields(library):  # type: ignore[arg-type]
                if f2 == 1 and wt2 == _LEN and not isinstance(fdef, int) and _FUSED_OPS[0] in fdef:
                    found.extend(_fused_in_function(bytes(fdef), bound))  # the prefix of every fused op name
    return found


def read_saved_model(path: str) -> tuple[list[SavedNode] | None, list[FusedBatchNorm] | None]:
    """Read ``path`` (a ``saved_model.pb``): its object graph and its fused BN ops.

    Returns:
        ``(nodes, fused)``: ``nodes`` is None for a SavedModel without an object
        graph (TF1); ``fused`` is None when the function library is malformed
        although the object graph is readable.

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
        nodes = decode_saved_object_graph(buf)
    except WireFormatError as e:
        raise CorruptCheckpointError(f"{path} is not a readable SavedModel ({e}): {hint}") from e
    try:
        fused = decode_fused_batch_norms(buf) if nodes is not None else []
    except WireFormatError:
        fused = None
    return nodes, fused


def read_saved_object_graph(path: str) -> list[SavedNode] | None:
    """Read ``path`` (a ``saved_model.pb``) and decode its object graph.

    Raises:
        CorruptCheckpointError: the file cannot be read or is not a SavedModel.
    """
    return read_saved_model(path)[0]
