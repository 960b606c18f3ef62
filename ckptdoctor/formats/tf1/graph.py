"""Graph analysis: what a MetaGraphDef says about the variables a checkpoint should hold.

The MetaGraphDef is imported into a fresh ``tf.Graph``. From it we read
GLOBAL_VARIABLES, UPDATE_OPS and TRAIN_OP, the Saver's own key for every variable,
and the batch-normalization layers. BN layers are found from the graph's
structure, not from names:

* fused BN: every ``FusedBatchNorm*`` op; its inputs 1-4 lead to gamma, beta,
  moving mean and moving variance;
* non-fused BN (``tf.nn.batch_normalization``): ``Rsqrt(variance + eps)`` whose
  variance leads to a variable, multiplied by gamma, then by the input and by
  the mean, the mean leading to a variable, and ``beta - mean * scale``.

"Leads to" means: following only ops that pass a value through unchanged
(Identity, ReadVariableOp, Switch/Merge of control flow v1, the branches of an
``If`` op of control flow v2, function calls), never through a computation. So
in a layer whose mode is chosen by a training flag, the inference branch leads
to the moving statistics while the training branch (batch moments) leads
nowhere. The predicates met on the way give the training flag.

TensorFlow is imported here, lazily: this module is loaded only when a graph is
analysed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ckptdoctor import constants as C
from ckptdoctor.errors import GraphError
from ckptdoctor.tfcompat import import_tensorflow

__all__ = ["GraphVariable", "BNLayer", "GraphInfo", "analyze_graph", "load_graph"]


@dataclass(frozen=True)
class GraphVariable:
    """A variable of GLOBAL_VARIABLES, under the key a Saver stores it by."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    trainable: bool
    saved_by_saver: bool | None  # None when the graph has no Saver


@dataclass(frozen=True)
class BNLayer:
    """One batch-normalization layer found in the graph.

    Attributes:
        layer: the layer's name (common name scope of its variables).
        moving_mean, moving_variance, gamma, beta: checkpoint keys or None.
        channels: number of normalized channels, when known.
        fused: True for a ``FusedBatchNorm*`` layer.
        axis: channel axis of the layer's input (-1 for channels last).
        input_tensor: name of a tensor of the outer graph holding the layer's input.
        training_flags: boolean placeholders the layer's mode depends on.
        mode: ``switch`` (chosen at run time), ``training`` or ``inference``.
        epsilon: the variance epsilon, when known.
        switch_inputs: ``(op name, input index)`` of the outer-graph ops that read the training
            switch on this layer's behalf (its own conditionals: v1 ``cond/Switch`` and
            ``cond/pred_id``, or a v2 ``If``), so that a repair can give the BN layers a switch
            of their own and hold every other consumer (dropout) in inference mode.
    """

    layer: str
    moving_mean: str | None
    moving_variance: str | None
    gamma: str | None
    beta: str | None
    channels: int | None
    fused: bool
    axis: int
    input_tensor: str | None
    training_flags: tuple[str, ...]
    mode: str
    epsilon: float | None = None
    output_tensor: str | None = None
    switch_inputs: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class GraphInfo:
    """What the graph says, as plain data."""

    path: str
    variables: dict[str, GraphVariable]
    update_ops: tuple[str, ...]
    train_ops: tuple[str, ...]
    bn_layers: tuple[BNLayer, ...]
    roles: dict[str, str]
    update_ops_unused: bool | None
    bn_update_ops: tuple[str, ...] = field(default=())
    keys_by_op: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- loading


