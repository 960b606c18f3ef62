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

from os import fspath as os_fspath

import numpy as np

from .constants import KERAS_LEGACY_WEIGHTS_ROOT
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
            "a": self.a, "b": self.b, "identical": self.identical,
            "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b),
            "changed": [dict(asdict(c), shape_a=list(c.shape_a), shape_b=list(c.shape_b)) for c in self.changed],
            "compared": self.compared, "config_changed": self.config_changed, "notes": list(self.notes),
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


class _Side:
    """One side of a diff: its reader, the label shown, and how its names are matched."""

    def __init__(self, path: str):
        from .keras_inspect import is_keras_file, open_keras_reader

        path = os_fspath(path)
        self.keras = is_keras_file(path)
        if self.keras:
            self.reader = open_keras_reader(path)
            self.label = path
            self.config = self.reader.model_config
            self.layout = self.reader.layout
        else:
            resolved = resolve_checkpoint(path)
            self.reader = open_reader(resolved)
            self.label = resolved.prefix
            self.config = None
            self.layout = None
        try:
            self.entries = {self._key(e.name): e for e in self.reader.entries()}
        except Exception:
            self.reader.close()
            raise

    def _key(self, name: str) -> str:
        if self.layout == "legacy" and name.startswith(KERAS_LEGACY_WEIGHTS_ROOT):
            return name[len(KERAS_LEGACY_WEIGHTS_ROOT):]
        return name

    def read(self, key: str):
        return self.reader.read(self.entries[key].name)


def _layout_note(sa: _Side, sb: _Side) -> list[str]:
    if sa.keras != sb.keras:
        return ["one side is a Keras file and the other a TensorFlow checkpoint: their tensor names do not match"]
    if sa.keras and sa.layout != sb.layout:
        return [f"the Keras files use different weight layouts ({sa.layout} and {sb.layout}): tensor names "
                "do not match; save both with the same Keras"]
    return []


def diff(a: str, b: str) -> DiffReport:
    """Compare two checkpoints or Keras files tensor by tensor (one pair of tensors in memory at a time)."""
    side_a = _Side(a)
    try:
        side_b = _Side(b)
        try:
            ea, eb = side_a.entries, side_b.entries
            changed = []
            both = sorted(set(ea) & set(eb))
            for name in both:
                x, y = ea[name], eb[name]
                if x.dtype != y.dtype:
                    changed.append(TensorDiff(x.name, "dtype", x.dtype, y.dtype, x.shape, y.shape))
                elif tuple(x.shape) != tuple(y.shape):
                    changed.append(TensorDiff(x.name, "shape", x.dtype, y.dtype, x.shape, y.shape))
                elif x.dtype != "variant":
                    d = _value_diff(side_a.read(name), side_b.read(name))
                    if d is not None:
                        changed.append(TensorDiff(x.name, "value", x.dtype, y.dtype, x.shape, y.shape, *d))
            config_changed = None
            if side_a.config and side_b.config:
                config_changed = side_a.config != side_b.config
            # Names as each side stores them (a legacy full model keeps its model_weights/ prefix).
            return DiffReport(side_a.label, side_b.label, tuple(sorted(ea[k].name for k in set(ea) - set(eb))),
                              tuple(sorted(eb[k].name for k in set(eb) - set(ea))), tuple(changed), len(both),
                              config_changed=config_changed, notes=tuple(_layout_note(side_a, side_b)))
        finally:
            side_b.reader.close()
    finally:
        side_a.reader.close()
