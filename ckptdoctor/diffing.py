"""``diff``: which tensors two checkpoints do not share, and which differ in dtype, shape or value."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .readers import open_reader
from .resolve import resolve_checkpoint

__all__ = ["TensorDiff", "DiffReport", "diff"]


@dataclass(frozen=True)
class TensorDiff:
    """A tensor present in both checkpoints that differs.

    ``what`` is ``dtype``, ``shape`` or ``value``; the differences are None unless
    values were compared (numeric tensors of equal dtype and shape). NaN equals NaN
    in the same place.
    """

    name: str
    what: str
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None


@dataclass(frozen=True)
class DiffReport:
    """The result of ``diff``: ``exit_code`` 0 when identical, 1 when not."""

    a: str
    b: str
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    changed: tuple[TensorDiff, ...]
    compared: int

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.changed)

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1

    def to_dict(self) -> dict:
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b),
            "changed": [dict(asdict(c), shape_a=list(c.shape_a), shape_b=list(c.shape_b)) for c in self.changed],
            "compared": self.compared,
        }


def _value_diff(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(max abs, max rel) difference, or None when equal; NaNs in the same places are equal."""
    if x.dtype.kind in "OSU" or y.dtype.kind in "OSU":
        return None if np.array_equal(x, y) else (float("nan"), float("nan"))
    if x.dtype.kind not in "fciub":
        x, y = x.astype(np.float64), y.astype(np.float64)
    if x.tobytes() == y.tobytes():
        return None
    xf, yf = x.astype(np.complex128 if x.dtype.kind == "c" else np.float64), y.astype(
        np.complex128 if y.dtype.kind == "c" else np.float64)
    both_nan = np.isnan(xf) & np.isnan(yf)
    if (np.isnan(xf) != np.isnan(yf)).any():
        return float("inf"), float("inf")
    d = np.where(both_nan, 0, np.abs(xf - yf))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(d == 0, 0.0, d / np.maximum(np.abs(xf), np.abs(yf)))
    max_abs = float(np.nanmax(d)) if d.size else 0.0
    if max_abs == 0:
        return None
    return max_abs, float(np.nanmax(rel))


def diff(a: str, b: str) -> DiffReport:
    """Compare two checkpoints tensor by tensor (one pair of tensors in memory at a time)."""
    ra, rb = resolve_checkpoint(a), resolve_checkpoint(b)
    reader_a = open_reader(ra)
    try:
        reader_b = open_reader(rb)
        try:
            ea = {e.name: e for e in reader_a.entries()}
            eb = {e.name: e for e in reader_b.entries()}
            changed = []
            both = sorted(set(ea) & set(eb))
            for name in both:
                x, y = ea[name], eb[name]
                if x.dtype != y.dtype:
                    changed.append(TensorDiff(name, "dtype", x.dtype, y.dtype, x.shape, y.shape))
                elif tuple(x.shape) != tuple(y.shape):
                    changed.append(TensorDiff(name, "shape", x.dtype, y.dtype, x.shape, y.shape))
                elif x.dtype != "variant":
                    d = _value_diff(reader_a.read(name), reader_b.read(name))
                    if d is not None:
                        changed.append(TensorDiff(name, "value", x.dtype, y.dtype, x.shape, y.shape, *d))
            return DiffReport(ra.prefix, rb.prefix, tuple(sorted(set(ea) - set(eb))),
                              tuple(sorted(set(eb) - set(ea))), tuple(changed), len(both))
        finally:
            reader_b.close()
    finally:
        reader_a.close()
