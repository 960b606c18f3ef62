"""Running a TF1 graph restored from its checkpoint: the ``Runner`` of TF1 repairs.

The graph is imported from its MetaGraphDef, the checkpoint restored into a session,
and per BN layer three small reductions are added (count, per-channel mean, centred
sum of squares of its input). Only the BN layers run in training mode: their
conditionals are re-wired to a switch of their own (``modes.separate_bn_switch``), and
the original switch, read by dropout and the like, is fed False. Nothing is saved
from the session: the new checkpoint is written from the source's own tensors.
"""

from __future__ import annotations

from ckptdoctor.analysis.selfcheck import largest_gap
from ckptdoctor.errors import BadDataError, GraphError
from ckptdoctor.formats.base import RepairOptions
from ckptdoctor.formats.tf1.feeding import choose_inputs, parse_feeds, shape_list, training_flag, unfed
from ckptdoctor.formats.tf1.graph import GraphTracer, describe_graph, load_graph
from ckptdoctor.formats.tf1.modes import forward_outputs, held_consumers, random_upstream, separate_bn_switch
from ckptdoctor.runtime.base import Input, OutputUnavailable, Pass, Target

__all__ = ["GraphRunner"]

#: What the report says the gap columns are.
GAP_NOTE = "gaps: largest |inference-mode output - BN-training output| of each BN layer on the first batch"


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


def _repairable(info, meta: str) -> list:
    layers = [layer for layer in info.bn_layers if layer.input_tensor and layer.moving_mean and layer.moving_variance]
    if layers:
        return layers
    inside = [layer.layer for layer in info.bn_layers if not layer.input_tensor]
    if inside:
        raise GraphError(
            f"the BN layers of {meta} ({', '.join(inside[:3])}) run inside functions (a TF2 SavedModel traced "
            "for serving), where their inputs cannot be fetched: repair the model it was exported from "
            "(.keras, .h5, or a tf-keras SavedModel) and export it again"
        )
    raise GraphError(f"the graph {meta} has no batch-normalization layer whose input could be found: nothing to repair")


class _StatLoader:
    """Assign ops for every BN layer's moving statistics, built once before the session runs.

    ``Variable.load`` would add a new assign op to the graph at each call, and the
    session would re-extend its graph every time.
    """

    def __init__(self, tf, key_vars, layers):
        self._ops: dict[str, list] = {}
        for layer in layers:
            ops = []
            for key, which in ((layer.moving_mean, 0), (layer.moving_variance, 1)):
                for var in key_vars.get(key, []):
                    value = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
                    ops.append((which, value, tf.compat.v1.assign(var, value).op))
            self._ops[layer.layer] = ops

    def load(self, sess, statistics: dict) -> None:
        """Assign the given layers' statistics (``{layer: (mean, variance)}``) in one run."""
        feed, fetch = {}, []
        for name, values in statistics.items():
            for which, value, op in self._ops[name]:
                feed[value] = values[which].astype(value.dtype.as_numpy_dtype)
                fetch.append(op)
        if fetch:
            sess.run(fetch, feed)


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