def _read_meta_graph(meta_path: str):
    """The MetaGraphDef of a ``.meta`` file, or of a SavedModel (its directory or ``saved_model.pb``)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    if os.path.isdir(meta_path) and os.path.isfile(os.path.join(meta_path, C.SAVED_MODEL_PB)):
        meta_path = os.path.join(meta_path, C.SAVED_MODEL_PB)
    if not os.path.isfile(meta_path):
        raise GraphError(f"no graph at {meta_path}: pass --graph with the .meta file written beside the checkpoint")
    saved_model = os.path.basename(meta_path) == C.SAVED_MODEL_PB
    try:
        with open(meta_path, "rb") as f:
            buf = f.read()
        if not saved_model:
            meta = meta_graph_pb2.MetaGraphDef()
            meta.ParseFromString(buf)
            return meta
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString(buf)
    except (DecodeError, OSError, ValueError) as e:
        what = "a SavedModel" if saved_model else "a MetaGraphDef"
        raise GraphError(
            f"{meta_path} is not {what} ({e}): pass --graph with the .meta file the Saver wrote, "
            "or a SavedModel directory"
        ) from e
    if not sm.meta_graphs:
        raise GraphError(f"{meta_path} holds no MetaGraphDef: pass --graph with a complete SavedModel")
    # The serving graph when there are several (tf.saved_model writes one, tagged "serve").
    return next((m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags), sm.meta_graphs[0])


def load_graph(meta_path: str):
    """Import a MetaGraphDef into a new ``tf.Graph``; return ``(graph, saver, meta_graph_def)``.

    ``meta_path`` is a ``.meta`` file, or a SavedModel directory or its ``saved_model.pb``
    (whose first serving MetaGraphDef is imported).

    Raises:
        GraphError: the file is missing or is not a MetaGraphDef TensorFlow can import.
    """
    tf = import_tensorflow()
    meta = _read_meta_graph(meta_path)
    if not meta.graph_def.node:
        raise GraphError(f"{meta_path} holds no graph (no nodes): pass --graph with the .meta file the Saver wrote")
    graph = tf.Graph()
    try:
        with graph.as_default():
            saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    except (ValueError, KeyError, TypeError, tf.errors.OpError) as e:
        raise GraphError(f"TensorFlow cannot import the graph in {meta_path}: {str(e).splitlines()[0]}") from e
    return graph, saver, meta


# --------------------------------------------------------------------------- tracing


class GraphTracer:
    """Follows tensors through pass-through ops and into and out of functions.

    A *frame* is a tuple of ``(function_graph, caller_op)`` pairs, outermost first.
    """

    def __init__(self, graph):
        self.graph = graph
        self._library = {f.signature.name: f for f in graph.as_graph_def().library.function}
        self._funcs: dict[str, object] = {}
        self._worth: dict[str, bool] = {}

    def function_graph(self, name: str):
        if name not in self._funcs:
            from tensorflow.python.framework.function_def_to_graph import function_def_to_graph

            fdef = self._library.get(name)
            fg = None
            if fdef is not None:
                try:
                    # Nested functions are looked up in the imported graph's library.
                    with self.graph.as_default():
                        fg = function_def_to_graph(fdef)
                except (ValueError, KeyError, TypeError):
                    fg = None  # a function we cannot rebuild is not followed
            self._funcs[name] = fg
        return self._funcs[name]

    def branches(self, op) -> list[str]:
        names = []
        for attr in ("then_branch", "else_branch", "f"):
            try:
                names.append(op.get_attr(attr).name)
            except ValueError:
                pass
        return names

    def walk(self, graph=None, frame=()):
        """Every op of the graph and of the functions it calls, with its frame."""
        graph = self.graph if graph is None else graph
        for op in graph.get_operations():
            yield op, frame
            if op.type in C.IF_OPS or op.type in C.CALL_OPS:
                for name in self.branches(op):
                    if not self._worth_walking(name):
                        continue
                    fg = self.function_graph(name)
                    if fg is not None and all(fg is not f for f, _ in frame):
                        yield from self.walk(fg, frame + ((fg, op),))

    def _worth_walking(self, name: str) -> bool:
        """Whether a function (or one it calls) holds an op the analysis looks for.

        Rebuilding a function graph is the costly part of the analysis; functions made
        of other ops (gradients, say) are read from their FunctionDef and skipped.
        """
        if name not in self._worth:
            self._worth[name] = False  # guards against recursion
            fdef = self._library.get(name)
            wanted = C.FUSED_BN_OPS | C.ASSIGN_OPS | C.SAVE_OPS | {"Rsqrt"}
            found = False
            for node in fdef.node_def if fdef is not None else ():
                if node.op in wanted:
                    found = True
                elif node.op in C.IF_OPS or node.op in C.CALL_OPS:
                    found = any(
                        self._worth_walking(attr.func.name) for attr in node.attr.values() if attr.HasField("func")
                    )
                if found:
                    break
            self._worth[name] = found
        return self._worth[name]

    def outer(self, tensor, frame):
        """The same value as a tensor of an enclosing graph, as far out as it goes."""
        while True:
            op = tensor.op
            if op.type in ("Identity", "Switch", "RefSwitch", "Enter", "RefEnter") and op.inputs:
                tensor = op.inputs[0]
                continue
            if frame and op.type == "Placeholder":
                fg, caller = frame[-1]
                idx = _index_of(fg.inputs, tensor)
                if idx is None:
                    return tensor, frame
                offset = 1 if caller.type in C.IF_OPS else 0
                tensor, frame = caller.inputs[idx + offset], frame[:-1]
                continue
            return tensor, frame

    def sources(self, tensor, frame, preds=None, _depth=0):
        """Variable ops whose value reaches ``tensor`` unchanged (through any branch).

        Predicates of the conds passed on the way are added to ``preds`` as
        ``(predicate tensor, frame, op reading it)``.
        """
        if _depth > 200:
            return set()
        op = tensor.op
        if op.type in C.VARIABLE_OPS:
            return {op.name} if not frame else set()
        found = set()
        if op.type in C.PASS_THROUGH_OPS:
            inputs = list(op.inputs)
            if op.type in ("Switch", "RefSwitch"):
                if preds is not None:
                    preds.append((op.inputs[1], frame, op))
                inputs = inputs[:1]
            elif op.type in ("Reshape", "Enter", "RefEnter", "Identity", "ReadVariableOp", "Snapshot", "RefIdentity"):
                inputs = inputs[:1]
            elif op.type == "IdentityN":
                inputs = [op.inputs[tensor.value_index]]
            for t in inputs:
                found |= self.sources(t, frame, preds, _depth + 1)
            return found
        if op.type in C.IF_OPS or op.type in C.CALL_OPS:
            if op.type in C.IF_OPS and preds is not None:
                preds.append((op.inputs[0], frame, op))
            for name in self.branches(op):
                fg = self.function_graph(name)
                if fg is None or tensor.value_index >= len(fg.outputs):
                    continue
                found |= self.sources(fg.outputs[tensor.value_index], frame + ((fg, op),), preds, _depth + 1)
            return found
        if frame and op.type == "Placeholder":
            outer, outer_frame = self.outer(tensor, frame)
            if outer is not tensor:
                return self.sources(outer, outer_frame, preds, _depth + 1)
        return found

    def one_source(self, tensor, frame, preds=None):
        found = self.sources(tensor, frame, preds)
        return next(iter(found)) if len(found) == 1 else None

    def ancestors(self, ops):
        """All ops that ``ops`` depend on in the outer graph, by data or control."""
        seen = set()
        stack = list(ops)
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
        return seen


def _index_of(tensors, tensor):
    for i, t in enumerate(tensors):
        if t is tensor:
            return i
    return None


# --------------------------------------------------------------------------- analysis


def _saver_keys(graph, tracer) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Variable op name -> checkpoint key, from the Saver's save ops; and every key of each op.

    A TF2 SavedModel saves one variable under several object paths (Keras 3's
    ``variables/3`` and ``_all_variables/7``): the first is the variable's key, the
    others are aliases that belong to it too.
    """
    keys: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}
    # TF2 SavedModels save from inside a function (``__inference__traced_save``): walk into it.
    for op, frame in tracer.walk():
        if op.type not in C.SAVE_OPS:
            continue
        try:
            names_op = op.inputs[1].op
            names = [n.decode() for n in names_op.get_attr("value").string_val] if names_op.type == "Const" else []
        except (ValueError, IndexError):
            continue
        start = 3 if op.type == "SaveV2" else 2
        for key, tensor in zip(names, op.inputs[start:]):
            var = tracer.one_source(tensor, frame)
            if var is not None:
                keys.setdefault(var, key)
                aliases.setdefault(var, []).append(key)
    return keys, aliases


