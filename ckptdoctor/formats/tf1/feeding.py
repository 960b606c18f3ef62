"""What a TF1 graph's forward pass is fed: the data's placeholders, the training switch, ``--feed`` constants."""

from __future__ import annotations

import ast

import numpy as np

from ckptdoctor import constants as C
from ckptdoctor.errors import BadDataError

__all__ = ["placeholders", "shape_list", "tensor_named", "choose_inputs", "parse_feeds", "unfed", "training_flag"]


def placeholders(graph) -> list:
    return [op for op in graph.get_operations() if op.type in ("Placeholder", "PlaceholderWithDefault")]


def shape_list(tensor) -> list | None:
    shape = tensor.shape
    return None if shape.rank is None else shape.as_list()


def tensor_named(graph, name: str, what: str):
    full = name if ":" in name else name + ":0"
    try:
        return graph.get_tensor_by_name(full)
    except (KeyError, ValueError) as e:
        raise BadDataError(f"the graph has no {what} named {name!r}") from e


def _named_inputs(graph, data: dict) -> dict:
    """``.npz`` or bare ``.h5`` data: each array feeds the placeholder it is named after.

    Streamed keys marked ``optional`` (a TFRecord's label feature) that name no tensor are left out.
    """
    unknown = []
    for key in list(data):
        try:
            graph.get_tensor_by_name(key if ":" in key else key + ":0")
        except (KeyError, ValueError):
            unknown.append(key)
    if len(unknown) < len(data) and all(getattr(data[k], "optional", False) for k in unknown):
        data = {k: a for k, a in data.items() if k not in unknown}
        unknown = []
    if unknown:
        floats = ", ".join(op.outputs[0].name for op in placeholders(graph) if op.outputs[0].dtype.is_floating)
        raise BadDataError(
            f"the data hold arrays named {', '.join(sorted(data))}, but the graph has no placeholder "
            f"named {', '.join(sorted(unknown))} (its floating placeholders: {floats or 'none'}): "
            "name each array after the placeholder it feeds, or pick one HDF5 dataset as "
            "FILE.h5:DATASET"
        )
    return {tensor_named(graph, key, "placeholder"): arr for key, arr in data.items()}


def choose_inputs(graph, data: dict, input_name: str | None, exclude: set[str]) -> dict:
    """Map each data array to the tensor it feeds: a placeholder, or an iterator's output.

    Without ``--input``, the one floating placeholder whose shape fits the data; when no
    placeholder fits, the one iterator or queue output that fits (``IteratorGetNext:0``):
    the only data source of a training graph fed by ``tf.data``.
    """
    if None not in data:
        return _named_inputs(graph, data)
    array = data[None]
    if input_name:
        t = tensor_named(graph, input_name, "tensor (--input)")
        if not graph.is_feedable(t):
            raise BadDataError(
                f"--input {input_name}: TensorFlow cannot feed this tensor; pass a placeholder or an "
                "iterator's output such as IteratorGetNext:0"
            )
        return {t: array}

    def fits(t):
        shape = shape_list(t)
        return shape is None or (
            len(shape) == array.ndim
            and all(s is None or d is None or s == d for s, d in zip(shape[1:], array.shape[1:]))
        )

    candidates = [op.outputs[0] for op in placeholders(graph)]
    candidates = [t for t in candidates if t.name not in exclude and t.dtype.is_floating and fits(t)]
    if not candidates:  # iterators' and queues' outputs can be fed too
        candidates = [
            t
            for op in graph.get_operations()
            if op.type in C.DATA_SOURCE_OPS
            for t in op.outputs
            if t.dtype.is_floating and fits(t)
        ]
    if len(candidates) == 1:
        return {candidates[0]: array}
    if not candidates:
        shapes = (
            ", ".join(
                f"{op.outputs[0].name} {shape_list(op.outputs[0])}"
                for op in placeholders(graph)
                if op.outputs[0].dtype.is_floating
            )
            or "none"
        )
        raise BadDataError(
            f"no floating placeholder takes data of shape {list(array.shape)} (placeholders: {shapes}): "
            "reshape the data or pass --input"
        )
    raise BadDataError(
        f"several placeholders take data of shape {list(array.shape)} "
        f"({', '.join(t.name for t in candidates)}): pass --input NAME"
    )


def parse_feeds(graph, feeds) -> dict:
    """``--feed NAME=VALUE`` items as {tensor: value in its dtype}."""
    out = {}
    for item in feeds:
        if "=" not in item:
            raise BadDataError(f"--feed {item!r} is not NAME=VALUE (e.g. --feed keep_prob=1.0)")
        name, text = item.split("=", 1)
        tensor = tensor_named(graph, name.strip(), "placeholder (--feed)")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        try:
            out[tensor] = np.asarray(value, dtype=tensor.dtype.as_numpy_dtype)
        except (ValueError, TypeError) as e:
            raise BadDataError(f"--feed {item!r}: {text!r} is not a {tensor.dtype.name}") from e
    return out


def unfed(ancestors, graph, fetches, fed: set[str]) -> list[str]:
    """The placeholders the fetches need that nobody feeds."""
    needed = ancestors([t.op for t in fetches])
    missing = []
    for name in sorted(needed):
        op = graph.get_operation_by_name(name)
        if op.type == "Placeholder" and op.outputs[0].name not in fed:
            missing.append(op.outputs[0].name)
    return missing


def training_flag(graph, layers, training: str | None, method: str):
    """The boolean switch of the BN layers' mode: ``--training``, or the one their conditionals read."""
    flag = None
    if training:
        flag = tensor_named(graph, training, "training switch (--training)")
    else:
        flags = sorted({f for layer in layers for f in layer.training_flags})
        if len(flags) == 1:
            flag = graph.get_tensor_by_name(flags[0])
        elif len(flags) > 1:
            raise BadDataError(
                f"the BN layers depend on several boolean switches ({', '.join(flags)}): pass --training NAME"
            )
    if method == "train" and flag is None and {layer.mode for layer in layers} != {"training"}:
        raise BadDataError(
            "no training switch found for the BN layers (their mode is fixed to inference): "
            "pass --training NAME, or use --method sequential"
        )
    return flag
