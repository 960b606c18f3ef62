"""ckptdoctor: inspect and repair TensorFlow checkpoints, above all their batch-norm statistics.

Library use::

    import ckptdoctor
    report = ckptdoctor.inspect("models1/model.ckpt")
    report.exit_code, report.findings, report.bn_layers

TensorFlow is imported only by the functions that need a graph or a model to run.
"""

__all__ = ["inspect", "diff", "repair", "read_report", "CkptDoctorError", "__version__"]

from ckptdoctor.constants import VERSION as __version__
from ckptdoctor.errors import CkptDoctorError


def inspect(checkpoint, data=None, **kwargs):
    """Inspect a checkpoint, SavedModel or Keras file (with ``data``: also against data); see
    ``ckptdoctor.pipelines.inspect.inspect``."""
    from ckptdoctor.pipelines.inspect import inspect as _inspect

    return _inspect(checkpoint, data=data, **kwargs)


def diff(a, b, **kwargs):
    """Compare two checkpoints; see ``ckptdoctor.pipelines.diff.diff``."""
    from ckptdoctor.pipelines.diff import diff as _diff

    return _diff(a, b, **kwargs)


def repair(checkpoint, data, **kwargs):
    """Recompute BN moving statistics from data; see ``ckptdoctor.pipelines.repair.repair``."""
    from ckptdoctor.pipelines.repair import repair as _repair

    return _repair(checkpoint, data, **kwargs)


def read_report(path):
    """Read an HDF5 report written by ``inspect --report``; see ``ckptdoctor.reports.hdf5``."""
    from ckptdoctor.reports.hdf5 import read_report as _read

    return _read(path)