def _layer_name(keys: list[str]) -> str:
    parts = [k.split("/")[:-1] for k in keys if k]
    if not parts:
        return "?"
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return "/".join(common) if common else keys[0].rsplit("/", 1)[0]


def _const_value(tensor):
    op = tensor.op
    while op.type == "Identity":
        op = op.inputs[0].op
    if op.type != "Const":
        return None
    from tensorflow.python.framework import tensor_util

    return tensor_util.MakeNdarray(op.get_attr("value"))


def _flags_from_preds(tracer, preds) -> tuple[str, ...]:
    flags = set()
    for pred, frame, _op in preds:
        outer, _ = tracer.outer(pred, frame)
        for name in tracer.ancestors([outer.op]):
            op = tracer.graph.get_operation_by_name(name)
            if op.type in ("Placeholder", "PlaceholderWithDefault") and op.outputs[0].dtype.name == "bool":
                flags.add(op.outputs[0].name)
    return tuple(sorted(flags))


#: How far back from an update op's value a batch statistic may sit: ``(moving - batch) * decay``
#: puts it two ops back, a Bessel correction three.
_UPDATE_DEPTH = 3


def _variable_updates(tracer) -> list[tuple]:
    """``(op, frame, variable)`` for every op that assigns to a variable, initializers and restores aside."""
    updates = []
    for op, frame in tracer.walk():
        if op.type not in C.ASSIGN_OPS or not op.inputs or op.name.endswith("/Assign"):
            continue
        if _is_initializer(op) or _is_restore(op):
            continue
        target = tracer.one_source(op.inputs[0], frame)
        if target is not None:
            updates.append((op, frame, target))
    return updates


