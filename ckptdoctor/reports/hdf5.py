"""The HDF5 form of an inspect report, written and read back with h5py.

Layout: root attributes ``ckptdoctor_version``, ``checkpoint``, ``format``,
``graph``, ``created`` (ISO 8601, UTC), plus ``resolved_from``, ``notes`` and
``summary`` (JSON strings), ``total_tensors``/``total_bytes`` and ``match`` (the
``--match`` pattern, "" for none: older files lack it); compound
datasets ``/tensors``, ``/bn_layers`` and ``/findings`` with the JSON fields as
columns. Strings are UTF-8; ``shape`` is a JSON string; NaN stands where a
number does not apply; ``in_graph`` is 1/0/-1 (-1: no graph checked). Empty
tables are present with zero rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ckptdoctor.analysis.diagnose import BNLayerStatus, Finding
from ckptdoctor.errors import CkptDoctorError, OutputExistsError
from ckptdoctor.reports.results import InspectReport, TensorReport
from ckptdoctor.writers.atomic import atomic_output

__all__ = ["write_report", "read_report", "REPORT_KIND"]

REPORT_KIND = "ckptdoctor-inspect"


def _str_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def _opt(value: float):
    return None if math.isnan(value) else value


def _opt_int(value: float):
    return None if math.isnan(value) else int(value)


#: Rows written (and read back to verify) at a time: memory stays flat in the number of tensors.
BLOCK_ROWS = 4096


def _tensor_fields(s) -> list:
    return [
        ("name", s),
        ("dtype", s),
        ("shape", s),
        ("size", "<i8"),
        ("nbytes", "<i8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("mean", "<f8"),
        ("std", "<f8"),
        ("nan", "<f8"),
        ("inf", "<f8"),
        ("in_graph", "i1"),
        ("role", s),
        ("object_path", s),
    ]


def _tensor_cells(t: TensorReport) -> tuple:
    return (
        t.name,
        t.dtype,
        json.dumps(list(t.shape)),
        t.size,
        t.nbytes,
        _nan(t.min),
        _nan(t.max),
        _nan(t.mean),
        _nan(t.std),
        _nan(t.nan),
        _nan(t.inf),
        -1 if t.in_graph is None else int(t.in_graph),
        t.role,
        t.object_path or "",
    )


def _bn_fields(s) -> list:
    return [
        ("layer", s),
        ("moving_mean", s),
        ("moving_variance", s),
        ("gamma", s),
        ("beta", s),
        ("channels", "<f8"),
        ("status", s),
    ]


def _bn_cells(b: BNLayerStatus) -> tuple:
    return (
        b.layer,
        b.moving_mean or "",
        b.moving_variance or "",
        b.gamma or "",
        b.beta or "",
        _nan(b.channels),
        b.status,
    )


def _finding_fields(s) -> list:
    return [("code", s), ("severity", s), ("layer", s), ("tensor", s), ("message", s)]


def _finding_cells(x: Finding) -> tuple:
    return (x.code, x.severity, x.layer or "", x.tensor or "", x.message)


def _table(group, name, fields, items, cells) -> None:
    """``/name``: one row per item (``cells(item)``), written ``BLOCK_ROWS`` at a time into a chunked dataset."""
    dtype = np.dtype([(f, t) for f, t in fields])
    ds = group.create_dataset(name, shape=(len(items),), dtype=dtype, maxshape=(None,), chunks=(BLOCK_ROWS,))
    for start in range(0, len(items), BLOCK_ROWS):
        part = items[start : start + BLOCK_ROWS]
        block = np.zeros(len(part), dtype=dtype)
        for i, item in enumerate(part):
            block[i] = cells(item)
        ds[start : start + len(part)] = block


def write_report(report: InspectReport, path: str, force: bool = False) -> str:
    """Write ``report`` to ``path`` (atomically); refuse to overwrite unless ``force``.

    The tables are written and verified ``BLOCK_ROWS`` rows at a time: beyond the report itself,
    memory does not grow with the number of tensors.

    Returns:
        The path written.
    """
    import h5py

    from ckptdoctor.constants import VERSION as __version__

    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists: pass --force to overwrite it, or choose another --report path")
    s = _str_dtype()
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["ckptdoctor_version"] = __version__
            f.attrs["kind"] = REPORT_KIND
            f.attrs["checkpoint"] = report.checkpoint
            f.attrs["format"] = report.format
            f.attrs["graph"] = report.graph or ""
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["resolved_from"] = report.resolved_from
            f.attrs["notes"] = json.dumps(list(report.notes))
            f.attrs["summary"] = json.dumps(report.summary)
            f.attrs["total_tensors"] = report.total_tensors
            f.attrs["total_bytes"] = report.total_bytes
            f.attrs["match"] = report.match or ""
            _table(f, "tensors", _tensor_fields(s), report.tensors, _tensor_cells)
            _table(f, "bn_layers", _bn_fields(s), report.bn_layers, _bn_cells)
            _table(f, "findings", _finding_fields(s), report.findings, _finding_cells)
        _check_written(tmp, report)
    return path


def _check_written(tmp: str, report: InspectReport) -> None:
    """Read ``tmp`` back as ``read_report`` does, table by table and block by block, and compare with ``report``."""
    wrong = CkptDoctorError(f"the report written to {tmp} does not read back equal; nothing was kept")
    with _opened(tmp) as (f, raw):
        back = _head(tmp, f, raw)
        if back.to_dict() != dataclasses.replace(report, tensors=(), bn_layers=(), findings=()).to_dict():
            raise wrong
        if back.match != report.match:
            raise wrong
        tables: tuple[tuple[str, Any, Any, Any], ...] = (
            ("tensors", report.tensors, _tensor_of, _tensor_cells),
            ("bn_layers", report.bn_layers, _bn_of, _bn_cells),
            ("findings", report.findings, _finding_of, _finding_cells),
        )
        for name, rows, of, cells in tables:
            count = 0
            for got, want in zip(_iter_rows(tmp, f, raw, name, of), rows):
                if cells(got) != cells(want):
                    raise wrong
                count += 1
            if count != len(rows) or f[name].shape != (len(rows),):
                raise wrong


def _s(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_report(path: str) -> InspectReport:
    """Read a report written by ``write_report``.

    Raises:
        CkptDoctorError: the file is missing, not HDF5, or not a ckptdoctor report.
    """
    with _opened(path) as (f, raw):
        head = _head(path, f, raw)
        return dataclasses.replace(
            head,
            tensors=tuple(_iter_rows(path, f, raw, "tensors", _tensor_of)),
            bn_layers=tuple(_iter_rows(path, f, raw, "bn_layers", _bn_of)),
            findings=tuple(_iter_rows(path, f, raw, "findings", _finding_of)),
        )


_READ_ERRORS = (KeyError, ValueError, TypeError, OSError, AttributeError, IndexError, RuntimeError)


def _damaged(path: str, e: Exception) -> CkptDoctorError:
    return CkptDoctorError(f"{path} is a damaged ckptdoctor report ({e}): write it again with --report")


@contextlib.contextmanager
def _opened(path: str):
    """``(h5py file, RawHDF5)`` of a file that is HDF5 and says it is an inspect report."""
    import h5py

    if not os.path.isfile(path):
        raise CkptDoctorError(f"no report at {path}: pass a file written by `ckptdoctor inspect --report`")
    from ckptdoctor.readers.hdf5_raw import RawHDF5

    try:
        raw = RawHDF5.open(path)
        if raw.problem:
            raw.close()
            raise OSError(raw.problem)
        f = h5py.File(path, "r")
    except OSError as e:
        raise CkptDoctorError(
            f"{path} is not an HDF5 file ({e}): pass a file written by `ckptdoctor inspect --report`"
        ) from e
    with f, contextlib.closing(raw):
        attrs = _CheckedAttrs(f, raw)
        try:
            kind = _s(attrs.get("kind", ""))
        except _READ_ERRORS as e:
            raise _damaged(path, e) from e
        if kind != REPORT_KIND or not all(k in f for k in ("tensors", "bn_layers", "findings")):
            raise CkptDoctorError(
                f"{path} is HDF5 but not a ckptdoctor inspect report (no kind={REPORT_KIND} attribute)"
            )
        yield f, raw


def _head(path: str, f, raw) -> InspectReport:
    """The report's root attributes, as an ``InspectReport`` with empty tables."""
    from ckptdoctor.readers.limits import load_json

    attrs = _CheckedAttrs(f, raw)
    try:
        return InspectReport(
            checkpoint=_s(attrs["checkpoint"]),
            format=_s(attrs["format"]),
            graph=_s(attrs["graph"]) or None,
            tensors=(),
            bn_layers=(),
            findings=(),
            notes=tuple(load_json(_s(attrs["notes"]), "its notes")),
            resolved_from=_s(attrs["resolved_from"]),
            total_tensors=int(attrs["total_tensors"]),
            total_bytes=int(attrs["total_bytes"]),
            summary=load_json(_s(attrs["summary"]), "its summary"),
            match=_s(attrs.get("match", "")) or None,
        )
    except _READ_ERRORS as e:
        raise _damaged(path, e) from e


