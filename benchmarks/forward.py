"""The baseline ``repair`` is timed against: one plain training-mode forward pass over the data.

    python benchmarks/forward.py PREFIX DATA.npy --batch-size 256 [--timings OUT.json]

Imports ``PREFIX.meta``, restores ``PREFIX`` with the graph's own saver, then runs the
network's output (``logits:0``) with ``training:0`` fed True over every batch of the
data (memory-mapped, consecutive batches in file order), exactly the batches a repair
runs. Writes the time of each phase (TensorFlow import, graph import, restore, the
loop) to ``--timings``, so the loop can be compared with repair's own loop.
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
    parser.add_argument("--output", default="logits:0")
    parser.add_argument("--input", default="images:0")
    parser.add_argument("--training", default="training:0")
    parser.add_argument("--timings")
    args = parser.parse_args(argv)
    phases = {}
    t0 = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    t1 = time.perf_counter()
    phases["import_s"] = t1 - t0
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(args.prefix + ".meta")
    t2 = time.perf_counter()
    phases["graph_import_s"] = t2 - t1
    with tf.compat.v1.Session(graph=graph) as sess:
        saver.restore(sess, args.prefix)
        t3 = time.perf_counter()
        phases["restore_s"] = t3 - t2
        x = np.load(args.data, mmap_mode="r")
        inp = graph.get_tensor_by_name(args.input)
        flag = graph.get_tensor_by_name(args.training)
        out = graph.get_tensor_by_name(args.output)
        batches = 0
        for start in range(0, x.shape[0], args.batch_size):
            sess.run(out, {inp: np.asarray(x[start : start + args.batch_size]), flag: True})
            batches += 1
        phases["loop_s"] = time.perf_counter() - t3
    phases["batches"] = batches
    phases["total_s"] = time.perf_counter() - t0
    if args.timings:
        with open(args.timings, "w") as f:
            json.dump(phases, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