def _update_targets(updates) -> dict[str, set]:
    """Tensor name -> the variables that update ops of the outer graph (``_variable_updates``) move towards it.

    A BN layer whose mode is fixed to training (``training=True`` as a Python constant)
    never reads its moving statistics in the forward pass: only its update ops tie the
    layer's batch moments (``FusedBatchNorm:1/:2``, or the ``moments`` of the non-fused
    pattern) to the moving mean and variance, ``moving -= (moving - batch) * (1 - momentum)``.
    """
    targets: dict[str, set] = {}
    for op, frame, target in updates:
        if frame or len(op.inputs) < 2:
            continue
        stack = [(op.inputs[1], 0)]
        seen = set()
        while stack:
            t, depth = stack.pop()
            if t.name in seen:
                continue
            seen.add(t.name)
            targets.setdefault(t.name, set()).add(target)
            if depth < _UPDATE_DEPTH and t.op.type not in C.VARIABLE_OPS:
                stack.extend((i, depth + 1) for i in t.op.inputs)
    return targets


def _updated_by(targets: dict, tensor, exclude=()) -> str | None:
    """The one variable the update ops move towards ``tensor`` (None when none or several)."""
    found = targets.get(tensor.name, set()) - set(exclude)
    return next(iter(found)) if len(found) == 1 else None


def _find_fused(tracer, targets):
    layers: dict[tuple, dict] = {}
    for op, frame in tracer.walk():
        if op.type not in C.FUSED_BN_OPS:
            continue
        preds: list = []
        mean = tracer.one_source(op.inputs[3], frame, preds)
        var = tracer.one_source(op.inputs[4], frame, preds)
        if (mean is None or var is None) and not frame and bool(op.get_attr("is_training")):
            # Training mode with empty mean/variance inputs (TF-Slim, nn.fused_batch_norm): the
            # update ops name the moving statistics.
            mean = _updated_by(targets, op.outputs[1])
            var = _updated_by(targets, op.outputs[2], exclude=(mean,))
        if mean is None or var is None or mean == var:
            continue
        gamma = tracer.one_source(op.inputs[1], frame)
        beta = tracer.one_source(op.inputs[2], frame)
        x, x_frame = tracer.outer(op.inputs[0], frame)
        if x_frame:
            x = None  # computed inside a function (a TF2 SavedModel's layer): no session can fetch it
        try:
            fmt = op.get_attr("data_format").decode()
        except ValueError:
            fmt = "NHWC"
        training = bool(op.get_attr("is_training"))
        for _f, caller in frame:
            if caller.type in C.IF_OPS:
                preds.append((caller.inputs[0], (), caller))
        entry = layers.setdefault(
            (mean, var),
            {
                "gamma": gamma,
                "beta": beta,
                "x": x,
                "axis": 1 if fmt.startswith("NC") else -1,
                "modes": set(),
                "preds": [],
                "eps": float(op.get_attr("epsilon")),
                "out": None,
            },
        )
        entry["modes"].add(training)
        entry["preds"].extend(preds)
        if frame:
            result = frame[0][1].outputs[0]
        else:
            merges = [c for c in op.outputs[0].consumers() if c.type in ("Merge", "RefMerge")]
            result = merges[0].outputs[0] if merges else op.outputs[0]
        entry["out"] = entry["out"] or result.name
        if entry["x"] is None:
            entry["x"] = x
    out = []
    for (mean, var), e in layers.items():
        flags = _flags_from_preds(tracer, e["preds"])
        mode = "switch" if len(e["modes"]) > 1 or flags else ("training" if True in e["modes"] else "inference")
        out.append(
            (
                mean,
                var,
                e["gamma"],
                e["beta"],
                e["x"],
                e["axis"],
                True,
                flags,
                mode,
                e["eps"],
                e["out"],
                _switch_inputs(tracer, e["preds"]),
            )
        )
    return out