def _tensor_of(r) -> TensorReport:
    from ckptdoctor.readers.limits import load_json

    return TensorReport(
        name=_s(r["name"]),
        dtype=_s(r["dtype"]),
        shape=tuple(load_json(_s(r["shape"]), "a tensor's shape")),
        size=int(r["size"]),
        nbytes=int(r["nbytes"]),
        min=_opt(r["min"]),
        max=_opt(r["max"]),
        mean=_opt(r["mean"]),
        std=_opt(r["std"]),
        nan=_opt_int(r["nan"]),
        inf=_opt_int(r["inf"]),
        in_graph=None if r["in_graph"] < 0 else bool(r["in_graph"]),
        role=_s(r["role"]),
        object_path=_s(r["object_path"]) or None,
    )


def _bn_of(r) -> BNLayerStatus:
    return BNLayerStatus(
        layer=_s(r["layer"]),
        moving_mean=_s(r["moving_mean"]) or None,
        moving_variance=_s(r["moving_variance"]) or None,
        gamma=_s(r["gamma"]) or None,
        beta=_s(r["beta"]) or None,
        channels=_opt_int(r["channels"]),
        status=_s(r["status"]),
    )


def _finding_of(r) -> Finding:
    return Finding(
        code=_s(r["code"]),
        severity=_s(r["severity"]),
        layer=_s(r["layer"]) or None,
        tensor=_s(r["tensor"]) or None,
        message=_s(r["message"]),
    )


