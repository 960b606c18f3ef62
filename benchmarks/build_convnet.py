"""Build the TF1 conv net the repair benchmarks run, and its data files.

    python benchmarks/build_convnet.py OUTDIR [--steps N] [--data NAME:SAMPLES:SIZE ...]

The network: ten blocks of conv 3x3 (no bias) + fused batch normalization
(``tf.compat.v1.layers.batch_normalization(fused=True)``, channels last) + relu,
with 8, 8, 8, 16/2, 16, 16, 32/2, 32, 32, 32 channels (/2: stride 2), then global
average pooling and a dense layer of 10 logits. The input placeholder
``images`` is ``(None, None, None, 3)``, so the same graph and checkpoint take 16x16
and 8x8 images; the training switch is ``placeholder_with_default(False)``. It is
trained for a few Adam steps with the BN update ops, then saved with a ``Saver``
over all global variables (``OUTDIR/model.ckpt`` + ``.meta``).

Each ``--data NAME:SAMPLES:SIZE`` writes ``OUTDIR/NAME.npy``: SAMPLES float32
images of SIZE x SIZE x 3 (seeded, per-channel offsets and scales so every BN
layer sees non-trivial statistics), written in chunks, never whole in memory.
Prints a JSON summary on stdout.
"""

import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BLOCKS = [(8, 1), (8, 1), (8, 1), (16, 2), (16, 1), (16, 1), (32, 2), (32, 1), (32, 1), (32, 1)]
_CHUNK = 65536  # samples generated at a time


def images(rng, n: int, size: int) -> np.ndarray:
    x = rng.standard_normal((n, size, size, 3), dtype=np.float32)
    x *= np.array([1.0, 2.0, 0.5], np.float32)
    x += np.array([0.5, -1.0, 2.0], np.float32)
    return x


def write_data(path: str, samples: int, size: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(samples, size, size, 3))
    for start in range(0, samples, _CHUNK):
        stop = min(samples, start + _CHUNK)
        out[start:stop] = images(rng, stop - start, size)
    out.flush()
    del out
    return os.path.getsize(path)


def build(outdir: str, steps: int) -> dict:
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    v1 = tf.compat.v1
    v1.set_random_seed(0)
    x = v1.placeholder(tf.float32, (None, None, None, 3), name="images")
    labels = v1.placeholder(tf.int64, (None,), name="labels")
    training = v1.placeholder_with_default(False, (), name="training")
    n = x
    for channels, stride in BLOCKS:
        n = v1.layers.conv2d(n, channels, 3, strides=stride, padding="same", use_bias=False)
        n = v1.layers.batch_normalization(n, fused=True, training=training)
        n = tf.nn.relu(n)
    n = tf.reduce_mean(n, axis=[1, 2], name="global_pool")
    logits = tf.identity(v1.layers.dense(n, 10), name="logits")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = v1.train.AdamOptimizer(0.01).minimize(loss)
    saver = v1.train.Saver(v1.global_variables())
    rng = np.random.default_rng(1)
    prefix = os.path.join(outdir, "model.ckpt")
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(steps):
            batch = images(rng, 64, 16)
            target = (batch[..., 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) + 2 * (
                batch[:, :8, :, 1].mean(axis=(1, 2)) > -1
            )
            sess.run(train_op, {x: batch, labels: target, training: True})
        saver.save(sess, prefix)
    return {
        "prefix": prefix,
        "input": "images:0",
        "training": "training:0",
        "output": "logits:0",
        "bn_layers": len(BLOCKS),
        "steps": steps,
    }


def main(argv=None) -> int:
    return run_builder(build, __doc__, argv, first_seed=10)


def run_builder(build_model, doc: str, argv=None, first_seed: int = 10) -> int:
    """The command line of a model builder: OUTDIR [--steps N] [--data NAME:SAMPLES:SIZE ...]; prints JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--data", action="append", default=[], help="NAME:SAMPLES:SIZE")
    args = parser.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    started = time.perf_counter()
    info = build_model(args.outdir, args.steps)
    info["data"] = {}
    for seed, spec in enumerate(args.data, start=first_seed):
        name, samples, size = spec.split(":")
        path = os.path.join(args.outdir, name + ".npy")
        info["data"][name] = {
            "path": path,
            "samples": int(samples),
            "size": int(size),
            "bytes": write_data(path, int(samples), int(size), seed),
        }
    info["build_s"] = time.perf_counter() - started
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
