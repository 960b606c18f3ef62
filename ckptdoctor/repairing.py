"""``repair``: recompute BN moving statistics from data and write a verified new checkpoint.

Only forward passes run; the train op never does, and no weight changes: the new
checkpoint is written from the source checkpoint's own tensors, with only the
moving means and variances replaced (or added when missing).
"""

from __future__ import annotations

import ast
import os
import sys
from itertools import islice
from dataclasses import asdict, dataclass

import numpy as np

from .data import check_data, load_data, release_rows
from .diagnose import Finding, diagnose_bn
from . import constants as C
from .errors import BadDataError, CkptDoctorError, GraphError
from .estimator import PooledMoments
from .readers import open_reader
from .resolve import resolve_checkpoint
from .selfcheck import OutputCheck, checked_batches, judge, largest_gap, output_scale, verdict

__all__ = ["LayerRepair", "RepairReport", "repair"]


@dataclass(frozen=True)
class LayerRepair:
    """One BN layer's statistics before and after.

    ``max_mean_shift`` is max |new mean - stored mean| / new std; variance
    ratios are new / stored. ``gap_before``/``gap_after``: the largest difference
    between the layer's inference-mode and training-mode outputs on the first
    batch (None without a training flag).
    """

    layer: str
    channels: int
    samples: int
    status_before: str
    moving_mean: str
    moving_variance: str
    mean_before: tuple[float, ...] | None
    variance_before: tuple[float, ...] | None
    mean_after: tuple[float, ...]
    variance_after: tuple[float, ...]
    max_mean_shift: float | None
    var_ratio_min: float | None
    var_ratio_max: float | None
    gap_before: float | None = None
    gap_after: float | None = None


@dataclass(frozen=True)
class RepairReport:
    """What ``repair`` did."""

    checkpoint: str
    graph: str
    data: str
    inputs: tuple[str, ...]
    training_flag: str | None
    method: str
    batch_size: int
    samples: int
    layers: tuple[LayerRepair, ...]
    output: str | None
    backup: str | None
    dry_run: bool
    untouched: int
    updated: int
    notes: tuple[str, ...] = ()
    gap_note: str = ""
    #: Layers (Keras) or ops (graphs) that take a training argument or switch but were held in
    #: inference mode while the BN layers ran in training mode: dropout, noise, stochastic depth...
    held_in_inference: tuple[str, ...] = ()
    #: The final output's gap to the reference before and after (``selfcheck``); None when it
    #: could not be measured (the notes say why).
    output_check: OutputCheck | None = None
    #: ``repair-not-improved`` when the repair was refused (nothing written).
    findings: tuple[Finding, ...] = ()
    refused: bool = False

    @property
    def exit_code(self) -> int:
        """1 when the repair was refused (nothing written), else 0."""
        return 1 if self.refused else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d


# --------------------------------------------------------------------------- feeding


def check_options(method: str, batch_size: int, in_place: bool, output: str | None) -> None:
    """The option checks every repair (graph, Keras, SavedModel) makes before reading anything."""
    if method not in ("train", "sequential"):
        raise CkptDoctorError(f"--method must be train or sequential, received {method!r}")
    if batch_size < 1:
        raise CkptDoctorError(f"--batch-size must be at least 1, received {batch_size}")
    if in_place and output:
        raise CkptDoctorError("pass either --output or --in-place, not both")


def _placeholders(graph):
    return [op for op in graph.get_operations() if op.type in ("Placeholder", "PlaceholderWithDefault")]


def _shape_list(tensor):
    shape = tensor.shape
    return None if shape.rank is None else shape.as_list()


def _tensor(graph, name: str, what: str):
    full = name if ":" in name else name + ":0"
    try:
        return graph.get_tensor_by_name(full)
    except (KeyError, ValueError) as e:
        raise BadDataError(f"the graph has no {what} named {name!r}") from e


