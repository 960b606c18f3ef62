"""The baseline the Keras repair is timed against: load the .keras, one training-mode forward pass.

    python benchmarks/keras_forward.py MODEL.keras DATA.npy --batch-size 256 [--timings OUT.json] [--save OUT.keras]

What a user recalibrating by hand would write, minus bookkeeping:
``keras.saving.load_model(path, compile=False)``, then ``model(batch, training=True)``
over every batch of the data (memory-mapped, consecutive batches in file order,
exactly the batches a repair runs). Nothing is written unless ``--save`` names a file: then the model
is saved there afterwards (``model.save``), as a user writing the recalibrated model would.
``--timings`` gets the time of each phase (imports, load, loop, save).
"""

import argparse
import json
import os
import sys
import time

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timings")
    parser.add_argument("--save")
    args = parser.parse_args(argv)
    phases = {}
    t0 = time.perf_counter()
    import keras
    import numpy as np

    t1 = time.perf_counter()
    phases["import_s"] = t1 - t0
    model = keras.saving.load_model(args.model, compile=False)
    t2 = time.perf_counter()
    phases["load_s"] = t2 - t1
    x = np.load(args.data, mmap_mode="r")
    batches = 0
    for start in range(0, x.shape[0], args.batch_size):
        model(np.asarray(x[start : start + args.batch_size]), training=True)
        batches += 1
    t3 = time.perf_counter()
    phases["loop_s"] = t3 - t2
    phases["batches"] = batches
    if args.save:
        model.save(args.save)
        phases["save_s"] = time.perf_counter() - t3
    phases["total_s"] = time.perf_counter() - t0
    if args.timings:
        with open(args.timings, "w") as f:
            json.dump(phases, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
