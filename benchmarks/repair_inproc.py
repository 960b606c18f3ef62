"""Time ``ckptdoctor.repair`` inside one process, phase by phase.

    python benchmarks/repair_inproc.py PREFIX DATA.npy OUTPUT_PREFIX --batch-size 256 --timings OUT.json

Calls the library (what ``ckptdoctor repair`` calls) after TensorFlow is imported,
and splits the call's time into phases by wrapping some of ``ckptdoctor.pipelines.repair``'s
helpers at run time (the package's files are not touched): the batch loop (from the
first batch requested to the last one finished: the forward passes plus merging),
the data check, graph import and analysis, restore, the inference/training "gap"
passes on the first batch, loading the new statistics into the variables, and
writing the new checkpoint. A helper that no longer
exists is skipped and its phase reported as null.
"""

import argparse
import functools
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_totals: dict = {}


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - start

    return wrapper


def _timed_loop(fn):
    """Wrap a batch generator: time from the first batch requested to exhaustion."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = None
        for item in fn(*args, **kwargs):
            if start is None:
                start = time.perf_counter()
            yield item
        if start is not None:
            _totals["loop_s"] = _totals.get("loop_s", 0.0) + time.perf_counter() - start
            _totals["loops"] = _totals.get("loops", 0) + 1

    return wrapper


def _patch(module, attr: str, make) -> bool:
    """Wrap ``module.attr`` (``attr`` may be ``Class.method``); False when it does not exist."""
    owner = module
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part, None)
    if owner is None or not hasattr(owner, name):
        return False
    setattr(owner, name, make(getattr(owner, name)))
    return True


def _patch_first(module, attrs: list, make) -> bool:
    """Wrap the first of several names a helper has had (the package renames its internals)."""
    return any(_patch(module, attr, make) for attr in attrs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix")
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timings", required=True)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    import tensorflow  # noqa: F401  (imported first, as the CLI's repair does)

    import ckptdoctor.formats.tf1.graph as graph_mod
    import ckptdoctor.pipelines.repair as repairing
    import ckptdoctor.writers.bundle as writer_mod

    t1 = time.perf_counter()
    patched = {
        "loop_s": _patch(repairing, "_batches", _timed_loop),
        "check_data_s": _patch(repairing, "check_data", lambda f: _timed("check_data_s", f)),
        "gaps_s": _patch(repairing, "_gaps", lambda f: _timed("gaps_s", f)),
        "restore_s": _patch_first(repairing, ["_restore", "restore_variables"], lambda f: _timed("restore_s", f)),
        "load_stats_s": _patch_first(
            repairing, ["_load", "_StatLoader.load", "StatLoader.load"], lambda f: _timed("load_stats_s", f)
        ),
        "graph_s": _patch(graph_mod, "load_graph", lambda f: _timed("graph_s", f))
        and _patch(graph_mod, "describe_graph", lambda f: _timed("graph_s", f)),
        "write_s": _patch(writer_mod, "write_checkpoint", lambda f: _timed("write_s", f)),
    }
    result = repairing.repair(args.prefix, args.data, batch_size=args.batch_size, output=args.output, force=True)
    t2 = time.perf_counter()
    timings = {"import_s": t1 - t0, "repair_call_s": t2 - t1, "samples": result.samples, "layers": len(result.layers)}
    for name, ok in patched.items():
        timings[name] = _totals.get(name) if ok else None
    timings["loops"] = _totals.get("loops")
    # The first "loop" is the one-batch generator for the gap passes, never exhausted: not counted.
    with open(args.timings, "w") as f:
        json.dump(timings, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
