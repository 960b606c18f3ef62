"""Build, train and save the small TF1 checkpoints that ckptdoctor is tested on.

Each *kind* is a variation of one problem: a TF1 graph with batch normalization
(BN) whose moving statistics end up missing, never updated or stale in the
checkpoint (see ``/work/shared/seed-question.txt``). One call builds one kind,
trains it deterministically and writes into ``OUTDIR``:

* ``model.ckpt.index``, ``model.ckpt.data-00000-of-00001``, ``model.ckpt.meta``
  and the ``checkpoint`` state file, whose paths are relative to ``OUTDIR``
  (``Saver(save_relative_paths=True)``), so the folder can be moved;
* ``X.npy`` (the inputs exactly as fed, float32) and ``y.npy`` (the targets);
* ``info.json``: ``kind``, ``control_flow``, ``steps``, ``seed``, ``samples``,
  the tensor names ``input``, ``target``, ``training_flag``, ``output``,
  ``loss`` (all with ``:0``), ``train_error`` (loss in training mode on all data
  right before saving), ``restored_inference_error`` and
  ``restored_training_error`` (loss after ``import_meta_graph`` + ``restore``
  in a fresh graph; the global initializer runs first, so tensors absent from
  the checkpoint keep their initial values), ``bn_layers`` and
  ``saved_variables`` (the number of tensors the saver wrote) and
  ``tensorflow_version``.

Kinds:

* ``seed``: the seed question's network and saver, verbatim (dense 5-3-1, BN
  after every dense layer, Adam(0.05), 3000 full-batch steps). Its saver keeps
  trainables plus globals named ``*batch_normalization*`` (moving statistics
  and the Adam slots of BN variables).
* ``seed-trainables``: saver over trainable variables only; the six moving
  statistics are missing from the checkpoint.
* ``seed-no-update``: the train op does not depend on ``UPDATE_OPS``; the
  moving statistics are saved at their initial values (0 and 1).
* ``seed-full``: correct training, saver over all globals. Its tensors equal
  ``seed``'s bit for bit, so its moving averages are just as stale: Adam(0.05)
  keeps moving the weights and the EMAs (momentum 0.99) lag behind.
* ``convnet``: 3 x (conv 3x3x8 without bias, fused BN, relu), global average
  pool, dense 1; mini-batches of 64, Adam(0.01), dropping to 0.001 after half
  and to 0.0001 after 70 % of the steps so the moving averages catch up
  (healthy); saver over all globals (including ``global_step``).
* ``nobn``: the seed network without BN (nothing to repair).
* ``keras-v1-bn``: BN via ``tf.compat.v1.keras.layers.BatchNormalization``;
  its updates are taken from ``layer.updates`` (``UPDATE_OPS`` stays empty) and
  its variables are resource variables even under control flow v1.
* ``custom-scope``: the whole network under ``variable_scope("block")`` with BN
  layers named ``norm_a`` .. ``norm_c`` (``block/norm_a/moving_mean``, ...,
  ``block/dense/kernel``), so no variable name contains ``batch_normalization``.

Command line (one build per process; the tests use this)::

    python sample_ckpts/builders.py KIND OUTDIR [--control-flow v1|v2]
        [--steps N] [--seed S] [--samples N]

``--control-flow v1`` calls ``tf.compat.v1.disable_v2_behavior()`` (reference
variables, Switch/Merge conditionals); ``v2`` only disables eager execution
(resource variables, ``If``/``StatelessIf`` conditionals). These switches are
process-wide, so :func:`build` may be imported and called, but only in a
process that has not used TensorFlow otherwise, and always with the same
``control_flow``. It needs ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is
imported; this module sets it if TensorFlow is not imported yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["KINDS", "CONTROL_FLOWS", "BuildError", "build", "make_data", "main"]

KINDS = (
    "seed",
    "seed-trainables",
    "seed-no-update",
    "seed-full",
    "convnet",
    "nobn",
    "keras-v1-bn",
    "custom-scope",
)
CONTROL_FLOWS = ("v1", "v2")
SEED_FAMILY = tuple(k for k in KINDS if k != "convnet")

DEFAULT_STEPS = {"convnet": 600}
DEFAULT_SEED_STEPS = 3000
# convnet: the learning rate drops at these fractions of the steps.
_CONVNET_LR_DROPS = (0.5, 0.7)
_CONVNET_LEARNING_RATES = (0.01, 0.001, 0.0001)
DEFAULT_SAMPLES = {"convnet": 2000}
DEFAULT_SEED_SAMPLES = 1000

CKPT_PREFIX = "model.ckpt"
# Files a build writes; only these are removed from OUTDIR before a build.
_OUTPUT_FILES = ("checkpoint", "X.npy", "y.npy", "info.json")

_active_control_flow: str | None = None


class BuildError(RuntimeError):
    """A build cannot run as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- #
