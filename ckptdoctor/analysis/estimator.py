"""Exact per-channel mean and population variance pooled over batches.

The target: the population statistics of each BN input *as the network computes it at
inference* (dropout, noise and stochastic depth off; every earlier BN layer normalising
with its own new statistics). The runners feed this estimator accordingly: only the BN
layers run in training mode, every other layer that has a training mode is held in
inference mode (``formats.tf1.modes`` for TF1 graphs, ``runtime.keras_runner`` for Keras models). With
one batch holding every sample, ``--method train`` gives the target exactly (each BN layer
then normalises with the batch's statistics, which are the new ones); ``--method
sequential`` gives it exactly whatever the batch size, one layer at a time.

Why not average batch variances: the variance of the union of batches is not the
mean of the batches' variances. It also holds the spread *between* batch means,
and batches of unequal size must weigh by their counts. Averaging per-batch
values is biased by both (PyTorch's ``swa_utils.update_bn`` averages the
batches' variances unweighted; fvcore's ``precise_bn`` adds the between-batch
term, as we do).

What we do: each batch contributes its count ``n_b``, its mean ``m_b`` and its
centred sum of squares ``M2_b = sum((x - m_b)**2)``, reduced in the graph in the
activations' precision and centred on the batch mean, as the BN layer does (only
these three small vectors leave TensorFlow). Two summaries are merged with the
update of Chan, Golub and LeVeque (1979), in float64::

    n     = n_a + n_b
    delta = m_b - m_a
    m     = m_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

After all batches, ``mean = m`` and ``variance = M2 / n``: the biased
(population) variance, which is what BN layers normalise with in training mode
and what their moving variance estimates. Centred sums avoid the cancellation of
the naive ``E[x^2] - E[x]^2`` when the mean is large against the spread. The
result equals numpy's ``x.mean(axes)`` and ``x.var(axes)`` over the concatenated
data, whatever the batch split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PooledMoments"]


class PooledMoments:
    """Running (count, mean, M2) per channel, merged batch by batch."""

    def __init__(self, channels: int):
        self.count = 0.0
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def add(self, count: float, mean: np.ndarray, m2: np.ndarray) -> None:
        """Merge one batch's count, per-channel mean and centred sum of squares."""
        count = float(count)
        if count <= 0:
            return
        mean = np.asarray(mean, np.float64)
        m2 = np.asarray(m2, np.float64)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total

    def add_values(self, values: np.ndarray, axis: int = -1) -> None:
        """Merge raw values whose channels lie along ``axis`` (used by tests and small data)."""
        values = np.moveaxis(np.asarray(values, np.float64), axis, -1).reshape(-1, self.mean.size)
        m = values.mean(axis=0)
        self.add(values.shape[0], m, np.square(values - m).sum(axis=0))

    @property
    def variance(self) -> np.ndarray:
        """Population (biased) variance: M2 / n."""
        return self.m2 / self.count if self.count else np.full_like(self.m2, np.nan)