def _choose_inputs(graph, data: dict, input_name: str | None, exclude: set[str]):
    """Map each data array to the tensor it feeds: a placeholder, or an iterator's output.

    Without ``--input``, the one floating placeholder whose shape fits the data; when no
    placeholder fits, the one iterator or queue output that fits (``IteratorGetNext:0``):
    the only data source of a training graph fed by ``tf.data``.
    """
    if None not in data:  # .npz or a bare .h5: keys are placeholder names
        unknown = []
        for key in data:
            try:
                graph.get_tensor_by_name(key if ":" in key else key + ":0")
            except (KeyError, ValueError):
                unknown.append(key)
        if unknown:
            floats = ", ".join(op.outputs[0].name for op in _placeholders(graph) if op.outputs[0].dtype.is_floating)
            raise BadDataError(f"the data hold arrays named {', '.join(sorted(data))}, but the graph has no placeholder "
                               f"named {', '.join(sorted(unknown))} (its floating placeholders: {floats or 'none'}): "
                               "name each array after the placeholder it feeds, or pick one HDF5 dataset as "
                               "FILE.h5:DATASET")
        return {_tensor(graph, key, "placeholder"): arr for key, arr in data.items()}
    array = data[None]
    if input_name:
        t = _tensor(graph, input_name, "tensor (--input)")
        if not graph.is_feedable(t):
            raise BadDataError(f"--input {input_name}: TensorFlow cannot feed this tensor; pass a placeholder or an "
                               "iterator's output such as IteratorGetNext:0")
        return {t: array}

    def fits(t):
        shape = _shape_list(t)
        return shape is None or (len(shape) == array.ndim and all(
            s is None or s == d for s, d in zip(shape[1:], array.shape[1:])))

    candidates = [op.outputs[0] for op in _placeholders(graph)]
    candidates = [t for t in candidates if t.name not in exclude and t.dtype.is_floating and fits(t)]
    if not candidates:  # iterators' and queues' outputs can be fed too
        candidates = [t for op in graph.get_operations() if op.type in C.DATA_SOURCE_OPS for t in op.outputs
                      if t.dtype.is_floating and fits(t)]
    if len(candidates) == 1:
        return {candidates[0]: array}
    if not candidates:
        shapes = ", ".join(f"{op.outputs[0].name} {_shape_list(op.outputs[0])}" for op in _placeholders(graph)
                           if op.outputs[0].dtype.is_floating) or "none"
        raise BadDataError(f"no floating placeholder takes data of shape {list(array.shape)} (placeholders: {shapes}): "
                           "reshape the data or pass --input")
    raise BadDataError(f"several placeholders take data of shape {list(array.shape)} "
                       f"({', '.join(t.name for t in candidates)}): pass --input NAME")


def _parse_feeds(graph, feeds) -> dict:
    out = {}
    for item in feeds:
        if "=" not in item:
            raise BadDataError(f"--feed {item!r} is not NAME=VALUE (e.g. --feed keep_prob=1.0)")
        name, text = item.split("=", 1)
        tensor = _tensor(graph, name.strip(), "placeholder (--feed)")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        try:
            out[tensor] = np.asarray(value, dtype=tensor.dtype.as_numpy_dtype)
        except (ValueError, TypeError) as e:
            raise BadDataError(f"--feed {item!r}: {text!r} is not a {tensor.dtype.name}") from e
    return out


def _unfed(tracer_ancestors, graph, fetches, fed: set[str]) -> list[str]:
    needed = tracer_ancestors([t.op for t in fetches])
    missing = []
    for name in sorted(needed):
        op = graph.get_operation_by_name(name)
        if op.type == "Placeholder" and op.outputs[0].name not in fed:
            missing.append(op.outputs[0].name)
    return missing


# --------------------------------------------------------------------------- graph pieces


