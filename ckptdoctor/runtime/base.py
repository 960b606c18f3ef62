"""What a runner is: a model loaded and bound to the data, which runs batches in memory.

Every format's repair runs through one (``formats.base.Model.runner``); the measuring
loop over it is written once, in ``pipelines.measure``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Protocol

from ckptdoctor.errors import UnsupportedFormatError

__all__ = ["Input", "Target", "Pass", "Runner", "OutputUnavailable", "no_cpu_kernel"]


def no_cpu_kernel(error: BaseException) -> UnsupportedFormatError | None:
    """The one-line error for TensorFlow failing to run the model for want of a CPU kernel, or None.

    TensorFlow's own CPU kernels have no channels-first (NCHW) convolution or pooling; oneDNN's have,
    and TensorFlow turns oneDNN on by default only on some Intel CPUs. On another CPU such a model
    cannot run at all until it is turned on.
    """
    text = str(error)
    if "NHWC" not in text or ("CPU" not in text and "only supports" not in text):
        return None
    said = re.search(r"[A-Z][\w ]*\bop\b[^.\n\x1b]*NHWC[^.\n\x1b]*", text)  # "The Conv2D op currently only ..."
    first = said.group(0).strip()[:160] if said else "no kernel for a channels-first layout"
    return UnsupportedFormatError(
        f"TensorFlow cannot run the model on this CPU ({first}): a channels-first (NCHW) layer needs oneDNN's "
        "kernels; rerun with TF_ENABLE_ONEDNN_OPTS=1 set, or on a GPU"
    )


class Input(NamedTuple):
    """One model input bound to its data array."""

    name: str
    array: Any  # a numpy array or a lazily read one (memory map, HDF5 dataset)
    shape: list | None  # the input's shape (None dims unknown), None: unknown rank
    dtype: str  # the input's dtype name; batches are cast to it


class Target(NamedTuple):
    """One BN layer whose statistics repair recomputes, and where they are stored."""

    name: str
    moving_mean: str
    moving_variance: str
    gamma: str | None
    beta: str | None
    channels: int
    stored: dict  # key -> stored value (missing statistics absent)
    dtypes: dict  # key -> the dtype the new value is written in


class Pass(NamedTuple):
    """What one forward pass returned (None: not asked for)."""

    outputs: object  # the network's outputs as numpy (lists and dicts of arrays)
    layer_outputs: dict | None  # layer -> its output
    layer_gaps: dict | None  # layer -> largest |output - the given reference output|
    moments: dict | None  # layer -> (count, per-channel mean, per-channel centred sum of squares)


class OutputUnavailable(Exception):
    """The network's outputs cannot be computed in one of the modes: no output check."""


class Runner(Protocol):
    """A model loaded and bound to the data, in memory; nothing it does is written.

    ``run`` puts only the BN layers in training mode when ``bn_training`` is set;
    every other layer that has a training mode (dropout, noise) stays in inference
    mode, as ``held`` names them.
    """

    inputs: list[Input]
    targets: list[Target]
    graph: str  # what described the model, for the report
    training_flag: str | None  # what switches the BN layers' mode (None: nothing does)
    output_names: tuple[str, ...]  # the outputs the output check compares (empty: no check)
    held: tuple[str, ...]
    notes: list[str]
    gap_note: str

    def run(
        self,
        batch: list,
        *,
        bn_training: bool,
        moments: bool = False,
        keep_layers: bool = False,
        against: dict | None = None,
        outputs: bool = True,
    ) -> Pass:
        """One forward pass over ``batch`` (one array per input); ``against``: layer outputs to compare with."""

    def layer_moments(self, name: str, batch: list) -> tuple:
        """One layer's input moments, the whole network in inference mode (``--method sequential``)."""

    def order(self) -> list[str]:
        """The targets' names in the order they run (after a first pass)."""

    def load(self, statistics: dict) -> None:
        """Give the loaded model new statistics, in memory: layer -> (mean, variance)."""

    def reset(self) -> None:
        """Back to the statistics the model was loaded with."""

    def close(self) -> None:
        """Undo what the runner changed in the loaded model, release it."""
