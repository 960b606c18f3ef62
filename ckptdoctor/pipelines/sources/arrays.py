"""``.npy``, ``.npz`` and ``.h5`` files as a source: memory-mapped or sliced arrays (``pipelines.data``).

Every check runs before the first pass (shape, dtype, a NaN/Inf scan), as it always
has; batches are consecutive rows in file order, so results are those of earlier
versions bit for bit.
"""

from __future__ import annotations

from ckptdoctor.pipelines.data import batches, check_data, load_data
from ckptdoctor.pipelines.sources.base import DEFAULT_BATCH_SIZE, Feed

__all__ = ["ArraySource"]


class ArraySource:
    """The arrays of one data file, bound as they are (sliceable, never loaded whole)."""

    def __init__(self, spec: str, input: str | None = None):
        self.name, self.runner_input = spec, input
        self._arrays = load_data(spec)
        self.notes: list[str] = []
        self.total: int | None = None

    def arrays(self) -> dict:
        return self._arrays

    def feed(self, inputs: list, batch_size: int | None, max_samples: int | None) -> Feed:
        """Each input's array checked (shape, dtype, finite) over the first ``n`` rows; consecutive batches."""
        n = min(int(i.array.shape[0]) for i in inputs)
        if max_samples is not None:
            n = min(n, int(max_samples))
        for i in inputs:
            a = i.array
            check_data(a[:n] if n < a.shape[0] else a, f"{self.name} ({i.name.split(':')[0]})", i.shape, i.dtype)
        size = batch_size or DEFAULT_BATCH_SIZE
        self.total = n
        return Feed(lambda: batches(inputs, n, size), n)
