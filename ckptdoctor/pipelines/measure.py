"""The statistics pass and the output check, written once over any format's ``Runner``.

The target: for each BN layer, the population mean and (biased) variance of its
input, per channel, as the network computes that input at inference. Layers that
behave differently in training (dropout, noise, stochastic depth) therefore stay in
inference mode throughout; only the BN layers are put in training mode.

``train``: one forward pass per batch with the BN layers in training mode, every
layer's input moments taken at once. Each batch is normalised with its own
statistics, so with one batch holding all samples every layer's input is exactly what
inference computes with the new statistics. ``sequential``: layer by layer in the
order the layers run, the whole network in inference mode, each layer's new
statistics given to the model (in memory only) before the next layer is measured; it
reaches the target layer by layer, whatever the batch size. Batches are merged
exactly by ``PooledMoments``.

The reference, for both methods: the outputs with the BN layers in training mode and
nothing else in training mode, on the first ``selfcheck.checked_batches`` batches.
Per layer, on the first batch, and for the network's outputs over those batches: the
largest |inference-mode output - reference| with the stored statistics and with the
new ones, judged by ``selfcheck.judge``. Training mode never reads the moving
statistics, so one reference serves before and after.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ckptdoctor.analysis.estimator import PooledMoments
from ckptdoctor.analysis.selfcheck import (
    CHECKED_MAX_BATCHES,
    CHECKED_SAMPLES,
    OutputCheck,
    judge,
    largest_gap,
    output_scale,
)
from ckptdoctor.runtime.base import OutputUnavailable, Runner, no_cpu_kernel

__all__ = ["Measured", "measure", "Progress"]


class Measured(NamedTuple):
    """What the statistics pass measured (all in memory; nothing written)."""

    pooled: dict  # layer name -> PooledMoments of its input
    samples: int  # samples in one pass over the data
    gaps_before: dict  # layer name -> largest |inference output - reference output|, stored statistics
    gaps_after: dict  # the same with the new statistics
    check: OutputCheck | None  # the outputs' gap to the reference, before and after; None: not measured


class Progress:
    """Samples done on stderr (samples/s, and the ETA when the total is known), via tqdm; only on a terminal."""

    def __init__(self, total: int | None, enabled: bool, label: str):
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="sample", file=sys.stderr, leave=False)

    def step(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Reference:
    """The first batches, their reference outputs, and each layer's reference output on the first."""

    def __init__(self, outputs: bool):
        self.batches: list = []
        self.outputs: list = []
        self.layers: dict = {}
        self.check_outputs = outputs

    def take(self, runner: Runner, batch: list, first: bool, moments: bool = False):
        """One BN-training pass that keeps the reference; returns its moments (when asked)."""
        try:
            got = runner.run(batch, bn_training=True, moments=moments, keep_layers=first, outputs=self.check_outputs)
        except OutputUnavailable as e:
            runner.notes.append(
                f"the output check could not compute {', '.join(runner.output_names)} ({e}): it was not made"
            )
            self.check_outputs = False
            got = runner.run(batch, bn_training=True, moments=moments, keep_layers=first, outputs=False)
        if first:
            self.layers = got.layer_outputs or {}
        self.batches.append(batch)
        self.outputs.append(got.outputs)
        return got.moments

    def gaps(self, runner: Runner) -> tuple[dict, float]:
        """Inference-mode passes: each layer's gap on the first batch, the outputs' over every kept batch."""
        layer_gaps: dict = {}
        gap = 0.0
        for i, (batch, reference) in enumerate(zip(self.batches, self.outputs)):
            against = self.layers if i == 0 and self.layers else None
            if against is None and not self.check_outputs:
                break
            got = runner.run(batch, bn_training=False, against=against, outputs=self.check_outputs)
            if against is not None:
                layer_gaps = dict(got.layer_gaps or {})
            if self.check_outputs:
                gap = max(gap, largest_gap(got.outputs, reference))
        return layer_gaps, gap


def _kept(index: int, seen: int) -> bool:
    """Whether batch ``index`` (``seen`` samples before it) is one the output check compares: whole batches
    until 512 samples, at most 4 (``selfcheck.checked_batches``, decided as the batches come)."""
    return index == 0 or (index < CHECKED_MAX_BATCHES and seen < CHECKED_SAMPLES)


def measure(runner: Runner, batches: Callable[[], Iterator[list]], total: int | None, method: str, progress: bool):
    """Pool each target layer's input moments over ``batches()``, and check the result.

    ``batches`` is called once per pass over the data and yields one list of arrays
    (one per input) per batch; ``total``: the samples in a pass, when known (progress only).
    Nothing is held beyond the reference batches: memory does not grow with the data.

    Raises:
        UnsupportedFormatError: TensorFlow has no CPU kernel for one of the model's layers (``no_cpu_kernel``).
    """
    try:
        return _measure(runner, batches, total, method, progress)
    except Exception as e:
        error = no_cpu_kernel(e)
        if error is None:
            raise
        raise error from e


def _measure(runner: Runner, batches: Callable[[], Iterator[list]], total: int | None, method: str, progress: bool):
    pooled = {t.name: PooledMoments(t.channels) for t in runner.targets}
    ref = _Reference(outputs=bool(runner.output_names))
    seen = 0
    if method == "train":
        bar = Progress(total, progress, "repair")
        try:
            for i, batch in enumerate(batches()):
                if _kept(i, seen) if runner.output_names else i == 0:
                    moments = ref.take(runner, batch, first=i == 0, moments=True)
                else:
                    moments = runner.run(batch, bn_training=True, moments=True, outputs=False).moments
                for name, (count, mean, m2) in (moments or {}).items():
                    pooled[name].add(count, mean, m2)
                seen += len(batch[0])
                bar.step(len(batch[0]))
        finally:
            bar.close()
    else:
        for i, batch in enumerate(batches()):
            if not (_kept(i, seen) if runner.output_names else i == 0):
                break
            ref.take(runner, batch, first=i == 0)
            seen += len(batch[0])
    runner.reset()
    gaps_before, out_before = ref.gaps(runner)
    if method == "train":
        runner.load({name: (p.mean, p.variance) for name, p in pooled.items()})
    else:
        order = runner.order()
        bar = Progress(None if total is None else total * len(order), progress, "repair")
        try:
            for name in order:
                seen = 0
                for batch in batches():
                    pooled[name].add(*runner.layer_moments(name, batch))
                    seen += len(batch[0])
                    bar.step(len(batch[0]))
                runner.load({name: (pooled[name].mean, pooled[name].variance)})
        finally:
            bar.close()
        if not order:
            seen = sum(len(batch[0]) for batch in batches())
    gaps_after, out_after = ref.gaps(runner)
    check = None
    if ref.check_outputs:
        samples = sum(len(batch[0]) for batch in ref.batches)
        check = judge(
            runner.output_names, samples, output_scale(ref.outputs), out_before, out_after, gaps_before, gaps_after
        )
    return Measured(pooled, seen, gaps_before, gaps_after, check)
