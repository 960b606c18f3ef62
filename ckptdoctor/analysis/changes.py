"""How far a repair moves each BN layer's statistics: the per-layer rows of a repair report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptdoctor.analysis.diagnose import diagnose_bn

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LayerRepair", "layer_change"]


@dataclass(frozen=True)
class LayerRepair:
    """One BN layer's statistics before and after.

    ``max_mean_shift`` is max |new mean - stored mean| / new std; variance
    ratios are new / stored. ``gap_before``/``gap_after``: the largest difference
    between the layer's inference-mode and training-mode outputs on the first
    batch (None without a training mode to compare with).
    """

    layer: str
    channels: int
    samples: int
    status_before: str
    moving_mean: str
    moving_variance: str
    mean_before: tuple[float, ...] | None
    variance_before: tuple[float, ...] | None
    mean_after: tuple[float, ...]
    variance_after: tuple[float, ...]
    max_mean_shift: float | None
    var_ratio_min: float | None
    var_ratio_max: float | None
    gap_before: float | None = None
    gap_after: float | None = None


def layer_change(
    target, mean: np.ndarray, variance: np.ndarray, samples: int, gap_before: float | None, gap_after: float | None
) -> LayerRepair:
    """The row of one layer (a ``formats.base.Target``) given its new float64 mean and variance."""
    import numpy as np

    mean_b = target.stored.get(target.moving_mean)
    var_b = target.stored.get(target.moving_variance)
    shift = ratio_min = ratio_max = None
    if mean_b is not None:
        sd = np.sqrt(np.maximum(variance, 1e-12))
        shift = float(np.max(np.abs(mean - mean_b.astype(np.float64)) / sd))
    if var_b is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = variance / var_b.astype(np.float64)
        ratio_min, ratio_max = float(np.min(ratio)), float(np.max(ratio))
    spec = {
        "layer": target.name,
        "moving_mean": target.moving_mean,
        "moving_variance": target.moving_variance,
        "gamma": target.gamma,
        "beta": target.beta,
        "channels": target.channels,
    }
    status = diagnose_bn(spec, set(target.stored), target.stored, from_graph=True)[0].status
    return LayerRepair(
        layer=target.name,
        channels=int(target.channels),
        samples=samples,
        status_before=status,
        moving_mean=target.moving_mean,
        moving_variance=target.moving_variance,
        mean_before=None if mean_b is None else tuple(float(v) for v in mean_b),
        variance_before=None if var_b is None else tuple(float(v) for v in var_b),
        mean_after=tuple(float(v) for v in mean),
        variance_after=tuple(float(v) for v in variance),
        max_mean_shift=shift,
        var_ratio_min=ratio_min,
        var_ratio_max=ratio_max,
        gap_before=gap_before,
        gap_after=gap_after,
    )