# TensorFlow set-up


def _import_tf(control_flow: str):
    """Import TensorFlow with legacy Keras and switch graph mode once per process."""
    global _active_control_flow
    if control_flow not in CONTROL_FLOWS:
        raise BuildError(f"expected control_flow in {CONTROL_FLOWS}, received {control_flow!r}")
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise BuildError(
            "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set, so "
            "tf.compat.v1.layers is unavailable: run builders.py in a fresh process"
        )
    import tensorflow as tf

    if _active_control_flow is None:
        if control_flow == "v1":
            tf.compat.v1.disable_v2_behavior()
        else:
            tf.compat.v1.disable_eager_execution()
        _active_control_flow = control_flow
    elif _active_control_flow != control_flow:
        raise BuildError(
            f"this process already switched TensorFlow to control flow "
            f"{_active_control_flow!r}; build {control_flow!r} in a fresh process "
            f"(python sample_ckpts/builders.py KIND OUTDIR --control-flow {control_flow})"
        )
    return tf


def _session_config(tf):
    # One thread each: float reductions then run in a fixed order, so a build
    # gives the same checkpoint bytes every time on the same machine.
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


# --------------------------------------------------------------------------- #
# Data


def make_data(kind: str, samples: int | None = None, seed: int = 0):
    """Return the deterministic ``(X, y)`` float32 arrays a kind trains on.

    Args:
        kind: one of :data:`KINDS`.
        samples: number of rows; ``None`` for the kind's default.
        seed: seed of the ``numpy.random.RandomState``.

    Returns:
        ``(X, y)``; for the seed family ``X`` is ``(samples, 2)`` uniform in
        [0, 1) and ``y = 2 x0 + 3 x1 + 3`` as ``(samples, 1)``; for ``convnet``
        ``X`` is ``(samples, 8, 8, 3)`` images with per-image contrast and
        brightness, and ``y`` a ``(samples, 1)`` nonlinear function of them.
    """
    rs = np.random.RandomState(seed)
    if kind == "convnet":
        n = DEFAULT_SAMPLES["convnet"] if samples is None else samples
        contrast = rs.uniform(0.5, 2.0, size=(n, 1, 1, 1))
        brightness = rs.uniform(-1.0, 1.0, size=(n, 1, 1, 1))
        x = rs.rand(n, 8, 8, 3) * contrast + brightness
        # Local structure (a horizontal edge detector) plus channel statistics,
        # so the convolutions have something to learn.
        edge = np.abs(x[:, :, 1:, 0] - x[:, :, :-1, 0]).mean(axis=(1, 2))
        y = 2.0 * edge + np.maximum(x[..., 1] - x[..., 2], 0).mean(axis=(1, 2))
        y = y + 0.5 * x[..., 2].mean(axis=(1, 2)) + 1.0
        return x.astype(np.float32), y.reshape(-1, 1).astype(np.float32)
    if kind not in KINDS:
        raise BuildError(f"expected kind in {KINDS}, received {kind!r}")
    n = DEFAULT_SEED_SAMPLES if samples is None else samples
    x = rs.rand(n, 2)
    y = 2 * x[:, 0] + 3 * x[:, 1] + 3
    return x.astype(np.float32), y.reshape(-1, 1).astype(np.float32)


