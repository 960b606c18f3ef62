"""Per-tensor statistics computed chunk by chunk.

Memory stays near one chunk, whatever the tensor's size. Means and variances of
chunks are merged with Chan et al.'s pairwise update (float64 accumulators), so
the result equals a one-pass numpy computation in float64 up to rounding.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np


__all__ = ["TensorStats", "Partial", "compute_stats", "partials", "merge", "stats_of_many", "STATS_DTYPES"]

#: dtypes whose values get min/max/mean/std (complex, strings, variants do not).
STATS_DTYPES = frozenset(
    [
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "float8_e5m2",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e4m3b11fnuz",
        "float8_e5m2fnuz",
        "int4",
        "uint4",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "bool",
        "qint8",
        "quint8",
        "qint16",
        "quint16",
        "qint32",
    ]
)


#: The one-pass M2 is kept only while sum(x^2) <= this many times M2 (mean^2 <= 3 variances):
#: its relative error is about float64 epsilon times that ratio.
_MAX_CANCELLATION = 4.0

#: Elements summed at a time through the float64 buffer (2 MiB of it: a 1 MiB float32 chunk in one block).
_BLOCK = 1 << 18

_per_thread = threading.local()
#: ``np.add.reduceat(x, _FIRST)[0]``: the sum of ``x`` as ``reduceat`` takes it for any slice of a longer array
#: (pairwise, as ``np.add.reduce``, but split otherwise), so a tensor summed alone or in a batch gets the same bits.
_FIRST = (0,)


@dataclass(frozen=True)
class TensorStats:
    """Statistics of a tensor's values.

    min, max, mean and std (population, ddof=0) are over the finite values; NaN
    and Inf are counted instead. They are None when no value is finite.
    """

    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan: int
    inf: int


class Partial(NamedTuple):
    """One chunk's share of a tensor's statistics: its finite values' count, mean, M2 (sum of squared
    deviations from that mean), min and max, and its NaN and Inf counts."""

    n: int
    mean: float
    m2: float
    lo: float
    hi: float
    nan: int
    inf: int


def compute_stats(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics of the concatenation of ``chunks`` (1-D arrays of one dtype).

    Values near the top of their dtype's range overflow the sums of squares: the std is then
    ``inf``, silently (numpy's overflow warning would be a second line on stderr).
    """
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        return merge(_partials(chunks))