def _switch_inputs(tracer, preds) -> tuple[tuple[str, int], ...]:
    """The ``(op, input index)`` pairs through which one BN layer's conditionals read the training switch.

    Control flow v2: the layer's own ``If`` op, input 0. Control flow v1: a conditional
    ``S`` reads its predicate in ``S/Switch`` (which makes ``switch_t``/``switch_f``) and in
    ``S/pred_id``; every ``Switch`` inside takes ``S/pred_id``. Both reads are listed so that
    the whole conditional follows a replacement switch, never half of it. Predicates that
    are computations of the switch (``logical_and``) are not pass-through: not listed.
    """
    pairs: set[tuple[str, int]] = set()
    for pred, frame, op in preds:
        if frame or op is None:
            continue
        if op.type in C.IF_OPS:
            pairs.add((op.name, 0))
            continue
        pred_op = pred.op
        if pred_op.type == "Identity" and pred_op.name.endswith("/pred_id"):
            scope = pred_op.name[: -len("pred_id")]
            source = pred_op.inputs[0]
            for c in source.consumers():
                if c.name.startswith(scope) and c.name[len(scope) :].count("/") == 0:
                    for i, t in enumerate(c.inputs):
                        if t is source:
                            pairs.add((c.name, i))
        else:
            pairs.add((op.name, 1))
    return tuple(sorted(pairs))


def _find_nonfused(tracer, targets):
    layers = []
    for op, frame in tracer.walk():
        if op.type != "Rsqrt" or op.inputs[0].op.type not in ("Add", "AddV2"):
            continue
        add = op.inputs[0].op
        preds: list = []
        var = None
        eps = None
        for i in (0, 1):
            var = tracer.one_source(add.inputs[i], frame, preds)
            if var is not None:
                c = _const_value(add.inputs[1 - i])
                eps = float(c) if c is not None and c.size == 1 else None
                break
        if var is None and not frame:
            # Training mode fixed: the variance is the batch's (``moments``); the update ops name the
            # moving variance.
            for i in (0, 1):
                var = _updated_by(targets, add.inputs[i])
                if var is not None:
                    c = _const_value(add.inputs[1 - i])
                    eps = float(c) if c is not None and c.size == 1 else None
                    break
        if var is None:
            continue
        rsqrt = op.outputs[0]
        gamma = None
        scale = rsqrt
        for consumer in rsqrt.consumers():
            if consumer.type == "Mul":
                other = consumer.inputs[1] if consumer.inputs[0] is rsqrt else consumer.inputs[0]
                g = tracer.one_source(other, frame)
                if g is not None and g != var:
                    gamma, scale = g, consumer.outputs[0]
                    break
        mean = x = beta = None
        axis = -1
        out = None
        mean_mul = None
        for consumer in scale.consumers():
            if consumer.type != "Mul":
                continue
            other = consumer.inputs[1] if consumer.inputs[0] is scale else consumer.inputs[0]
            # Predicates count only on the path that leads to the mean (not through the input's own
            # conditionals, such as a dropout before the layer).
            tried: list = []
            m = tracer.one_source(other, frame, tried)
            if m is None and not frame:
                m = _updated_by(targets, other, exclude=(var,))
            if m is not None:
                preds.extend(tried)
                mean, mean_mul = m, consumer
                shape = _reshape_target(other)
                if shape is not None:
                    axis = next((i for i, d in enumerate(shape) if d != 1), -1)
                break
        if mean is None or mean_mul is None:
            continue
        # beta - mean * scale, then x * scale + that: the forward path, not the gradient graph's.
        for sub in mean_mul.outputs[0].consumers():
            if sub.type in ("Sub", "Neg"):
                if sub.type == "Sub":
                    beta = tracer.one_source(sub.inputs[0], frame)
                for add_op in sub.outputs[0].consumers():
                    if add_op.type not in ("Add", "AddV2"):
                        continue
                    x_mul = add_op.inputs[0] if add_op.inputs[1] is sub.outputs[0] else add_op.inputs[1]
                    # ``is``, not ``in``: Tensor == is elementwise under TF2 behaviour.
                    if x_mul.op.type == "Mul" and any(t is scale for t in x_mul.op.inputs[:2]):
                        raw = x_mul.op.inputs[1] if x_mul.op.inputs[0] is scale else x_mul.op.inputs[0]
                        x, x_frame = tracer.outer(raw, frame)
                        x = None if x_frame else x  # inside a function: not fetchable
                        out = add_op.outputs[0].name
        if mean is None:
            continue
        flags = _flags_from_preds(tracer, preds)
        computed = tracer.one_source(add.inputs[0], frame) is None and tracer.one_source(add.inputs[1], frame) is None
        mode = "switch" if flags else ("training" if computed else "inference")
        layers.append((mean, var, gamma, beta, x, axis, False, flags, mode, eps, out, _switch_inputs(tracer, preds)))
    return layers


