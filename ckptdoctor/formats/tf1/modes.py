"""Running a TF1 graph with only its BN layers in training mode, and finding what it outputs.

The target of a repair is each BN input's population statistics *as the network computes
them at inference*: dropout off, noise off. Many graphs have one boolean switch for all of
it (``tf.compat.v1.layers.dropout(training=is_training)`` beside
``batch_normalization(training=is_training)``, TF-Slim's ``is_training``), so feeding it
true to get batch statistics also turns dropout on, and the variances come out wrong
(2-10x for a dropout rate of 0.5).

The mechanism: after the graph is imported, the BN layers' own conditionals are re-wired
to read a second switch, ``ckptdoctor_bn_training`` (a ``placeholder_with_default``
false). ``graph.BNLayer.switch_inputs`` lists exactly which op inputs those are: for
control flow v1, the cond's ``Switch`` and ``pred_id`` (every inner ``Switch`` reads
``pred_id``), so a conditional is always re-wired whole; for control flow v2, the layer's
``If``. The original switch is then fed false: dropout and every other reader of the
switch see inference mode, the BN layers whatever the repair needs. Nothing is written
back: the re-wiring lives in the repair's in-memory graph only.
"""

from __future__ import annotations

from ckptdoctor import constants as C

__all__ = ["BN_SWITCH_NAME", "separate_bn_switch", "held_consumers", "forward_outputs", "random_upstream"]

#: The name of the BN layers' own switch in the repair's graph.
BN_SWITCH_NAME = "ckptdoctor_bn_training"


def _reads_flag(tensor, flag) -> bool:
    """``tensor`` is the switch itself, or the switch through Identity ops."""
    for _ in range(64):
        if tensor.name == flag.name:
            return True
        if tensor.op.type != "Identity" or not tensor.op.inputs:
            return False
        tensor = tensor.op.inputs[0]
    return False


def separate_bn_switch(tf, graph, layers, flag):
    """Re-wire each BN layer's conditionals to a switch of their own; return it (None when impossible).

    Impossible when a layer that depends on ``flag`` lists no conditional of its own, or when
    one of its conditionals reads a *computation* of the switch (a ``logical_and``): then
    nothing is re-wired. Call with ``graph`` as the default graph, before the session starts.
    """
    pairs: set[tuple[str, int]] = set()
    for layer in layers:
        if flag.name not in layer.training_flags:
            continue
        if not layer.switch_inputs:
            return None
        pairs.update(layer.switch_inputs)
    ops = []
    for op_name, index in sorted(pairs):
        op = graph.get_operation_by_name(op_name)
        if index >= len(op.inputs) or not _reads_flag(op.inputs[index], flag):
            return None
        ops.append((op, index))
    if not ops:
        return None
    switch = tf.compat.v1.placeholder_with_default(False, shape=(), name=BN_SWITCH_NAME)
    done = []
    try:
        for op, index in ops:
            op._update_input(index, switch)  # the public API has no way to re-wire an imported graph
            done.append((op, index))
    except (AttributeError, TypeError, ValueError, tf.errors.OpError):
        for op, index in done:  # all or nothing: a half re-wired conditional would compute dead tensors
            op._update_input(index, flag)
        return None
    return switch


def _readers(flag) -> list:
    """Ops that read ``flag``, directly or through Identity ops (the Identity ops themselves excluded,
    except a v1 conditional's ``pred_id``)."""
    out, stack, seen = [], [flag], set()
    while stack:
        t = stack.pop()
        for c in t.consumers():
            if c.name in seen:
                continue
            seen.add(c.name)
            if c.type == "Identity" and not c.name.endswith("/pred_id"):
                stack.extend(c.outputs)
            else:
                out.append(c)
    return out


def _scope(op) -> str:
    for suffix in ("/pred_id", "/Switch"):
        if op.name.endswith(suffix):
            return op.name[: -len(suffix)]
    return op.name


def held_consumers(tracer, graph, flag, fetches) -> tuple[str, ...]:
    """The readers of the original switch on the way to ``fetches`` (dropout's conditionals, say):
    held in inference mode while the BN layers ran in training mode. Named by conditional scope."""
    if flag is None:
        return ()
    needed = tracer.ancestors([t.op for t in fetches])
    names = {_scope(op) for op in _readers(flag) if op.name in needed and not op.name.startswith("gradients")}
    return tuple(sorted(names))


def random_upstream(tracer, graph, tensors) -> list[str]:
    """Random ops (dropout's mask, noise) that the given tensors depend on."""
    needed = tracer.ancestors([t.op for t in tensors])
    return sorted(name for name in needed if graph.get_operation_by_name(name).type in C.RANDOM_OPS)


def _descendants(tensors) -> set[str]:
    seen: set[str] = set()
    stack = [c for t in tensors for c in t.consumers()]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(c for t in op.outputs for c in t.consumers())
    return seen


_NOT_OUTPUTS = C.ASSIGN_OPS | C.VARIABLE_OPS | C.SAVE_OPS | {"NoOp", "Assert", "RestoreV2", "Restore"}


def _is_update(op) -> bool:
    return op.type in _NOT_OUTPUTS or op.type.startswith(
        ("Apply", "ResourceApply", "SparseApply", "ResourceSparseApply")
    )


def forward_outputs(graph, inputs, fed: set[str], layers, tracer=None) -> list:
    """The network's final outputs: what the output check compares.

    The floating tensors (not scalars) downstream of the data that can be computed from what
    is fed (so not the loss, which needs the labels, nor any gradient), that no other such
    tensor consumes and that feed no update op, downstream of the most BN layers' outputs.
    """
    unfed = [
        op.outputs[0] for op in graph.get_operations() if op.type in ("Placeholder",) and op.outputs[0].name not in fed
    ]
    unfed += [
        t for op in graph.get_operations() if op.type in C.DATA_SOURCE_OPS for t in op.outputs if t.name not in fed
    ]
    blocked = _descendants(unfed)
    reached = {name for name in _descendants(inputs) - blocked if not name.startswith("gradients")}

    def computes(op) -> bool:
        """A computation downstream of the data that is not a scalar (a loss or a metric computable
        without labels does not count: the tensor it reduces is an output)."""
        return not _is_update(op) and bool(op.outputs) and op.outputs[0].shape.rank != 0

    forward = {name for name in reached if computes(graph.get_operation_by_name(name))}
    candidates = []
    for name in forward:
        op = graph.get_operation_by_name(name)
        t = op.outputs[0]
        if not t.dtype.is_floating or t.dtype._is_ref_dtype or op.type in C.RANDOM_OPS:
            continue
        consumers = [c for out in op.outputs for c in out.consumers()]
        if any(c.name in forward or _is_update(c) for c in consumers):
            continue
        candidates.append(t)
    if not candidates:
        return []
    bn_outputs = {layer.output_tensor.split(":")[0] for layer in layers if layer.output_tensor}
    if tracer is None:
        from ckptdoctor.formats.tf1.graph import GraphTracer

        tracer = GraphTracer(graph)
    counts = {t.name: len(bn_outputs & tracer.ancestors([t.op])) for t in candidates}
    best = max(counts.values())
    if best == 0:
        return []
    return sorted((t for t in candidates if counts[t.name] == best), key=lambda t: t.name)