class GraphRunner:
    """A TF1 graph in a session, restored from the checkpoint and bound to the data (see ``base.Runner``)."""

    def __init__(self, tf, reader, meta: str, arrays: dict, options: RepairOptions):
        self.tf, self.graph = tf, meta
        g, _saver, _meta = load_graph(meta)
        info = describe_graph(g, meta)
        self._g, self._tracer = g, GraphTracer(g)
        self._layers = _repairable(info, meta)
        flag = training_flag(g, self._layers, options.training, options.method)
        feeds = parse_feeds(g, options.feed)
        exclude = {t.name for t in feeds} | ({flag.name} if flag is not None else set())
        data_inputs = choose_inputs(g, arrays, options.input, exclude)
        self.inputs = [Input(t.name, a, shape_list(t), t.dtype.name) for t, a in data_inputs.items()]
        self._fed_tensors = list(data_inputs)
        xs = {layer.layer: g.get_tensor_by_name(layer.input_tensor) for layer in self._layers}
        fed = {t.name for t in data_inputs} | {t.name for t in feeds} | ({flag.name} if flag is not None else set())
        missing = unfed(self._tracer.ancestors, g, list(xs.values()), fed)
        if missing:
            raise BadDataError(
                f"the forward pass needs placeholders nobody feeds: {', '.join(missing)}; "
                "supply them with --feed NAME=VALUE (e.g. --feed keep_prob=1.0)"
            )
        self.training_flag = None if flag is None else flag.name
        self.gap_note = GAP_NOTE if flag is not None else ""
        self.notes: list[str] = []
        self._flag, self._feeds = flag, feeds
        self._split_modes(xs, fed)
        self._open_session(reader, info, xs)

    def _split_modes(self, xs: dict, fed: set[str]) -> None:
        """Only the BN layers in training mode: their conditionals get a switch of their own."""
        g, flag, layers = self._g, self._flag, self._layers
        self._bn_switch = None
        if flag is not None:
            with g.as_default():
                self._bn_switch = separate_bn_switch(self.tf, g, layers, flag)
            if self._bn_switch is None:
                self.notes.append(
                    f"cannot tell the BN layers' use of {flag.name} from other layers' (a computed "
                    "predicate): everything that reads it ran in training mode, dropout included; the "
                    "statistics may be off and the output check was not made"
                )
        split = self._bn_switch is not None
        self._final = forward_outputs(g, self._fed_tensors, fed, layers, self._tracer) if split else []
        self.output_names = tuple(t.name for t in self._final)
        self.held = held_consumers(self._tracer, g, flag, list(xs.values()) + self._final) if split else ()
        if flag is None and {layer.mode for layer in layers} == {"training"}:
            self.notes.append(
                "the graph fixes its BN layers to training mode: the statistics are the moments of "
                "each BN input over the data; the graph has no inference mode to check the repair "
                "against"
            )
            noisy = random_upstream(self._tracer, g, list(xs.values()))
            if noisy:
                self.notes.append(
                    f"random ops ({', '.join(noisy[:3])}) feed the BN inputs and ran during the "
                    "statistics pass (dropout or noise fixed to training): cannot be sure the "
                    "statistics match inference; repair with the inference graph (--graph eval.meta) "
                    "instead"
                )
        elif flag is None:
            self.notes.append("no training switch: no BN-training reference, the output check was not made")
        elif split and not self._final:
            self.notes.append("no network output found downstream of the BN layers: the output check was not made")

    def _open_session(self, reader, info, xs: dict) -> None:
        tf, g = self.tf, self._g
        entries = {e.name: e for e in reader.entries()}
        self.targets = []
        for layer in self._layers:
            keys = (layer.moving_mean, layer.moving_variance)
            stored = {key: reader.read(key) for key in keys if key in entries}
            dtypes = {key: info.variables[key].dtype if key in info.variables else "float32" for key in keys}
            self.targets.append(
                Target(
                    layer.layer,
                    layer.moving_mean,
                    layer.moving_variance,
                    layer.gamma,
                    layer.beta,
                    int(layer.channels),
                    stored,
                    dtypes,
                )
            )
        key_vars = _variables_by_key(g, info)
        with g.as_default():
            self._moment_ops = {
                layer.layer: _moment_ops(tf, xs[layer.layer], layer.channels, layer.axis) for layer in self._layers
            }
            self._loader = _StatLoader(tf, key_vars, self._layers)
        self._outs = (
            {layer.layer: g.get_tensor_by_name(layer.output_tensor) for layer in self._layers if layer.output_tensor}
            if self._flag is not None
            else {}
        )
        self._sess = tf.compat.v1.Session(graph=g)
        _restore(tf, g, self._sess, key_vars, entries, reader.prefix)

    def _feed(self, batch: list, bn_training: bool) -> dict:
        """BN layers in training mode or not; everything else that reads the switch in inference mode."""
        d = dict(self._feeds)
        d.update(zip(self._fed_tensors, batch))
        if self._bn_switch is not None:
            d[self._flag] = False
            d[self._bn_switch] = bn_training
        elif self._flag is not None:
            d[self._flag] = bn_training
        return d

    def run(
        self,
        batch: list,
        *,
        bn_training: bool,
        moments: bool = False,
        keep_layers: bool = False,
        against: dict | None = None,
        outputs: bool = True,
    ) -> Pass:
        fetch = (
            self._moment_ops if moments else {},
            self._outs if keep_layers or against else {},
            self._final if outputs else [],
        )
        try:
            got_moments, got_layers, got_final = self._sess.run(fetch, self._feed(batch, bn_training))
        except self.tf.errors.OpError as e:  # an output only one branch of a conditional computes, say
            if not outputs or not self._final:
                raise
            raise OutputUnavailable(str(e).splitlines()[0][:120]) from e
        gaps = {name: largest_gap(got_layers[name], against[name]) for name in against} if against else None
        return Pass(
            got_final if outputs else None, got_layers if keep_layers else None, gaps, got_moments if moments else None
        )

    def layer_moments(self, name: str, batch: list) -> tuple:
        return self._sess.run(self._moment_ops[name], self._feed(batch, False))

    def order(self) -> list[str]:
        """Layers in topological order of their inputs."""
        g, tracer = self._g, self._tracer
        ancestry = {
            layer.layer: tracer.ancestors([g.get_tensor_by_name(layer.input_tensor).op]) for layer in self._layers
        }
        outputs = {layer.layer: (layer.output_tensor or "").split(":")[0] for layer in self._layers}
        ordered = sorted(self._layers, key=lambda layer: sum(outputs[o] in ancestry[layer.layer] for o in outputs if o))
        return [layer.layer for layer in ordered]

    def load(self, statistics: dict) -> None:
        self._loader.load(self._sess, statistics)

    def reset(self) -> None:
        """The stored statistics again (a graph whose BN layers update in place moved them)."""
        stored = {
            t.name: (t.stored[t.moving_mean], t.stored[t.moving_variance])
            for t in self.targets
            if t.moving_mean in t.stored and t.moving_variance in t.stored
        }
        self.load(stored)

    def close(self) -> None:
        self._sess.close()