def _reshape_target(tensor):
    op = tensor.op
    while op.type in ("Identity", "Reshape"):
        if op.type == "Reshape":
            value = _const_value(op.inputs[1])
            return None if value is None else [int(v) for v in value.ravel()]
        op = op.inputs[0].op
    return None


def analyze_graph(meta_path: str) -> GraphInfo:
    """Read a MetaGraphDef and describe its variables, update ops and BN layers.

    Raises:
        GraphError: the graph cannot be read.
    """
    graph, _saver, _meta = load_graph(meta_path)
    return describe_graph(graph, meta_path)


def describe_graph(graph, path: str) -> GraphInfo:
    """``analyze_graph`` on an already imported graph."""
    tracer = GraphTracer(graph)
    saver_keys, aliases = _saver_keys(graph, tracer)
    has_saver = bool(saver_keys)

    global_vars = graph.get_collection("variables")
    trainable_ops = {v.op.name for v in graph.get_collection("trainable_variables")}
    if not global_vars:
        # A TF2 SavedModel's graph has no collections: its variables are the variable ops that
        # its save function saves or its functions use (others are leftovers of tracing).
        global_vars = [
            _HandleVariable(op)
            for op in graph.get_operations()
            if op.type in C.VARIABLE_OPS
            and (op.name in saver_keys or any(c.type in C.CALL_OPS for c in op.outputs[0].consumers()))
        ]

    def key_of(op_name: str) -> str:
        return saver_keys.get(op_name, op_name)

    variables: dict[str, GraphVariable] = {}
    op_to_key: dict[str, str] = {}
    for v in global_vars:
        shape: tuple[int, ...] | None
        info = getattr(v, "_save_slice_info", None)
        if info is not None:
            key, shape = info.full_name, tuple(int(d) for d in info.full_shape)
        else:
            key = key_of(v.op.name)
            shape = tuple(v.shape.as_list()) if v.shape.rank is not None and None not in v.shape.as_list() else None
        op_to_key[v.op.name] = key
        for alias in [key] + aliases.get(v.op.name, [])[1:]:
            if alias in variables:
                continue
            variables[alias] = GraphVariable(
                name=alias,
                dtype=v.dtype.base_dtype.name,
                shape=shape,
                trainable=v.op.name in trainable_ops,
                saved_by_saver=(v.op.name in saver_keys) if has_saver else None,
            )

    def k(op_name):
        return None if op_name is None else op_to_key.get(op_name, key_of(op_name))

    updates = _variable_updates(tracer)
    targets = _update_targets(updates)
    found = _find_fused(tracer, targets) + _find_nonfused(tracer, targets)
    bn_layers = []
    seen = set()
    for mean, var, gamma, beta, x, axis, fused, flags, mode, eps, out, switch_inputs in found:
        if (mean, var) in seen:
            continue
        seen.add((mean, var))
        keys = [k(n) for n in (mean, var, gamma, beta) if n]
        v = variables.get(k(mean))
        channels = v.shape[0] if v is not None and v.shape else None
        # TF2 object paths (variables/3/.ATTRIBUTES/...) say nothing of the layer: its variables' names do.
        named = [n for n in (mean, var, gamma, beta) if n] if any(C.TF2_VALUE_SUFFIX in key for key in keys) else keys
        bn_layers.append(
            BNLayer(
                layer=_layer_name(named),
                moving_mean=k(mean),
                moving_variance=k(var),
                gamma=k(gamma),
                beta=k(beta),
                channels=channels,
                fused=fused,
                axis=axis,
                input_tensor=None if x is None else x.name,
                training_flags=flags,
                mode=mode,
                epsilon=eps,
                output_tensor=out,
                switch_inputs=switch_inputs,
            )
        )
    bn_layers.sort(key=lambda layer: layer.layer)

    moving = {op for m, v, *_ in found for op in (m, v)}
    update_ops = tuple(op.name for op in graph.get_collection("update_ops"))
    bn_update_ops = {frame[0][1].name if frame else op.name for op, frame, target in updates if target in moving}
    bn_update_ops |= {name for name in update_ops}

    apply_ops = [op for op in graph.get_operations() if _is_apply(op.type)]
    train_ops = [op for op in graph.get_collection("train_op") if hasattr(op, "type")]
    train_ops = [getattr(t, "op", t) for t in train_ops] or apply_ops
    update_ops_unused = None
    if bn_update_ops and train_ops:
        upstream = tracer.ancestors(train_ops)
        update_ops_unused = not (bn_update_ops & upstream)

    roles = _roles(graph, tracer, variables, bn_layers, apply_ops, op_to_key)
    return GraphInfo(
        path=path,
        variables=variables,
        update_ops=update_ops,
        train_ops=tuple(op.name for op in train_ops),
        bn_layers=tuple(bn_layers),
        roles=roles,
        update_ops_unused=update_ops_unused,
        bn_update_ops=tuple(sorted(bn_update_ops)),
        keys_by_op=op_to_key,
    )