# --------------------------------------------------------------------------- #
# Graphs


def _build_seed_graph(tf, kind: str) -> dict[str, Any]:
    """The seed question's network, with the per-kind variation."""
    v1 = tf.compat.v1
    layers = [5, 3, 1]
    activations = [tf.tanh, tf.tanh, None]
    inp = v1.placeholder(dtype=tf.float32, shape=(None, 2), name="inp")
    out = v1.placeholder(dtype=tf.float32, shape=(None, 1), name="out")
    is_training = v1.placeholder(dtype=tf.bool, shape=(), name="isTraining")

    keras_bn_layers = []

    def normalize(n, i):
        if kind == "nobn":
            return n
        if kind == "keras-v1-bn":
            layer = v1.keras.layers.BatchNormalization()
            keras_bn_layers.append(layer)
            return layer(n, training=is_training)
        if kind == "custom-scope":
            return v1.layers.batch_normalization(n, training=is_training, name="norm_" + "abc"[i])
        return v1.layers.batch_normalization(n, training=is_training)

    def network():
        n = inp * 1
        for i, (units, act) in enumerate(zip(layers, activations)):
            n = v1.layers.dense(n, units, None)
            n = normalize(n, i)
            if act is not None:
                n = act(n)
        return n

    if kind == "custom-scope":
        with v1.variable_scope("block"):
            n = network()
    else:
        n = network()
    prediction = tf.identity(n, name="prediction")
    err = tf.reduce_mean((prediction - out) ** 2, name="loss")

    if kind == "seed-no-update":
        update_ops = []
    else:
        update_ops = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        if not update_ops:
            # Keras layers in graph mode keep their updates on the layer.
            update_ops = [u for layer in keras_bn_layers for u in layer.updates]
    with tf.control_dependencies(update_ops):
        train_op = v1.train.AdamOptimizer(0.05).minimize(err)

    if kind in ("seed", "seed-trainables"):
        var_list = v1.trainable_variables()
        if kind == "seed":
            # The seed's selection, by identity rather than ``in`` (== on tensors).
            chosen = {id(v) for v in var_list}
            for v in v1.get_collection(v1.GraphKeys.GLOBAL_VARIABLES):
                if "batch_normalization" in v.name and "optimizer" not in v.name and id(v) not in chosen:
                    var_list.append(v)
    else:
        var_list = v1.global_variables()

    return {
        "input": inp,
        "target": out,
        "training_flag": is_training,
        "output": prediction,
        "loss": err,
        "train_op": train_op,
        "update_ops": update_ops,
        "var_list": var_list,
        "bn_layers": 0 if kind == "nobn" else len(layers),
    }


def _build_convnet_graph(tf, steps: int) -> dict[str, Any]:
    """Three conv + fused BN + relu blocks, global average pool, dense 1."""
    v1 = tf.compat.v1
    images = v1.placeholder(tf.float32, (None, 8, 8, 3), name="images")
    target = v1.placeholder(tf.float32, (None, 1), name="target")
    training = v1.placeholder_with_default(False, (), name="training")
    n = images
    for _ in range(3):
        # No conv bias: BN's beta makes it redundant.
        n = v1.layers.conv2d(n, 8, 3, padding="same", use_bias=False)
        n = v1.layers.batch_normalization(n, fused=True, training=training)
        n = tf.nn.relu(n)
    n = tf.reduce_mean(n, axis=[1, 2], name="global_pool")
    n = v1.layers.dense(n, 1)
    prediction = tf.identity(n, name="prediction")
    err = tf.reduce_mean(tf.square(prediction - target), name="loss")
    update_ops = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
    # Smaller steps at the end let the weights settle, so the moving averages
    # (momentum 0.99, ~100-step memory) catch up: a healthy reference.
    global_step = v1.train.get_or_create_global_step()
    learning_rate = v1.train.piecewise_constant(
        global_step,
        [int(steps * f) for f in _CONVNET_LR_DROPS],
        list(_CONVNET_LEARNING_RATES),
    )
    with tf.control_dependencies(update_ops):
        train_op = v1.train.AdamOptimizer(learning_rate).minimize(err, global_step=global_step)
    return {
        "input": images,
        "target": target,
        "training_flag": training,
        "output": prediction,
        "loss": err,
        "train_op": train_op,
        "update_ops": update_ops,
        "var_list": v1.global_variables(),
        "bn_layers": 3,
    }


