"""Write the TF2 checkpoints the reader benchmarks read, with TensorFlow itself (eager).

    python benchmarks/build_ckpts.py SPEC.json

SPEC.json is a list of ``{"prefix": P, "small": N, "small_shape": [..], "big_rows": R}``:
N float32 variables of ``small_shape`` plus, when R > 0, one float32 variable of
shape ``(R, 16384)`` (R = 16384 is 1 GiB). Values are standard normal (seeded), so
nothing compresses and every statistic is non-trivial. Each checkpoint is written by
``tf.train.Checkpoint(...).write(P)``: a V2 bundle with a TF2 object graph, as
``model.save_weights`` and ``tf.train.Checkpoint`` produce. One process builds all,
so TensorFlow is imported once.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BIG_COLUMNS = 16384


def build(tf, prefix: str, small: int, small_shape, big_rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    variables = {}
    for i in range(small):
        variables[f"w{i:05d}"] = tf.Variable(rng.standard_normal(tuple(small_shape), dtype=np.float32))
    if big_rows:
        big = np.empty((big_rows, BIG_COLUMNS), np.float32)
        for r in range(0, big_rows, 1024):  # bounded temporaries
            big[r : r + 1024] = rng.standard_normal((min(1024, big_rows - r), BIG_COLUMNS), dtype=np.float32)
        variables["big"] = tf.Variable(big)
        del big
    started = time.perf_counter()
    tf.train.Checkpoint(**variables).write(prefix)
    written = time.perf_counter() - started
    files = [prefix + ".index"] + [
        os.path.join(os.path.dirname(prefix), f)
        for f in os.listdir(os.path.dirname(prefix) or ".")
        if f.startswith(os.path.basename(prefix) + ".data-")
    ]
    return {
        "prefix": prefix,
        "tensors": small + (1 if big_rows else 0),
        "bytes": sum(os.path.getsize(f) for f in files),
        "write_s": written,
    }


def main(spec_path: str) -> int:
    import tensorflow as tf

    with open(spec_path) as f:
        spec = json.load(f)
    out = []
    for item in spec:
        os.makedirs(os.path.dirname(item["prefix"]), exist_ok=True)
        out.append(build(tf, item["prefix"], item["small"], item["small_shape"], item["big_rows"]))
        print(
            f"built {item['prefix']}: {out[-1]['tensors']} tensors, {out[-1]['bytes'] / 2**30:.2f} GiB", file=sys.stderr
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