def _moment_ops(tf, x, channels: int, axis: int):
    """Per-batch count, per-channel mean and centred sum of squares, reduced in the graph.

    Reduced in the activations' own precision (float32; float16/bfloat16 are widened
    to float32), centred on the batch mean, as the BN layer itself does; only three
    small vectors leave TensorFlow, and batches are merged in float64 by
    ``PooledMoments``. A float64 copy of every activation would cost a pass and twice
    the memory traffic per layer for no accuracy a BN layer could use.
    """
    if x.dtype.base_dtype not in (tf.float32, tf.float64):
        x = tf.cast(x, tf.float32)
    rank = x.shape.rank
    axis = axis % rank
    axes = [i for i in range(rank) if i != axis]
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    m2 = tf.reduce_sum(tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=axes)
    count = tf.cast(tf.size(x, out_type=tf.int64), tf.float64) / float(channels)
    return count, tf.reshape(mean, [channels]), m2


def _batches(arrays: dict, n: int, batch_size: int):
    """Consecutive batches in file order; pages of a batch are released once it is used."""
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        yield start, stop, {t: np.array(a[start:stop], dtype=t.dtype.as_numpy_dtype) for t, a in arrays.items()}
        for a in arrays.values():
            release_rows(a, start, stop)


class Progress:
    def __init__(self, total: int, enabled: bool, label: str):
        self.total, self.enabled, self.label, self.done = total, enabled and sys.stderr.isatty() and total > 1, label, 0

    def step(self, n: int = 1):
        self.done += n
        if self.enabled:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _order_layers(tracer, graph, layers):
    """Layers in topological order of their inputs (for --method sequential)."""
    ancestry = {layer.layer: tracer.ancestors([graph.get_tensor_by_name(layer.input_tensor).op]) for layer in layers}
    outputs = {layer.layer: (layer.output_tensor or "").split(":")[0] for layer in layers}
    return sorted(layers, key=lambda layer: sum(outputs[o] in ancestry[layer.layer] for o in outputs if o))


# --------------------------------------------------------------------------- repair


