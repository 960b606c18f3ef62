"""ckptdoctor: inspect and repair TensorFlow checkpoints, above all their batch-norm statistics.

Library use::

    import ckptdoctor
    report = ckptdoctor.inspect("models1/model.ckpt")
    report.exit_code, report.findings, report.bn_layers

TensorFlow is imported only by the functions that need a graph.
"""

__version__ = "0.1.0"

__all__ = ["inspect", "diff", "repair", "read_report", "CkptDoctorError", "__version__"]

from .errors import CkptDoctorError


def inspect(checkpoint, data=None, *, input=None, training=None, feed=(), batch_size=256, max_samples=None,
            unsafe=False, **kwargs):
    """Inspect a checkpoint; see ``ckptdoctor.inspection.inspect``.

    With ``data`` (as for ``repair``), also check the stored BN statistics against
    the data: a dry-run repair computes what they should be, and layers whose stored
    statistics are far off get ``bn-stats-stale`` findings (see ``ckptdoctor.staleness``).
    ``input``, ``training``, ``feed``, ``batch_size``, ``max_samples`` and ``unsafe``
    are passed to that dry run.
    """
    from .inspection import inspect as _inspect

    report = _inspect(checkpoint, **kwargs)
    if data is None:
        return report
    import dataclasses

    from .errors import GraphError, MissingDependencyError, UnsupportedFormatError
    from .repairing import repair as _repair
    from .staleness import with_staleness

    from .data import load_data

    load_data(data)  # bad data fail first (lazy: memory-mapped or sliced, nothing read whole)
    graph = kwargs.get("graph")
    try:
        dry = _repair(checkpoint, data, graph=graph if graph not in (None, True, False) else None, input=input,
                      training=training, feed=feed, batch_size=batch_size, max_samples=max_samples, dry_run=True,
                      unsafe=unsafe)
    except (GraphError, UnsupportedFormatError, MissingDependencyError) as e:
        # The model cannot be run (no graph, an exported SavedModel...): the rest of the report
        # stands, and says the check was not done. Bad data (BadDataError) still fails.
        note = f"BN statistics NOT checked against {data}: {str(e).splitlines()[0]}"
        return dataclasses.replace(report, notes=tuple(report.notes) + (note,))
    return with_staleness(report, dry)


def diff(a, b, **kwargs):
    """Compare two checkpoints; see ``ckptdoctor.diffing.diff``."""
    from .diffing import diff as _diff

    return _diff(a, b, **kwargs)


def repair(checkpoint, data, **kwargs):
    """Recompute BN moving statistics from data; see ``ckptdoctor.repairing.repair``."""
    from .repairing import repair as _repair

    return _repair(checkpoint, data, **kwargs)


def read_report(path):
    """Read an HDF5 report written by ``inspect --report``; see ``ckptdoctor.h5report``."""
    from .h5report import read_report as _read

    return _read(path)