class _CheckedAttrs:
    """A report's root attributes, each size-checked (and its strings checked against the heaps) before it is read."""

    def __init__(self, f, raw):
        self._f, self._raw = f, raw

    def __getitem__(self, name: str):
        from ckptdoctor.readers.limits import read_hdf5_attr

        return read_hdf5_attr(self._f, name, self._raw)

    def get(self, name: str, default):
        return self[name] if name in self._f.attrs else default


def _iter_rows(path: str, f, raw, name: str, of):
    """A report table's rows as objects (``of(row)``), ``BLOCK_ROWS`` at a time, after checking that the
    file stores the rows it declares (and its strings)."""
    from ckptdoctor.readers.limits import hdf5_storage_problem

    try:
        ds = f[name]
        problem = hdf5_storage_problem(ds) or raw.dataset_problem(ds, f"/{name}")
        if problem is not None:
            raise ValueError(f"its /{name} {problem}")
        if len(ds.shape) != 1:
            raise ValueError(f"its /{name} is not a table (shape {ds.shape})")
        count = ds.shape[0]
        for start in range(0, count, BLOCK_ROWS):
            for r in ds[start : start + BLOCK_ROWS]:
                yield of(r)
    except _READ_ERRORS as e:
        raise _damaged(path, e) from e


REPAIR_KIND = "ckptdoctor-repair"


def write_repair_report(report, path: str, force: bool = False) -> str:
    """Write a repair's per-layer before/after arrays and the run's parameters to HDF5.

    Layout: root attributes (``kind``, ``ckptdoctor_version``, ``created``, and every
    scalar parameter of the run); one group per BN layer under ``/layers`` with
    datasets ``mean_before``, ``variance_before`` (absent when not stored),
    ``mean_after``, ``variance_after`` (float64) and attributes ``samples``,
    ``status_before``, ``moving_mean``, ``moving_variance``, ``gap_before``, ``gap_after``.
    """
    import h5py

    from ckptdoctor.constants import VERSION as __version__

    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists: pass --force to overwrite it, or choose another --report path")
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["kind"] = REPAIR_KIND
        f.attrs["ckptdoctor_version"] = __version__
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key in (
            "checkpoint",
            "graph",
            "data",
            "training_flag",
            "method",
            "batch_size",
            "samples",
            "output",
            "backup",
            "dry_run",
            "untouched",
            "updated",
        ):
            value = getattr(report, key)
            f.attrs[key] = "" if value is None else value
        f.attrs["inputs"] = json.dumps(list(report.inputs))
        group = f.create_group("layers")
        for layer in report.layers:
            g = group.create_group(layer.layer.replace("/", "|"))
            g.attrs["layer"] = layer.layer
            for key in ("samples", "status_before", "moving_mean", "moving_variance", "channels"):
                g.attrs[key] = getattr(layer, key)
            for key in ("gap_before", "gap_after", "max_mean_shift", "var_ratio_min", "var_ratio_max"):
                g.attrs[key] = _nan(getattr(layer, key))
            for key in ("mean_before", "variance_before", "mean_after", "variance_after"):
                value = getattr(layer, key)
                if value is not None:
                    g.create_dataset(key, data=np.asarray(value, np.float64))
    return path
