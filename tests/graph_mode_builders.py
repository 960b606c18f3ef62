"""Small TF1 graphs whose training switch is shared with dropout, or fixed to training (one build per process).

    python graph_mode_builders.py KIND OUTDIR [--control-flow v1|v2] [--fused 0|1]

Kinds:

* ``dropout-switch``: on 3x3x4 images, conv 1x1x16 -> dropout(0.5) -> BN -> tanh -> conv 1x1x8 -> dropout(0.3)
  -> BN -> tanh -> mean over the image -> dense 1 (``--fused 1``: fused BN ops; 0: the non-fused pattern),
  where ``tf.compat.v1.layers.dropout(training=is_training)`` and
  ``tf.compat.v1.layers.batch_normalization(training=is_training)`` share one placeholder
  ``is_training``; the data come from the placeholder ``x``.
* ``training-only-raw``: as ``training-only``, the BN layers built as TF-Slim builds them in training
  mode (``nn.fused_batch_norm(is_training=True)`` without mean and variance inputs, or ``nn.moments``),
  tied to their moving statistics only by ``assign_moving_average`` update ops.
* ``training-only-dropout``: ``training-only`` with the dropout layers, fixed to training mode too.
* ``training-only``: the same layers without dropout, BN built with ``training=True`` (a Python
  constant), the data from a ``tf.data`` iterator (``IteratorGetNext``): the usual training graph of
  TF-Slim's train script and of Estimator's TRAIN mode. No placeholder at all.

Both train with Adam for a few steps with a train op that does NOT run UPDATE_OPS, so the moving
statistics stay at 0/1, and save with a Saver over all global variables (with ``.meta``).

``OUTDIR/info.json`` holds the tensor names, the BN layers' variable scopes, and the *expected*
statistics computed independently with numpy from the saved weights: each BN input's mean and
population variance over all samples of ``X.npy`` at inference (dropout off, every earlier BN layer
normalising with these same statistics), and the network's output at inference with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SAMPLES = 256
EPS = 1e-3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(SAMPLES, 3, 3, 4)) * [1.0, 3.0, 0.5, 2.0] + [2.0, -1.0, 5.0, 0.0]).astype(np.float32)
    y = (x.mean(axis=(1, 2)) @ rng.normal(size=(4, 1)) + 1.0).astype(np.float32)
    return x, y


def _raw_training_bn(tf, x, channels, fused, name):
    """BN in training mode as TF-Slim's ``batch_norm(is_training=True)`` builds it: ``nn.fused_batch_norm``
    with no mean and variance inputs (or ``nn.moments`` + ``nn.batch_normalization``), and the moving
    statistics reached only by ``assign_moving_average`` update ops in UPDATE_OPS."""
    from tensorflow.python.training import moving_averages

    v1 = tf.compat.v1
    with v1.variable_scope(name):
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        mm = v1.get_variable("moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False)
        mv = v1.get_variable("moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False)
        if fused:
            y, mean, var = v1.nn.fused_batch_norm(x, gamma, beta, epsilon=EPS, is_training=True)
        else:
            mean, var = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, mean, var, beta, gamma, EPS)
        for op in (
            moving_averages.assign_moving_average(mm, mean, 0.99, zero_debias=False),
            moving_averages.assign_moving_average(mv, var, 0.99, zero_debias=False),
        ):
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, op)
    return y


def build(
    kind: str, outdir: str, control_flow: str, fused: bool, switch: str = "placeholder", layers: str = "tf-layers"
) -> dict:
    import tensorflow as tf

    if control_flow == "v1":
        tf.compat.v1.disable_v2_behavior()
    else:
        tf.compat.v1.disable_eager_execution()
    v1 = tf.compat.v1
    x_np, y_np = _data()
    v1.set_random_seed(0)
    names: dict = {}
    widths = (16, 8)
    rates = (0.5, 0.3)
    with tf.Graph().as_default() as g:
        if kind == "dropout-switch":
            inp = v1.placeholder(tf.float32, (None, 3, 3, 4), name="x")
            target = v1.placeholder(tf.float32, (None, 1), name="y")
            if switch == "with-default":
                is_training = v1.placeholder_with_default(False, (), name="is_training")
            else:
                is_training = v1.placeholder(tf.bool, (), name="is_training")
            # "identity": the layers read the switch through the user's own tf.identity.
            training = tf.identity(is_training, name="training_id") if switch == "identity" else is_training
            names["training_flag"] = is_training.name
            feed_train = lambda: {inp: x_np, target: y_np, is_training: True}  # noqa: E731
        elif kind in ("training-only", "training-only-raw", "training-only-dropout"):
            ds = tf.data.Dataset.from_tensor_slices((x_np, y_np)).repeat().batch(64)
            it = v1.data.make_one_shot_iterator(ds)
            inp, target = it.get_next()
            training = True
            names["training_flag"] = None
            feed_train = lambda: {}  # noqa: E731
        else:
            raise SystemExit(f"unknown kind {kind!r}")
        names["input"] = inp.name
        h = inp
        bn_layers = []
        for i, width in enumerate(widths):
            h = v1.layers.conv2d(h, width, 1, name=f"dense{i}")
            if kind in ("dropout-switch", "training-only-dropout"):
                if layers == "keras":
                    h = tf.compat.v1.keras.layers.Dropout(rates[i], name=f"drop{i}")(h, training=training)
                else:
                    h = v1.layers.dropout(h, rate=rates[i], training=training, name=f"drop{i}")
            if kind == "training-only-raw":
                h = _raw_training_bn(tf, h, width, fused, f"bn{i}")
            elif layers == "keras":
                bn = tf.compat.v1.keras.layers.BatchNormalization(fused=bool(fused), name=f"bn{i}")
                h = bn(h, training=training)
                for op in bn.updates:
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, op)
            else:
                h = v1.layers.batch_normalization(h, training=training, fused=fused, name=f"bn{i}")
            bn_layers.append(f"bn{i}")
            h = tf.tanh(h)
        out = v1.layers.dense(tf.reduce_mean(h, axis=[1, 2]), 1, name="head")
        names["output"] = out.name
        loss = tf.reduce_mean(tf.square(out - target))
        # The train op ignores UPDATE_OPS: the moving statistics stay at their initial values.
        train = v1.train.AdamOptimizer(0.01).minimize(loss)
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(20):
                sess.run(train, feed_train())
            os.makedirs(outdir, exist_ok=True)
            prefix = os.path.join(outdir, "model.ckpt")
            saver.save(sess, prefix)
            weights = {v.op.name: sess.run(v) for v in v1.global_variables()}
    np.save(os.path.join(outdir, "X.npy"), x_np)
    np.save(os.path.join(outdir, "y.npy"), y_np)

    # The expected statistics, in numpy from the saved weights: inference, dropout off.
    expected = {}
    h = x_np.astype(np.float64)
    for i, _ in enumerate(widths):
        h = h @ weights[f"dense{i}/kernel"][0, 0] + weights[f"dense{i}/bias"]
        mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
        expected[f"bn{i}"] = {"mean": mean.tolist(), "variance": var.tolist()}
        h = (h - mean) / np.sqrt(var + EPS) * weights[f"bn{i}/gamma"] + weights[f"bn{i}/beta"]
        h = np.tanh(h)
    out_np = h.mean(axis=(1, 2)) @ weights["head/kernel"] + weights["head/bias"]
    np.save(os.path.join(outdir, "expected_output.npy"), out_np)
    info = {
        "kind": kind,
        "control_flow": control_flow,
        "fused": fused,
        "switch": switch,
        "layers": layers,
        "bn_layers": bn_layers,
        "expected": expected,
        "samples": SAMPLES,
        **names,
    }
    with open(os.path.join(outdir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def evaluate(outdir: str, prefix: str) -> list:
    """The network's output at inference (switch false) after restoring ``prefix`` (dropout-switch only)."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    with open(os.path.join(outdir, "info.json")) as f:
        info = json.load(f)
    x = np.load(os.path.join(outdir, "X.npy"))
    with tf.Graph().as_default() as g:
        saver = tf.compat.v1.train.import_meta_graph(os.path.join(outdir, "model.ckpt.meta"))
        with tf.compat.v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            out = sess.run(info["output"], {info["input"]: x, info["training_flag"]: False})
    return out.tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("outdir")
    parser.add_argument("--control-flow", default="v1", choices=("v1", "v2"))
    parser.add_argument("--fused", type=int, default=1)
    parser.add_argument("--switch", default="placeholder", choices=("placeholder", "with-default", "identity"))
    parser.add_argument("--layers", default="tf-layers", choices=("tf-layers", "keras"))
    parser.add_argument("--evaluate", default=None, help="print the inference output after restoring this prefix")
    args = parser.parse_args(argv)
    if args.evaluate:
        print(json.dumps(evaluate(args.outdir, args.evaluate)))
        return 0
    build(args.kind, args.outdir, args.control_flow, bool(args.fused), args.switch, args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