def repair(checkpoint: str, data: str, graph: str | None = None, input: str | None = None,
           training: str | None = None, feed=(), batch_size: int = 256, max_samples: int | None = None,
           method: str = "train", output: str | None = None, in_place: bool = False, dry_run: bool = False,
           force: bool = False, report: str | None = None, progress: bool = False,
           unsafe: bool = False) -> RepairReport:
    """Recompute every BN layer's moving mean and variance from data.

    With ``method="train"`` each batch runs in training mode, and each layer's
    new statistics are the exact mean and population variance of its input over
    every element seen (see ``estimator.PooledMoments``). With
    ``method="sequential"`` layers are recalibrated one at a time in topological
    order in inference mode, the layers before already recalibrated: for graphs
    whose BN mode is fixed to inference.

    Args:
        checkpoint: the checkpoint to repair; never modified (``in_place`` swaps it
            only after the new one is verified, keeping a backup).
        data: ``X.npy``, ``data.npz`` (keys name placeholders) or ``FILE.h5:dataset``.
        graph: the MetaGraphDef; default ``<prefix>.meta``.
        input: the placeholder the data feed; default: the only floating one that fits.
        training: the boolean training switch; default: the one the BN layers depend on.
        feed: ``NAME=VALUE`` constants for other placeholders.
        batch_size: samples per forward pass (consecutive, in file order; the last may be smaller).
        max_samples: use only the first N samples.
        method: ``train`` or ``sequential``.
        output: output prefix; default ``<prefix>-repaired``.
        in_place: replace the input after verification, keeping a backup.
        dry_run: compute everything, write nothing.
        force: overwrite an existing output.
        report: an HDF5 path for per-layer before/after arrays.
        progress: show a progress bar on stderr (when it is a terminal).
        unsafe: SavedModels written by tf-keras only: allow Lambda layers (their code runs).

    A Keras file (``.keras``, full ``.h5``) is repaired by ``keras_repair.repair_keras``,
    and a SavedModel directory written by tf-keras (``saved_model.pb`` +
    ``keras_metadata.pb``) by ``savedmodel_repair.repair_saved_model``.

    Returns:
        A ``RepairReport``.
    """
    from .keras_inspect import is_keras_file
    from .savedmodel_repair import is_saved_model

    if is_keras_file(os.fspath(checkpoint)):
        from .keras_repair import repair_keras

        if graph or training or feed:
            raise CkptDoctorError("--graph, --training and --feed are for TF1 checkpoints: a Keras file brings its "
                                  "own model; drop them")
        return repair_keras(os.fspath(checkpoint), data, input=input, batch_size=batch_size, max_samples=max_samples,
                            method=method, output=output, in_place=in_place, dry_run=dry_run, force=force,
                            report=report, unsafe=unsafe, progress=progress)
    if is_saved_model(os.fspath(checkpoint)):
        from .savedmodel_repair import repair_saved_model

        if graph or training or feed:
            raise CkptDoctorError("--graph, --training and --feed are for TF1 checkpoints: a SavedModel brings its "
                                  "own model; drop them")
        return repair_saved_model(checkpoint, data, input=input, batch_size=batch_size, max_samples=max_samples,
                                  method=method, output=output, in_place=in_place, dry_run=dry_run, force=force,
                                  report=report, unsafe=unsafe, progress=progress)
    from .graph import GraphTracer, describe_graph, load_graph
    from .graph_modes import forward_outputs, held_consumers, random_upstream, separate_bn_switch
    from .tfcompat import import_tensorflow
    from .writer import ensure_writable, write_checkpoint

    check_options(method, batch_size, in_place, output)
    resolved = resolve_checkpoint(checkpoint)
    if resolved.kind != "v2":
        raise CkptDoctorError(f"{resolved.prefix} is not a V2 checkpoint: repair writes V2 checkpoints only")
    meta = graph or resolved.prefix + ".meta"
    if not os.path.isfile(meta):
        raise GraphError(f"repair needs the graph: no {meta}; pass --graph with the MetaGraphDef (.meta) of this model")
    out_prefix = resolved.prefix if in_place else (output or resolved.prefix + "-repaired")
    if not dry_run and not in_place:
        ensure_writable(out_prefix, force)
    if report and os.path.exists(report) and not force:
        from .errors import OutputExistsError

        raise OutputExistsError(f"{report} exists: pass --force to overwrite it, or choose another --report path")
    arrays_by_key = load_data(data)

    tf = import_tensorflow()
    g, _saver, _meta = load_graph(meta)
    info = describe_graph(g, meta)
    tracer = GraphTracer(g)
    layers = [layer for layer in info.bn_layers if layer.input_tensor and layer.moving_mean and layer.moving_variance]
    if not layers:
        inside = [layer.layer for layer in info.bn_layers if not layer.input_tensor]
        if inside:
            raise GraphError(
                f"the BN layers of {meta} ({', '.join(inside[:3])}) run inside functions (a TF2 SavedModel traced "
                "for serving), where their inputs cannot be fetched: repair the model it was exported from "
                "(.keras, .h5, or a tf-keras SavedModel) and export it again")
        raise GraphError(f"the graph {meta} has no batch-normalization layer whose input could be found: nothing to repair")

    # What to feed.
    flag = None
    if training:
        flag = _tensor(g, training, "training switch (--training)")
    else:
        flags = sorted({f for layer in layers for f in layer.training_flags})
        if len(flags) == 1:
            flag = g.get_tensor_by_name(flags[0])
        elif len(flags) > 1:
            raise BadDataError(f"the BN layers depend on several boolean switches ({', '.join(flags)}): pass --training NAME")
    modes = {layer.mode for layer in layers}
    if method == "train" and flag is None and modes != {"training"}:
        raise BadDataError("no training switch found for the BN layers (their mode is fixed to inference): "
                           "pass --training NAME, or use --method sequential")
    feeds = _parse_feeds(g, feed)
    exclude = {t.name for t in feeds} | ({flag.name} if flag is not None else set())
    inputs = _choose_inputs(g, arrays_by_key, input, exclude)
    n = min(int(a.shape[0]) for a in inputs.values())
    if max_samples is not None:
        if max_samples < 1:
            raise BadDataError(f"--max-samples must be at least 1, received {max_samples}")
        n = min(n, int(max_samples))
    for t, a in inputs.items():
        check_data(a[:n] if n < a.shape[0] else a, f"{data} ({t.name.split(':')[0]})", _shape_list(t), t.dtype.name)
    xs = {layer.layer: g.get_tensor_by_name(layer.input_tensor) for layer in layers}
    fed = {t.name for t in inputs} | {t.name for t in feeds} | ({flag.name} if flag is not None else set())
    missing = _unfed(tracer.ancestors, g, list(xs.values()), fed)
    if missing:
        raise BadDataError(f"the forward pass needs placeholders nobody feeds: {', '.join(missing)}; "
                           "supply them with --feed NAME=VALUE (e.g. --feed keep_prob=1.0)")

    notes = []
    # Only the BN layers in training mode: their conditionals get a switch of their own.
    bn_switch = None
    if flag is not None:
        with g.as_default():
            bn_switch = separate_bn_switch(tf, g, layers, flag)
        if bn_switch is None:
            notes.append(f"cannot tell the BN layers' use of {flag.name} from other layers' (a computed "
                         "predicate): everything that reads it ran in training mode, dropout included; the "
                         "statistics may be off and the output check was not made")
    final = forward_outputs(g, list(inputs), fed, layers, tracer) if bn_switch is not None else []
    held = held_consumers(tracer, g, flag, list(xs.values()) + final) if bn_switch is not None else ()
    if flag is None and modes == {"training"}:
        notes.append("the graph fixes its BN layers to training mode: the statistics are the moments of each BN "
                     "input over the data; the graph has no inference mode to check the repair against")
        noisy = random_upstream(tracer, g, list(xs.values()))
        if noisy:
            notes.append(f"random ops ({', '.join(noisy[:3])}) feed the BN inputs and ran during the statistics "
                         "pass (dropout or noise fixed to training): cannot be sure the statistics match "
                         "inference; repair with the inference graph (--graph eval.meta) instead")
    elif flag is None:
        notes.append("no training switch: no BN-training reference, the output check was not made")
    elif bn_switch is not None and not final:
        notes.append("no network output found downstream of the BN layers: the output check was not made")

    source = open_reader(resolved)
    try:
        entries = {e.name: e for e in source.entries()}
        stored = {}
        for layer in layers:
            for key in (layer.moving_mean, layer.moving_variance):
                if key in entries:
                    stored[key] = source.read(key)

        key_vars = _variables_by_key(g, info)
        with g.as_default():
            moment_ops = {layer.layer: _moment_ops(tf, xs[layer.layer], layer.channels, layer.axis) for layer in layers}
            loader = _StatLoader(tf, key_vars, layers)
        with tf.compat.v1.Session(graph=g) as sess:
            _restore(tf, g, sess, key_vars, entries, resolved.prefix)
            base_feed = dict(feeds)

            def mode_feed(batch, bn_training):
                """BN layers in training mode or not; everything else that reads the switch in inference mode."""
                d = dict(base_feed)
                d.update(batch)
                if bn_switch is not None:
                    d[flag] = False
                    d[bn_switch] = bn_training
                elif flag is not None:
                    d[flag] = bn_training
                return d

            # Each BN layer's output (first batch only; without a switch there is no reference) and the
            # network's final outputs (every checked batch).
            outs = {layer.layer: g.get_tensor_by_name(layer.output_tensor) for layer in layers
                    if layer.output_tensor} if flag is not None else {}
            checked = [b for _, _, b in islice(_batches(inputs, n, batch_size),
                                                checked_batches(n, batch_size) if final else 1)]
            # The reference: BN in training mode, nothing else. It never reads the moving
            # statistics, so it serves before and after.
            try:
                train_outs, reference = _reference(sess, outs, final, mode_feed, checked)
            except tf.errors.OpError as e:  # an output only one branch of a conditional computes, say
                notes.append(f"the output check could not compute {', '.join(t.name for t in final)} "
                             f"({str(e).splitlines()[0][:120]}): it was not made")
                final, checked = [], checked[:1]
                train_outs, reference = _reference(sess, outs, final, mode_feed, checked)
            gaps_before, final_before = _gaps(sess, outs, final, mode_feed, checked, train_outs, reference)

            pooled = {layer.layer: PooledMoments(layer.channels) for layer in layers}
            batches = -(-n // batch_size)
            if method == "train":
                bar = Progress(batches, progress, "repair")
                for _, _, batch in _batches(inputs, n, batch_size):
                    results = sess.run(moment_ops, mode_feed(batch, True))
                    for name, (count, mean, m2) in results.items():
                        pooled[name].add(count, mean, m2)
                    bar.step()
            else:
                ordered = _order_layers(tracer, g, layers)
                bar = Progress(batches * len(ordered), progress, "repair")
                for layer in ordered:
                    for _, _, batch in _batches(inputs, n, batch_size):
                        count, mean, m2 = sess.run(moment_ops[layer.layer], mode_feed(batch, False))
                        pooled[layer.layer].add(count, mean, m2)
                        bar.step()
                    loader.load(sess, {layer.layer: pooled[layer.layer]})

            replacements = {}
            for layer in layers:
                dtype = np.dtype(info.variables[layer.moving_mean].dtype) if layer.moving_mean in info.variables \
                    else np.float32
                replacements[layer.moving_mean] = pooled[layer.layer].mean.astype(dtype)
                dtype = np.dtype(info.variables[layer.moving_variance].dtype) if layer.moving_variance in info.variables \
                    else np.float32
                replacements[layer.moving_variance] = pooled[layer.layer].variance.astype(dtype)
            if method == "train":
                loader.load(sess, pooled)
            gaps_after, final_after = _gaps(sess, outs, final, mode_feed, checked, train_outs, reference)

        check = None
        if final:
            check = judge(tuple(t.name for t in final), sum(len(next(iter(b.values()))) for b in checked),
                          output_scale(reference), final_before, final_after, gaps_before, gaps_after)
        refused, findings = verdict(check, tuple(held))
        rows = []
        for layer in layers:
            rows.append(layer_row(layer, pooled[layer.layer], stored, n, gaps_before, gaps_after))

        written = {"untouched": 0, "updated": 0, "backup": None}
        if not dry_run and not refused:
            written = write_checkpoint(source, out_prefix, replacements, meta, force=force, in_place=in_place)
    finally:
        source.close()

    result = RepairReport(
        checkpoint=resolved.prefix, graph=meta, data=data, inputs=tuple(t.name for t in inputs),
        training_flag=None if flag is None else flag.name, method=method, batch_size=batch_size, samples=n,
        layers=tuple(rows), output=None if dry_run or refused else out_prefix, backup=written["backup"],
        dry_run=dry_run, untouched=written["untouched"], updated=written["updated"], notes=tuple(notes),
        gap_note="gaps: largest |inference-mode output - BN-training output| of each BN layer on the first batch"
        if flag is not None else "",
        held_in_inference=tuple(held), output_check=check,
        findings=findings, refused=refused,
    )
    if report and not refused:  # a refused repair writes nothing
        from .h5report import write_repair_report

        write_repair_report(result, report, force=force)
    return result


def _variables_by_key(graph, info) -> dict[str, list]:
    """Checkpoint key -> the graph's variables stored under it (several for a partitioned one)."""
    by_key: dict[str, list] = {}
    for v in graph.get_collection("variables"):
        by_key.setdefault(info.keys_by_op.get(v.op.name, v.op.name), []).append(v)
    return by_key


def _restore(tf, graph, sess, key_vars, entries, prefix) -> None:
    """Restore the variables the checkpoint holds; the others get their initializers."""
    with graph.as_default():
        var_list = {}
        missing = []
        for key, variables in key_vars.items():
            if key in entries:
                var_list[key] = variables if len(variables) > 1 else variables[0]
            else:
                missing.extend(variables)
        if missing:
            sess.run(tf.compat.v1.variables_initializer(missing))
        if var_list:
            try:
                tf.compat.v1.train.Saver(var_list=var_list).restore(sess, prefix)
            except (tf.errors.OpError, ValueError) as e:
                raise GraphError(f"TensorFlow cannot restore {prefix} into the graph: {str(e).splitlines()[0]}") from e


class _StatLoader:
    """Assign ops for every BN layer's moving statistics, built once before the session runs.

    ``Variable.load`` would add a new assign op to the graph at each call, and the
    session would re-extend its graph every time.
    """

    def __init__(self, tf, key_vars, layers):
        self._ops: dict[str, list] = {}
        for layer in layers:
            ops = []
            for key, which in ((layer.moving_mean, "mean"), (layer.moving_variance, "variance")):
                for var in key_vars.get(key, []):
                    value = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
                    ops.append((which, value, tf.compat.v1.assign(var, value).op))
            self._ops[layer.layer] = ops

    def load(self, sess, pooled: dict) -> None:
        """Assign the pooled statistics of the given layers (``{layer: PooledMoments}``) in one run."""
        feed, fetch = {}, []
        for name, moments in pooled.items():
            for which, value, op in self._ops[name]:
                feed[value] = getattr(moments, which).astype(value.dtype.as_numpy_dtype)
                fetch.append(op)
        if fetch:
            sess.run(fetch, feed)


def _reference(sess, outs, final, mode_feed, batches) -> tuple[dict, list]:
    """The BN-training outputs (nothing else in training mode), one pass per batch: each BN layer's
    (``outs``) on the first batch, and the final outputs on every batch."""
    layer_ref: dict = {}
    final_ref: list = []
    for i, batch in enumerate(batches):
        want = outs if i == 0 else {}
        if not want and not final:
            break
        got, got_final = sess.run((want, final), mode_feed(batch, True))
        layer_ref = got if i == 0 else layer_ref
        final_ref.append(got_final)
    return layer_ref, final_ref


def _gaps(sess, outs, final, mode_feed, batches, layer_ref, final_ref) -> tuple[dict[str, float], float]:
    """One inference-mode pass per batch: each BN layer's largest |output - reference| on the first batch,
    and the final outputs' largest |output - reference| over every batch."""
    layer_gaps: dict[str, float] = {}
    gap = 0.0
    for i, batch in enumerate(batches):
        want = outs if i == 0 and layer_ref else {}
        if not want and not final:
            break
        got, got_final = sess.run((want, final), mode_feed(batch, False))
        if want:
            layer_gaps = {name: largest_gap(got[name], layer_ref[name]) for name in want}
        if final:
            gap = max(gap, largest_gap(got_final, final_ref[i]))
    return layer_gaps, gap


def layer_row(layer, pooled, stored, n, gaps_before, gaps_after) -> LayerRepair:
    mean_b = stored.get(layer.moving_mean)
    var_b = stored.get(layer.moving_variance)
    new_mean, new_var = pooled.mean, pooled.variance
    shift = ratio_min = ratio_max = None
    if mean_b is not None:
        sd = np.sqrt(np.maximum(new_var, 1e-12))
        shift = float(np.max(np.abs(new_mean - mean_b.astype(np.float64)) / sd))
    if var_b is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = new_var / var_b.astype(np.float64)
        ratio_min, ratio_max = float(np.min(ratio)), float(np.max(ratio))
    layer_dict = {"layer": layer.layer, "moving_mean": layer.moving_mean, "moving_variance": layer.moving_variance,
                  "gamma": layer.gamma, "beta": layer.beta, "channels": layer.channels}
    status = diagnose_bn(layer_dict, set(stored), stored, from_graph=True)[0].status
    return LayerRepair(
        layer=layer.layer, channels=int(layer.channels), samples=n, status_before=status,
        moving_mean=layer.moving_mean, moving_variance=layer.moving_variance,
        mean_before=None if mean_b is None else tuple(float(v) for v in mean_b),
        variance_before=None if var_b is None else tuple(float(v) for v in var_b),
        mean_after=tuple(float(v) for v in new_mean), variance_after=tuple(float(v) for v in new_var),
        max_mean_shift=shift, var_ratio_min=ratio_min, var_ratio_max=ratio_max,
        gap_before=gaps_before.get(layer.layer), gap_after=gaps_after.get(layer.layer),
    )
