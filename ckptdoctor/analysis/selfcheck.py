"""Repair checks its own result before it writes anything.

The target of a repair is a network whose inference-mode outputs equal its outputs
with the BN layers in training mode and *nothing else* in training mode (dropout,
noise and stochastic-depth layers off): the *reference*. On the first batch, each
repair measures the final output's gap to the reference twice, with the stored
statistics (``before``) and with the new ones (``after``), in memory only:

    gap = max |inference output - reference output| / max |reference output|

(over every element of every model output, on the first batches: whole batches
until 512 samples or 4 batches; ``scale`` is the denominator, so gaps are relative
to the size of the outputs). The reference of each batch is that batch's own
BN-training output, so with several batches even exact population statistics leave
a gap (the batches' spread around the population); what matters is that it shrinks.

A repair that does not shrink the gap is refused: nothing is written, the report
carries a ``repair-not-improved`` finding with both numbers, and the CLI exits 1.
The one exception is a model that is already consistent: when both gaps are below
``NOISE_FLOOR`` (float32 round-off of a deep network), the new statistics are kept.

This module computes and judges; it runs nothing. The runners (graph, Keras) give it
the outputs they computed; ``checked_batches`` says how many batches they compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptdoctor.analysis.diagnose import Finding

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "NOT_IMPROVED",
    "NOISE_FLOOR",
    "OutputCheck",
    "checked_batches",
    "CHECKED_SAMPLES",
    "CHECKED_MAX_BATCHES",
    "largest_gap",
    "output_scale",
    "judge",
    "refusal",
    "verdict",
]

#: The finding code of a refused repair (stable).
NOT_IMPROVED = "repair-not-improved"
#: Relative gaps below this are round-off, not a difference between the two modes.
NOISE_FLOOR = 1e-5


@dataclass(frozen=True)
class OutputCheck:
    """The final output's inference-vs-reference gap, before and after the new statistics.

    Attributes:
        outputs: the outputs compared (tensor names, or ``model output`` for a Keras model).
        samples: how many samples were compared (the first batches).
        scale: the largest |reference output|: gaps are divided by it.
        gap_before: relative gap with the stored statistics.
        gap_after: relative gap with the new statistics.
        grown: BN layers whose own inference-vs-reference gap grew.
        improved: the repair shrank the gap (or both gaps are round-off).
    """

    outputs: tuple[str, ...]
    samples: int
    scale: float
    gap_before: float
    gap_after: float
    grown: tuple[str, ...]
    improved: bool


#: The output check compares whole leading batches until this many samples, and at most this many batches.
CHECKED_SAMPLES = 512
CHECKED_MAX_BATCHES = 4


def checked_batches(n: int, batch_size: int) -> int:
    """How many leading batches the output check compares: whole batches until 512 samples, at most 4."""
    batches = -(-n // batch_size)
    return max(1, min(batches, CHECKED_MAX_BATCHES, -(-CHECKED_SAMPLES // batch_size)))


def _flat(values) -> list[np.ndarray]:
    import numpy as np

    if isinstance(values, dict):
        return [np.asarray(values[k]) for k in sorted(values)]
    if isinstance(values, (list, tuple)):
        return [a for v in values for a in _flat(v)]
    return [np.asarray(values)]


def largest_gap(outputs, reference) -> float:
    """Largest |a - b| over every element of every output (nested lists and dicts of arrays)."""
    return max((_gap(a, b) for a, b in zip(_flat(outputs), _flat(reference))), default=0.0)


#: Elements per block when two large outputs are compared: the float64 difference stays in the cache.
_GAP_BLOCK = 1 << 16


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| in float64 (NaN if any difference is NaN); large arrays of one shape block by block."""
    import numpy as np

    if not a.size:
        return 0.0
    if a.shape != b.shape or a.size <= _GAP_BLOCK:
        d = np.subtract(a, b, dtype=np.float64)  # one float64 temporary, made absolute in place
        np.abs(d, out=d)
        return float(d.max())
    a, b = a.reshape(-1), b.reshape(-1)
    buf = np.empty(_GAP_BLOCK)
    largest = 0.0
    for start in range(0, a.size, _GAP_BLOCK):
        d = buf[: min(_GAP_BLOCK, a.size - start)]
        np.subtract(a[start : start + _GAP_BLOCK], b[start : start + _GAP_BLOCK], out=d, dtype=np.float64)
        np.abs(d, out=d)
        block = float(d.max())
        if block != block:  # NaN: no later block can make the gap smaller
            return block
        largest = max(largest, block)
    return largest


def output_scale(reference) -> float:
    """Largest |reference output| (1.0 for an all-zero output, so gaps stay absolute there)."""
    import numpy as np

    scale = max((float(np.max(np.abs(a.astype(np.float64)))) for a in _flat(reference) if a.size), default=0.0)
    return scale if scale > 0 and np.isfinite(scale) else 1.0


def judge(
    outputs: tuple[str, ...],
    samples: int,
    scale: float,
    gap_before: float,
    gap_after: float,
    layer_gaps_before: dict,
    layer_gaps_after: dict,
) -> OutputCheck:
    """The verdict on one repair from its absolute output gaps and its per-layer gaps."""
    import numpy as np

    before, after = gap_before / scale, gap_after / scale
    grown = tuple(
        name
        for name, gap in layer_gaps_after.items()
        if name in layer_gaps_before and gap > layer_gaps_before[name] * (1 + 1e-6) + 1e-12
    )
    improved = bool(after < before or max(before, after) <= NOISE_FLOOR)
    if not np.isfinite(after):
        improved = False
    return OutputCheck(
        outputs=tuple(outputs),
        samples=int(samples),
        scale=float(scale),
        gap_before=float(before),
        gap_after=float(after),
        grown=grown,
        improved=improved,
    )


def verdict(check: OutputCheck | None, held: tuple[str, ...] = ()) -> tuple[bool, tuple[Finding, ...]]:
    """``(refused, findings)``: a repair whose output check did not improve is refused (no check, no refusal)."""
    if check is None or check.improved:
        return False, ()
    return True, (refusal(check, held),)


def refusal(check: OutputCheck, held: tuple[str, ...] = ()) -> Finding:
    """The ``repair-not-improved`` finding of a refused repair: both numbers and the likely cause."""
    import numpy as np

    grown = (
        f"; layers whose own gap grew: {', '.join(check.grown[:6])}{' ...' if len(check.grown) > 6 else ''}"
        if check.grown
        else ""
    )
    if not np.isfinite(check.gap_after):
        cause = "the new statistics make the outputs non-finite (overflow in a low-precision layer?)"
    elif check.gap_after <= check.gap_before * 1.05:
        cause = (
            "the stored statistics are already about as good as new ones for these data: nothing to repair "
            "(the remaining gap is the batches' own spread; a larger --batch-size shrinks it)"
        )
    elif held:
        cause = (
            "likely cause: a layer held in inference mode behaves differently from training in a way the BN "
            "statistics cannot absorb, or the data are not from the training distribution"
        )
    else:
        cause = (
            "likely cause: the data are not from the training distribution, or too few samples per batch "
            "(try a larger --batch-size)"
        )
    return Finding(
        code=NOT_IMPROVED,
        severity="error",
        layer=None,
        tensor=None,
        message=(
            f"repair refused, nothing written: the final output's inference-vs-reference gap would go from "
            f"{check.gap_before:.3g} to {check.gap_after:.3g} (relative to the output scale "
            f"{check.scale:.3g}, on the first {check.samples} samples){grown}; {cause}"
        ),
    )