def partials(chunks: Iterable[np.ndarray]) -> list[Partial]:
    """Each chunk's ``Partial``, computed from that chunk alone: the chunks of one tensor may be taken
    by several threads, and ``merge`` of their partials in the chunks' order gives, bit for bit, the
    statistics of one thread reading them all."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        return list(_partials(chunks))


def _partials(chunks: Iterable[np.ndarray]) -> Iterator[Partial]:
    # One float64 buffer per thread, kept from tensor to tensor: a fresh one per tensor costs a page
    # fault per 4 KiB of it (system time equal to the reductions' over the 2 GiB checkpoint).
    import numpy as np

    scratch = getattr(_per_thread, "scratch", None)
    if scratch is None:
        scratch = _per_thread.scratch = np.empty(0, np.float64)
    for chunk in chunks:
        if chunk.size:
            partial, grown = _partial(chunk, scratch)
            if grown is not scratch:
                scratch = _per_thread.scratch = grown
            yield partial


def _partial(chunk: np.ndarray, scratch: np.ndarray) -> tuple[Partial, np.ndarray]:
    import numpy as np

    nan = inf = 0
    if chunk.dtype.kind not in "fiub":
        # ml_dtypes (bfloat16, float8, int4) compute through float32.
        chunk = chunk.astype(np.float32)
    if chunk.dtype.kind == "b":
        chunk = chunk.view(np.uint8)
    cmin, cmax = chunk.min(), chunk.max()
    # min/max propagate NaN and reach any Inf, so finite extremes mean a finite chunk.
    if chunk.dtype.kind == "f" and not (np.isfinite(cmin) and np.isfinite(cmax)):
        finite = np.isfinite(chunk)
        isnan = np.isnan(chunk)
        nan = int(isnan.sum())
        inf = int(chunk.size - finite.sum() - nan)
        chunk = chunk[finite]
        if chunk.size == 0:
            return Partial(0, 0.0, 0.0, math.inf, -math.inf, nan, inf), scratch
        cmin, cmax = chunk.min(), chunk.max()
    n = chunk.size
    # The sum and the sum of squares, in float64, a block at a time: each block is cast into one
    # reused float64 buffer small enough to stay in the CPU's cache, and both reductions read it
    # there (a float32 chunk reduced with dtype=float64 is cast twice, in numpy's small buffers:
    # about 1.8x the time). M2 = sum(x^2) - n*mean^2 cancels when the mean is large against the
    # spread, so then the exact two-pass route (centre in float64, then square) is taken instead.
    if scratch.size < min(n, _BLOCK):
        scratch = np.empty(min(n, _BLOCK), np.float64)
    s1 = s2 = 0.0
    for values in _float64_blocks(chunk, scratch):
        s1 += float(np.add.reduceat(values, _FIRST)[0])  # pairwise, as stats_of_many sums a slice of its batch
        np.multiply(values, values, out=values)  # not np.dot: multithreaded BLAS is slow on busy machines
        s2 += float(np.add.reduceat(values, _FIRST)[0])
    cmean, cm2, kept = _one_pass(n, s1, s2)
    if not kept:
        cm2 = 0.0
        for values in _float64_blocks(chunk, scratch):
            np.subtract(values, cmean, out=values)
            np.multiply(values, values, out=values)
            cm2 += float(np.add.reduceat(values, _FIRST)[0])
    return Partial(n, cmean, cm2, float(cmin), float(cmax), nan, inf), scratch


def _float64_blocks(chunk: np.ndarray, scratch: np.ndarray) -> Iterator[np.ndarray]:
    """``chunk`` cast to float64 into ``scratch``, ``_BLOCK`` elements at a time (the buffer is reused)."""
    import numpy as np

    for first in range(0, chunk.size, _BLOCK):
        values = scratch[: min(_BLOCK, chunk.size - first)]
        np.copyto(values, chunk[first : first + _BLOCK], casting="unsafe")
        yield values


def _one_pass(n: int, s1: float, s2: float) -> tuple[float, float, bool]:
    """The mean and the one-pass M2 of ``n`` values from their sum and sum of squares, and whether that M2
    is kept (False: it cancels, and the two-pass route must give it)."""
    cmean = s1 / n
    cm2 = s2 - n * cmean * cmean
    return cmean, cm2, cm2 * _MAX_CANCELLATION >= s2


def merge(parts: Iterable[Partial]) -> TensorStats:
    """The statistics of the chunks whose partials are ``parts``, in their order: Chan et al.'s pairwise
    update of the mean and M2, one chunk after the other."""
    count = 0
    mean = 0.0
    m2 = 0.0
    lo = math.inf
    hi = -math.inf
    nan = inf = 0
    for part in parts:
        nan += part.nan
        inf += part.inf
        n = part.n
        if n == 0:
            continue
        lo = min(lo, part.lo)
        hi = max(hi, part.hi)
        total = count + n
        delta = part.mean - mean
        mean += delta * n / total
        m2 += part.m2 + delta * delta * count * n / total
        count = total
    if count == 0:
        return TensorStats(None, None, None, None, nan, inf)
    return TensorStats(lo, hi, mean, math.sqrt(m2 / count), nan, inf)


def stats_of_many(arrays: Sequence[np.ndarray]) -> list[TensorStats]:
    """``compute_stats([a])`` of each of ``arrays`` (small flat tensors), bit for bit, computed together.

    Consecutive arrays of one numeric dtype, up to ``_BLOCK`` elements in all, share their numpy calls:
    one concatenation, one float64 copy, one squaring, and min, max and the two float64 sums by
    ``np.ufunc.reduceat``, which sums each slice as ``compute_stats`` sums a tensor alone. A few calls
    for tens of small tensors instead of a dozen each. An array with NaN or Inf, or whose M2
    would cancel, and any of another kind (bool, bfloat16, ...) or size take ``compute_stats``'s route.
    """
    import numpy as np

    out: list[TensorStats | None] = [None] * len(arrays)
    with np.errstate(over="ignore", invalid="ignore"):
        group: list[int] = []
        size = 0
        for i, a in enumerate(arrays):
            if a.dtype.kind not in "fiu" or a.size == 0 or a.size > _BLOCK:
                out[i] = _single(a)
                continue
            if group and (a.dtype != arrays[group[0]].dtype or size + a.size > _BLOCK):
                _reduce_group(arrays, group, out)
                group, size = [], 0
            group.append(i)
            size += a.size
        if group:
            _reduce_group(arrays, group, out)
    return out  # type: ignore[return-value]


def _single(a: np.ndarray) -> TensorStats:
    return merge(_partials([a]))


def _reduce_group(arrays: Sequence[np.ndarray], group: list[int], out: list) -> None:
    import numpy as np

    if len(group) == 1:
        out[group[0]] = _single(arrays[group[0]])
        return
    parts = [arrays[i] for i in group]
    values = np.concatenate(parts)
    bounds = [0]
    for a in parts:
        bounds.append(bounds[-1] + a.size)
    starts = np.array(bounds[:-1], np.intp)
    lo, hi = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
    finite = (np.isfinite(lo) & np.isfinite(hi)).tolist()
    lo, hi = lo.tolist(), hi.tolist()  # Python ints or floats, exactly the values
    wide = values.astype(np.float64)
    s1 = np.add.reduceat(wide, starts).tolist()
    np.multiply(wide, wide, out=wide)
    s2 = np.add.reduceat(wide, starts).tolist()
    for k, i in enumerate(group):
        n = parts[k].size
        cmean, cm2, kept = _one_pass(n, 0.0 + s1[k], 0.0 + s2[k])  # as _partial: 0.0 + its one block's sums
        if finite[k] and kept:
            out[i] = merge((Partial(n, cmean, cm2, float(lo[k]), float(hi[k]), 0, 0),))
        else:  # NaN or Inf (min and max reach them), or an M2 that cancels: the exact route
            out[i] = _single(parts[k])
