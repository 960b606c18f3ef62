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


def inspect(checkpoint, **kwargs):
    """Inspect a checkpoint; see ``ckptdoctor.inspection.inspect``."""
    from .inspection import inspect as _inspect

    return _inspect(checkpoint, **kwargs)


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
