"""``diff``: which tensors two checkpoints do not share, and which differ in dtype, shape or value.

Both sides may be any checkpoint ``inspect`` reads: a TF1/TF2 checkpoint or SavedModel
directory, or a Keras file (``.keras``, ``.weights.h5``, legacy ``.h5``). Keras tensors
are matched by their HDF5 path, where a legacy full model's ``model_weights/`` prefix
is ignored, so a full ``.h5`` compares with the ``save_weights`` file of the same model;
reports name each tensor as side a stores it (side b for tensors only in b).
When both sides carry a model config, a different config makes the files differ too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ckptdoctor.formats import open_model

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
    #: True/False when both sides carry a Keras model config; None otherwise.
    config_changed: bool | None = None
    notes: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.changed or self.config_changed)

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "only_in_a": list(self.only_in_a),
            "only_in_b": list(self.only_in_b),
            "changed": [dict(asdict(c), shape_a=list(c.shape_a), shape_b=list(c.shape_b)) for c in self.changed],
            "compared": self.compared,
            "config_changed": self.config_changed,
            "notes": list(self.notes),
        }


def _value_diff(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(max abs, max rel) difference, or None when equal; NaNs in the same places are equal."""
    if x.dtype.kind in "OSU" or y.dtype.kind in "OSU":
        return None if np.array_equal(x, y) else (float("nan"), float("nan"))
    if x.dtype.kind not in "fciub":
        x, y = x.astype(np.float64), y.astype(np.float64)
    if x.tobytes() == y.tobytes():
        return None
    xf, yf = (
        x.astype(np.complex128 if x.dtype.kind == "c" else np.float64),
        y.astype(np.complex128 if y.dtype.kind == "c" else np.float64),
    )
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


def _entries(model) -> dict:
    """Each tensor under the name it is matched by (``comparable_name``)."""
    return {model.comparable_name(e.name): e for e in model.reader.entries()}


def _layout_note(a, b) -> list[str]:
    if a.family != b.family:
        return ["one side is a Keras file and the other a TensorFlow checkpoint: their tensor names do not match"]
    if a.family == "keras" and a.reader.layout != b.reader.layout:
        return [
            f"the Keras files use different weight layouts ({a.reader.layout} and {b.reader.layout}): tensor "
            "names do not match; save both with the same Keras"
        ]
    return []


def diff(a: str, b: str) -> DiffReport:
    """Compare two checkpoints or Keras files tensor by tensor (one pair of tensors in memory at a time)."""
    side_a = open_model(a, graph=False)
    try:
        side_b = open_model(b, graph=False)
        try:
            return _compare(side_a, side_b)
        finally:
            side_b.close()
    finally:
        side_a.close()


def _compare(side_a, side_b) -> DiffReport:
    ea, eb = _entries(side_a), _entries(side_b)
    changed = []
    both = sorted(set(ea) & set(eb))
    for name in both:
        x, y = ea[name], eb[name]
        if x.dtype != y.dtype:
            changed.append(TensorDiff(x.name, "dtype", x.dtype, y.dtype, x.shape, y.shape))
        elif tuple(x.shape) != tuple(y.shape):
            changed.append(TensorDiff(x.name, "shape", x.dtype, y.dtype, x.shape, y.shape))
        elif x.dtype != "variant":
            d = _value_diff(side_a.reader.read(x.name), side_b.reader.read(y.name))
            if d is not None:
                changed.append(TensorDiff(x.name, "value", x.dtype, y.dtype, x.shape, y.shape, *d))
    config_changed = None
    if side_a.config and side_b.config:
        config_changed = side_a.config != side_b.config
    # Names as each side stores them (a legacy full model keeps its model_weights/ prefix).
    return DiffReport(
        side_a.path,
        side_b.path,
        tuple(sorted(ea[k].name for k in set(ea) - set(eb))),
        tuple(sorted(eb[k].name for k in set(eb) - set(ea))),
        tuple(changed),
        len(both),
        config_changed=config_changed,
        notes=tuple(_layout_note(side_a, side_b)),
    )
