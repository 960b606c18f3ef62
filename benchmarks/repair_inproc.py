"""Time ``ckptdoctor.repair`` inside one process, phase by phase.

    python benchmarks/repair_inproc.py PREFIX DATA.npy OUTPUT_PREFIX --batch-size 256 --timings OUT.json

Calls the library (what ``ckptdoctor repair`` calls) after TensorFlow is imported,
and splits the call's time into phases by wrapping, at run time, the helpers that do
the work (the package's files are not touched), each where the caller looks it up:

* the batch loop, from the first batch requested to the last one finished: the
  forward passes plus merging, the reference outputs taken in the same runs
  (``pipelines.data.batches`` as ``pipelines.sources.arrays`` calls it, the generator
  ``pipelines.measure.measure`` loops over);
* the data check (``pipelines.data.check_data``, called by ``pipelines.sources.arrays``);
* graph import and analysis (``load_graph`` and ``describe_graph`` as
  ``formats.tf1.runner`` calls them);
* restore (``formats.tf1.runner._restore``);
* the inference-mode "gap" passes, before and after (``pipelines.measure._Reference.gaps``);
* loading the new statistics into the variables (``formats.tf1.runner.GraphRunner.load``;
  not its calls from ``GraphRunner.reset``, which puts the stored statistics back
  before the first gap pass: that is timed as ``reset_s``, outside the known phases);
* writing the new checkpoint (``writers.bundle.write_checkpoint``).

A helper that no longer exists is skipped and its phase reported as null.
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
_paused: set = set()  # phases whose helpers' calls do not count right now


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if name in _paused:
            return fn(*args, **kwargs)
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


def _pausing(phase: str, name: str, fn):
    """Time ``fn`` as ``name``, and let the calls it makes of ``phase``'s helpers not count as ``phase``."""
    timed = _timed(name, fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _paused.add(phase)
        try:
            return timed(*args, **kwargs)
        finally:
            _paused.discard(phase)

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

    import ckptdoctor.formats.tf1.runner as runner_mod
    import ckptdoctor.pipelines.measure as measure_mod
    import ckptdoctor.pipelines.repair as repairing
    import ckptdoctor.writers.bundle as writer_mod

    try:  # the array data's batches and checks, where the data sources look them up
        import ckptdoctor.pipelines.sources.arrays as data_mod
    except ImportError:  # before pipelines.sources, the repair pipeline looked them up
        data_mod = repairing

    t1 = time.perf_counter()
    # Patched where they are looked up at call time: ``runner_mod`` imported ``load_graph`` and
    # ``describe_graph`` by name, so the graph module's own attributes are not what the runner calls.
    patched = {
        "loop_s": _patch_first(data_mod, ["batches", "_batches"], _timed_loop),
        "check_data_s": _patch(data_mod, "check_data", lambda f: _timed("check_data_s", f)),
        "gaps_s": _patch_first(measure_mod, ["_Reference.gaps", "_gaps"], lambda f: _timed("gaps_s", f)),
        "restore_s": _patch_first(runner_mod, ["_restore", "restore_variables"], lambda f: _timed("restore_s", f)),
        "load_stats_s": _patch_first(
            runner_mod, ["GraphRunner.load", "_StatLoader.load"], lambda f: _timed("load_stats_s", f)
        ),
        "reset_s": _patch(runner_mod, "GraphRunner.reset", lambda f: _pausing("load_stats_s", "reset_s", f)),
        "graph_s": _patch(runner_mod, "load_graph", lambda f: _timed("graph_s", f))
        and _patch(runner_mod, "describe_graph", lambda f: _timed("graph_s", f)),
        "write_s": _patch(writer_mod, "write_checkpoint", lambda f: _timed("write_s", f)),
    }
    result = repairing.repair(args.prefix, args.data, batch_size=args.batch_size, output=args.output, force=True)
    t2 = time.perf_counter()
    timings = {"import_s": t1 - t0, "repair_call_s": t2 - t1, "samples": result.samples, "layers": len(result.layers)}
    for name, ok in patched.items():
        timings[name] = _totals.get(name) if ok else None
    # Passes over the data: 1 with --method train (the reference is taken in the same runs).
    timings["loops"] = _totals.get("loops")
    with open(args.timings, "w") as f:
        json.dump(timings, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