class _HandleVariable:
    """A variable op of a graph without variable collections, shaped like a ``tf.Variable`` for the analysis."""

    def __init__(self, op):
        from tensorflow.python.framework import tensor_shape

        self.op = op
        self.dtype = op.get_attr("dtype")
        try:
            self.shape = tensor_shape.TensorShape(op.get_attr("shape"))
        except ValueError:
            self.shape = tensor_shape.TensorShape(None)


def _is_initializer(op) -> bool:
    return any("Initializer" in t.op.name for t in op.inputs[1:2])


def _is_restore(op) -> bool:
    value = op.inputs[1] if len(op.inputs) > 1 else None
    while value is not None and value.op.type == "Identity":
        value = value.op.inputs[0]
    return value is not None and value.op.type in ("RestoreV2", "Restore", "RestoreSlice")


def _is_apply(op_type: str) -> bool:
    return op_type.startswith(("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply"))


def _roles(graph, tracer, variables, bn_layers, apply_ops, op_to_key) -> dict[str, str]:
    roles: dict[str, str] = {}
    for layer in bn_layers:
        for attr, role in (
            ("moving_mean", "bn_moving_mean"),
            ("moving_variance", "bn_moving_variance"),
            ("gamma", "bn_gamma"),
            ("beta", "bn_beta"),
        ):
            name = getattr(layer, attr)
            if name:
                roles[name] = role
    for op in apply_ops:
        for t in op.inputs[1:]:
            src = tracer.one_source(t, ())
            if src is not None:
                key = op_to_key.get(src, src)
                roles.setdefault(key, "optimizer_slot")
    steps = {op_to_key.get(v.op.name, v.op.name) for v in graph.get_collection("global_step")}
    for key, var in variables.items():
        if key in roles:
            continue
        if key in steps or (C.STEP_PATTERN.search(key) and var.shape == ()):
            roles[key] = "step"
        elif var.trainable:
            roles[key] = "weight"
        elif C.OPTIMIZER_SLOT_PATTERN.search(key):
            roles[key] = "optimizer_slot"
        else:
            roles[key] = "other"
    return roles
