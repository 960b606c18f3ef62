"""Repair's batch loop against a plain forward loop, in one process and one session.

    python benchmarks/loops_inproc.py PREFIX DATA.npy --batch-size 256 --reps 5 --timings OUT.json

Imports the graph and finds the BN layers the way ``repair`` does, restores the
checkpoint once, then alternates, ``--reps`` times each, two loops over every batch
in training mode:

* forward: fetch the network output (``logits:0``), as ``forward.py`` does;
* repair: fetch repair's per-layer moment ops (``ckptdoctor.formats.tf1.runner._moment_ops``:
  count, mean and M2 of every BN input, merged in float64) and pool them
  (``PooledMoments.add``), over the batches ``ckptdoctor.pipelines.data.batches`` yields,
  exactly the body of repair's loop (``pipelines.measure.measure`` over
  ``GraphRunner.run(batch, bn_training=True, moments=True, outputs=False)``).

Same process, same session, interleaved: TensorFlow import, graph import, restore and
noise between processes do not enter; what remains is the cost of the statistics
themselves. Each loop runs once untimed first (TensorFlow builds an executor per
fetch signature on first use). Uses a private helper of ``ckptdoctor.formats.tf1.runner``.
"""

import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix")
    parser.add_argument("data")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default="logits:0")
    parser.add_argument("--input", default="images:0")
    parser.add_argument("--training", default="training:0")
    parser.add_argument("--timings", required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from ckptdoctor.analysis.estimator import PooledMoments
    from ckptdoctor.formats.tf1.feeding import shape_list
    from ckptdoctor.formats.tf1.graph import describe_graph, load_graph
    from ckptdoctor.formats.tf1.runner import _moment_ops
    from ckptdoctor.pipelines.data import batches
    from ckptdoctor.runtime.base import Input

    meta = args.prefix + ".meta"
    graph, _saver, _meta = load_graph(meta)
    info = describe_graph(graph, meta)
    layers = [layer for layer in info.bn_layers if layer.input_tensor and layer.moving_mean and layer.moving_variance]
    with graph.as_default():
        moment_ops = {
            layer.layer: _moment_ops(tf, graph.get_tensor_by_name(layer.input_tensor), layer.channels, layer.axis)
            for layer in layers
        }
        saver = tf.compat.v1.train.Saver()
    inp = graph.get_tensor_by_name(args.input)
    flag = graph.get_tensor_by_name(args.training)
    out = graph.get_tensor_by_name(args.output)
    x = np.load(args.data, mmap_mode="r")
    n, bs = x.shape[0], args.batch_size
    inputs = [Input(inp.name, x, shape_list(inp), inp.dtype.name)]  # as GraphRunner binds the data

    with tf.compat.v1.Session(graph=graph) as sess:
        saver.restore(sess, args.prefix)

        def forward(limit=None):
            for i, start in enumerate(range(0, n, bs)):
                if limit is not None and i >= limit:
                    break
                sess.run(out, {inp: np.asarray(x[start : start + bs]), flag: True})

        def repair_loop(limit=None):
            pooled = {layer.layer: PooledMoments(layer.channels) for layer in layers}
            for i, batch in enumerate(batches(inputs, n, bs)):
                if limit is not None and i >= limit:
                    break
                for name, (count, mean, m2) in sess.run(moment_ops, {inp: batch[0], flag: True}).items():
                    pooled[name].add(count, mean, m2)

        loops = {"forward": forward, "repair": repair_loop}
        for fn in loops.values():
            fn(limit=2)
        times = {name: [] for name in loops}
        names = list(loops)
        for rep in range(args.reps):
            for name in names[rep % 2 :] + names[: rep % 2]:
                start = time.perf_counter()
                loops[name]()
                times[name].append(time.perf_counter() - start)
    with open(args.timings, "w") as f:
        json.dump({"samples": int(n), "batches": -(-n // bs), "layers": len(layers), "times": times}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