# --------------------------------------------------------------------------- #
# Training and measuring


def _train(sess, g, x, y, kind: str, steps: int, seed: int) -> None:
    feed_all = {g["input"]: x, g["target"]: y, g["training_flag"]: True}
    if kind != "convnet":
        for _ in range(steps):
            sess.run(g["train_op"], feed_dict=feed_all)
        return
    batch = 64
    rs = np.random.RandomState(seed + 1)
    order = rs.permutation(len(x))
    pos = 0
    for _ in range(steps):
        if pos + batch > len(order):
            order = rs.permutation(len(x))
            pos = 0
        idx = order[pos : pos + batch]
        pos += batch
        sess.run(
            g["train_op"],
            feed_dict={g["input"]: x[idx], g["target"]: y[idx], g["training_flag"]: True},
        )


def _measure_restored(tf, outdir: str, names: dict, x, y) -> dict[str, float]:
    """Loss in inference and training mode after a fresh import + restore."""
    prefix = os.path.join(outdir, CKPT_PREFIX)
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        init = tf.compat.v1.global_variables_initializer()
        with tf.compat.v1.Session(graph=graph, config=_session_config(tf)) as sess:
            sess.run(init)
            saver.restore(sess, prefix)
            feed = {names["input"]: x, names["target"]: y}
            errors = {}
            for mode, flag in (("inference", False), ("training", True)):
                feed[names["training_flag"]] = flag
                errors[mode] = float(sess.run(names["loss"], feed_dict=feed))
    return errors


def _canonicalize_meta_graph(path: str) -> None:
    """Rewrite a ``.meta`` file with protobuf maps in a fixed order.

    Control flow v1 stores each ``CondContextDef`` as pre-serialized bytes in
    the ``cond_context`` collection, and their ``external_values`` maps come
    out in a different order on every run; re-serializing deterministically
    makes rebuilt samples byte-identical (the graph itself is unchanged).
    """
    from tensorflow.core.protobuf import control_flow_pb2, meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    with open(path, "rb") as f:
        meta.ParseFromString(f.read())
    for key, message_type in (
        ("cond_context", control_flow_pb2.CondContextDef),
        ("while_context", control_flow_pb2.WhileContextDef),
    ):
        if key not in meta.collection_def:
            continue
        values = meta.collection_def[key].bytes_list.value
        for i, value in enumerate(values):
            context = message_type()
            context.ParseFromString(value)
            values[i] = context.SerializeToString(deterministic=True)
    staging = path + ".tmp"
    with open(staging, "wb") as f:
        f.write(meta.SerializeToString(deterministic=True))
    os.replace(staging, path)


