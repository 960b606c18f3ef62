"""The TensorFlow way to get per-tensor statistics: the alternative ``inspect`` is timed against.

    python benchmarks/tf_stats.py CKPT

``tf.train.load_checkpoint``, then for every floating tensor ``get_tensor`` and numpy's
min, max, mean, std, NaN count and Inf count (numpy's defaults: float32 arithmetic
for float32 tensors, where ckptdoctor accumulates in float64 and skips non-finite
values). Prints one JSON line per tensor, as a report would.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(prefix: str) -> int:
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    for name in sorted(dtypes):
        if not dtypes[name].is_floating:
            continue
        a = reader.get_tensor(name)
        row = {
            "name": name,
            "min": float(a.min()),
            "max": float(a.max()),
            "mean": float(a.mean()),
            "std": float(a.std()),
            "nan": int(np.isnan(a).sum()),
            "inf": int(np.isinf(a).sum()),
        }
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