def _clean_outdir(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    for name in os.listdir(outdir):
        if name.startswith(CKPT_PREFIX + ".") or name in _OUTPUT_FILES:
            os.remove(os.path.join(outdir, name))


def build(
    kind: str,
    outdir: str,
    control_flow: str = "v1",
    steps: int | None = None,
    seed: int = 0,
    samples: int | None = None,
) -> dict[str, Any]:
    """Build, train and save one checkpoint of ``kind`` into ``outdir``.

    Switches TensorFlow's process-wide graph mode on first use: call it in a
    fresh process (as the command line does) and never with two different
    ``control_flow`` values in one process.

    Args:
        kind: one of :data:`KINDS`.
        outdir: folder to write; created if absent; earlier outputs of a build
            (``model.ckpt.*``, ``checkpoint``, ``X.npy``, ``y.npy``,
            ``info.json``) are removed first, other files are left alone.
        control_flow: ``"v1"`` (ref variables, Switch/Merge) or ``"v2"``
            (resource variables, ``If`` ops).
        steps: training steps; ``None`` for 3000 (seed family) or 600 (convnet,
            whose learning rate drops tenfold after 50 % and 70 % of them).
        seed: seed of numpy data, graph-level TF seed and batch order.
        samples: number of data rows; ``None`` for 1000 or 2000 (convnet).

    Returns:
        The dict also written to ``outdir/info.json``.

    Raises:
        BuildError: unknown kind or control flow, or TensorFlow already set up
            differently in this process.
    """
    if kind not in KINDS:
        raise BuildError(f"expected kind in {KINDS}, received {kind!r}")
    tf = _import_tf(control_flow)
    if steps is None:
        steps = DEFAULT_STEPS.get(kind, DEFAULT_SEED_STEPS)
    x, y = make_data(kind, samples, seed)
    outdir = os.path.abspath(outdir)
    _clean_outdir(outdir)

    graph = tf.Graph()
    with graph.as_default():
        # The graph seed fixes TF1 initializers (v1); Keras' v2 initializers
        # draw their seeds from Python's ``random``, which this also seeds.
        tf.keras.utils.set_random_seed(seed)
        tf.compat.v1.set_random_seed(seed)
        g = _build_convnet_graph(tf, steps) if kind == "convnet" else _build_seed_graph(tf, kind)
        init = tf.compat.v1.global_variables_initializer()
        saver = tf.compat.v1.train.Saver(var_list=g["var_list"], save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph, config=_session_config(tf)) as sess:
            sess.run(init)
            _train(sess, g, x, y, kind, steps, seed)
            train_error = float(
                sess.run(
                    g["loss"],
                    feed_dict={g["input"]: x, g["target"]: y, g["training_flag"]: True},
                )
            )
            saver.save(sess, os.path.join(outdir, CKPT_PREFIX))
    _canonicalize_meta_graph(os.path.join(outdir, CKPT_PREFIX + ".meta"))

    names = {k: g[k].name for k in ("input", "target", "training_flag", "output", "loss")}
    errors = _measure_restored(tf, outdir, names, x, y)
    np.save(os.path.join(outdir, "X.npy"), x)
    np.save(os.path.join(outdir, "y.npy"), y)
    info = {
        "kind": kind,
        "control_flow": control_flow,
        "steps": steps,
        "seed": seed,
        "samples": int(len(x)),
        **names,
        "train_error": train_error,
        "restored_inference_error": errors["inference"],
        "restored_training_error": errors["training"],
        "bn_layers": g["bn_layers"],
        "saved_variables": len(g["var_list"]),
        "tensorflow_version": tf.__version__,
    }
    with open(os.path.join(outdir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


# --------------------------------------------------------------------------- #
# Command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run one build, print its info.json to stdout."""
    parser = argparse.ArgumentParser(description="Build, train and save one sample TF1 checkpoint with BN.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("outdir")
    parser.add_argument("--control-flow", choices=CONTROL_FLOWS, default="v1")
    parser.add_argument("--steps", type=_positive_int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=_positive_int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    try:
        info = build(
            args.kind,
            args.outdir,
            control_flow=args.control_flow,
            steps=args.steps,
            seed=args.seed,
            samples=args.samples,
        )
    except BuildError as e:
        print(f"builders.py: {e}", file=sys.stderr)
        return 2
    print(
        f"built {args.kind} ({args.control_flow}) in {time.perf_counter() - started:.1f} s "
        f"-> {os.path.abspath(args.outdir)}",
        file=sys.stderr,
    )
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
