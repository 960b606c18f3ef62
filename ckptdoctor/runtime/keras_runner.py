"""Running a loaded Keras model: the ``Runner`` of every repair whose model Keras loads.

Each trainable BN layer's input is read where Keras hands it to the layer (``_Taps``
wraps ``call`` on the layer instance and always unwraps it), so no probe model has to
reach across a nested model's graph boundary. The same wrapper puts only the BN layers
in training mode: the model itself is always called with ``training=False``, so
dropout, noise and stochastic depth stay off. The measuring loop is the pipeline's
(``pipelines.measure``); this module only runs passes and moves statistics in memory.
"""

from __future__ import annotations

import warnings

import numpy as np

from ckptdoctor.analysis.selfcheck import largest_gap
from ckptdoctor.errors import UnsupportedFormatError
from ckptdoctor.runtime.base import Input, Pass, Target
from ckptdoctor.runtime.keras_model import BNLayer, variable_values

__all__ = ["KerasRunner", "load_runner", "bind_runner", "TRAINING_ARGUMENT", "GAP_NOTE"]

#: What switches the BN layers between training and inference mode (the report's ``training_flag``): the
#: model always runs in inference mode, and each BN layer's own call is handed training=True or False.
TRAINING_ARGUMENT = "model(x, training=False), each BN layer's call(training=True|False)"
#: The report's explanation of the gap columns (as the graph repair's).
#: Each BN layer's own gap is measured on this many leading samples of the first batch (the output check uses
#: the whole batches): their reference outputs are copies, held while the inference passes run. Holding every
#: layer's whole output instead kept ResNet50's 96 samples (about 400 MiB) in TensorFlow's pool, so each
#: inference pass page-faulted that much fresh memory in (0.9 s of a 10 s repair, BENCHMARKS.md D7).
LAYER_GAP_SAMPLES = 16
GAP_NOTE = (
    f"gaps: largest |inference-mode output - reference output| of each BN layer on the first {LAYER_GAP_SAMPLES} "
    "samples of the first batch; the reference runs the BN layers in training mode and every other layer in "
    "inference mode"
)


def _layer_axis(layer) -> int:
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedFormatError(
                f"BN layer {layer.name} normalises over several axes {list(axis)}: not supported"
            )
        axis = axis[0]
    return int(axis)


#: Elements per block when a batch's centred squares are summed: the float64 block stays in the cache.
_MOMENT_BLOCK = 1 << 17


def _moments(value, axis: int, channels: int):
    """One batch's count, per-channel mean and centred sum of squares, accumulated in float64.

    The squares are summed block by block of rows (``_MOMENT_BLOCK`` elements) into one float64 buffer, so no
    float64 copy of the whole batch is made."""
    x = np.asarray(value)
    x = np.moveaxis(x, axis % x.ndim, -1).reshape(-1, channels)
    mean = x.mean(axis=0, dtype=np.float64)
    rows = max(1, _MOMENT_BLOCK // channels)
    m2 = np.zeros(channels)
    buf = np.empty((min(rows, x.shape[0]), channels))
    for start in range(0, x.shape[0], rows):
        block = buf[: min(rows, x.shape[0] - start)]
        np.subtract(x[start : start + rows], mean, out=block, dtype=np.float64)
        np.square(block, out=block)
        m2 += block.sum(axis=0)
    return x.shape[0], mean, m2


class _Stop(BaseException):
    """Ends a forward pass once the measured layer's input was seen (not an Exception: Keras re-raises those)."""


def _as_numpy(value):
    """A model's outputs (a tensor, or lists and dicts of them) as numpy arrays of the same structure."""
    if isinstance(value, dict):
        return {k: _as_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_numpy(v) for v in value]
    return np.asarray(value)


class _Taps:
    """Sees each trainable BN layer's input and output where Keras hands them over, and sets its mode.

    ``call`` is wrapped on each layer instance (and the wrapper removed by ``close``),
    so inputs are read at any nesting depth, inside Functional, Sequential and
    subclassed models alike, in Keras 3 and tf-keras: no probe model has to reach
    across a nested model's graph boundary, and a layer that runs more than once per
    forward pass (a shared layer or nested model) is seen doing so.

    The model is always called with ``training=False``. With ``bn_training`` set, the
    wrapper hands each tapped BN layer ``training=True``: the BN layers normalise with
    their batch's statistics while dropout, noise and stochastic depth stay off, as at
    inference. Renormalisation (``renorm=True``) is switched off on the tapped layers
    until ``close``, so that training mode is plain batch normalisation.
    """

    def __init__(self, bns: list[BNLayer]):
        self.bns = bns
        self.axes = {bn.name: _layer_axis(bn.layer) for bn in bns}
        self.channels = {bn.name: int(bn.layer.moving_mean.shape[0]) for bn in bns}
        self.calls: list[str] = []
        self.bn_training = False
        self.outputs: dict | None = None
        self.reference: dict | None = None
        self.layer_gaps: dict[str, float] = {}
        self.moments: dict | None = None
        self.only: str | None = None
        self._tapped: list = []
        self._renorm = []
        try:
            for bn in bns:
                self._tap(bn)
            for bn in bns:
                if getattr(bn.layer, "renorm", False) is True:
                    bn.layer.renorm = False
                    self._renorm.append(bn.layer)
        except BaseException:
            self.close()
            raise

    def _tap(self, bn: BNLayer) -> None:
        original = bn.layer.call

        def call(*args, **kwargs):
            self.calls.append(bn.name)
            if self.bn_training:
                if len(args) > 1:  # training passed by position: call(inputs, training, mask)
                    args = (args[0], True) + tuple(args[2:])
                else:
                    kwargs["training"] = True
            if self.moments is not None and self.only in (None, bn.name):
                x = args[0] if args else kwargs["inputs"]
                self.moments[bn.name] = _moments(x, self.axes[bn.name], self.channels[bn.name])
                if self.only is not None:
                    raise _Stop
            out = original(*args, **kwargs)
            if self.outputs is not None:  # a copy: the whole output goes back to TensorFlow's pool
                self.outputs[bn.name] = np.array(np.asarray(out)[:LAYER_GAP_SAMPLES])
            elif self.reference is not None:  # compared at once: one set of outputs is held, not two
                self.layer_gaps[bn.name] = largest_gap(np.asarray(out)[:LAYER_GAP_SAMPLES], self.reference[bn.name])
            return out

        object.__setattr__(bn.layer, "call", call)
        self._tapped.append(bn.layer)

    def run(
        self,
        model,
        batch: list,
        bn_training: bool,
        keep: bool = False,
        moments: dict | None = None,
        only: str | None = None,
        against: dict | None = None,
    ):
        """One forward pass in inference mode (``bn_training``: the tapped BN layers in training mode); return
        the model's outputs as numpy. ``keep``: keep each layer's output on the first ``LAYER_GAP_SAMPLES``
        samples in ``outputs``; ``against``: compare each layer's output there with it into ``layer_gaps``;
        ``moments``: put each layer's input moments there (``only``: this layer's, then stop and return None)."""
        self.calls, self.outputs, self.moments, self.only = [], ({} if keep else None), moments, only
        self.reference, self.layer_gaps = against, {}
        self.bn_training = bn_training
        try:
            return _as_numpy(model(batch[0] if len(batch) == 1 else batch, training=False))
        except _Stop:
            return None
        finally:
            self.moments, self.only, self.bn_training, self.reference = None, None, False, None

    def close(self) -> None:
        for layer in self._tapped:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")
        self._tapped = []
        for layer in self._renorm:
            layer.renorm = True
        self._renorm = []


def _check_calls(bns: list[BNLayer], calls: list[str]) -> None:
    counts = {bn.name: 0 for bn in bns}
    for name in calls:
        counts[name] += 1
    for bn in bns:
        if counts[bn.name] == 0:
            raise UnsupportedFormatError(
                f"BN layer {bn.name} does not run when the model is called: its input cannot be measured; "
                "set trainable=False on it (repair then leaves it as it is) or remove it"
            )
        if counts[bn.name] > 1:
            raise UnsupportedFormatError(
                f"BN layer {bn.name} runs {counts[bn.name]} times per forward pass (it, or a nested model holding "
                "it, is shared by several calls): no one moving mean and variance match training mode for every "
                "call, so repair cannot recompute it; set trainable=False on it to leave it as it is, or give each "
                "call its own layer"
            )


def _assign(bn: BNLayer, mean, variance) -> None:
    bn.layer.moving_mean.assign(np.asarray(mean).astype(_np_dtype(bn.layer.moving_mean)))
    bn.layer.moving_variance.assign(np.asarray(variance).astype(_np_dtype(bn.layer.moving_variance)))


def _np_dtype(variable) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else dtype.name


class KerasRunner:
    """A loaded Keras model bound to the data (see ``formats.base.Runner``).

    Args:
        model: the loaded model; ``bns`` its trainable BN layers, ``frozen`` the others.
        targets: one per trainable BN layer, in ``bns``' order, keyed as the file stores them.
        inputs: the model inputs bound to the data arrays.
        graph: what described the model, for the report.
        held: the layers held in inference mode.
        notes: the report's notes so far.
    """

    training_flag = TRAINING_ARGUMENT
    gap_note = GAP_NOTE
    output_names = ("model output",)

    def __init__(
        self,
        model,
        bns: list[BNLayer],
        frozen: list[BNLayer],
        targets: list[Target],
        inputs: list[Input],
        graph: str,
        held: tuple[str, ...],
        notes: list[str],
    ):
        self.targets, self.inputs, self.graph, self.held, self.notes = targets, inputs, graph, held, notes
        self._model, self._bns = model, bns
        self._by_name = {bn.name: bn for bn in bns + frozen}
        self._snapshot = {
            bn.name: (variable_values(bn.layer.moving_mean), variable_values(bn.layer.moving_variance))
            for bn in bns + frozen
        }
        self._order: list[str] | None = None
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
        self._taps = _Taps(bns)

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
        got: dict | None = {} if moments else None
        out = self._taps.run(self._model, batch, bn_training, keep=keep_layers, moments=got, against=against)
        if self._order is None:  # the first pass shows each layer running once, in which order
            _check_calls(self._bns, self._taps.calls)
            self._order = list(dict.fromkeys(self._taps.calls))
        return Pass(
            out if outputs else None,
            self._taps.outputs if keep_layers else None,
            dict(self._taps.layer_gaps) if against else None,
            got,
        )

    def layer_moments(self, name: str, batch: list) -> tuple:
        got: dict = {}
        self._taps.run(self._model, batch, bn_training=False, moments=got, only=name)
        return got[name]

    def order(self) -> list[str]:
        return list(self._order or [])

    def load(self, statistics: dict) -> None:
        for name, (mean, variance) in statistics.items():
            _assign(self._by_name[name], mean, variance)

    def reset(self) -> None:
        """Undo Keras' own moving-average updates of the training-mode passes."""
        self.load(self._snapshot)

    def close(self) -> None:
        self._taps.close()
        self._quiet.__exit__(None, None, None)


def load_runner(
    path: str,
    config: dict | None,
    code: list[str],
    keras_version: str | None,
    fmt: str,
    arrays: dict,
    *,
    data: str,
    input: str | None,
    unsafe: bool,
    keys_of,
    read,
    graph: str,
) -> KerasRunner:
    """Load the Keras model of ``path`` in safe mode and bind it to the data: every Keras repair's runner.

    Args:
        config: the model config (checked before Keras loads anything); ``code``: its Lambda layers,
            refused unless ``unsafe``.
        keras_version, fmt: which Keras wrote the file (``keras_model.keras_module``).
        arrays: ``load_data``'s dict; ``data`` names them in messages; ``input`` the input one array feeds.
        keys_of: the trainable BN layers -> {layer: {"moving_mean": key, ...}}, where the file stores them.
        read: key -> the stored value (checked against the loaded variables before anything runs).
        graph: what described the model, for the report.
    """
    from ckptdoctor.runtime.keras_model import check_loadable, input_arrays, keras_module, load_keras_model

    if code and not unsafe:
        raise UnsupportedFormatError(
            f"{path} has Lambda layers ({', '.join(code[:3])}) whose Python code would run on load: "
            "pass --unsafe only if you trust the file"
        )
    names, xs = input_arrays(config, arrays, data, input)
    check_loadable(config, path)
    K, legacy = keras_module(keras_version, fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
        model = load_keras_model(K, legacy, path, unsafe)
    return bind_runner(K, model, path, names, xs, keys_of=keys_of, read=read, graph=graph, legacy=legacy)


def bind_runner(K, model, path: str, names: list[str], xs: list, *, keys_of, read, graph: str, legacy: bool):
    """A loaded model's ``KerasRunner``: its BN layers found, their stored statistics checked, the data bound.

    Args:
        K: the Keras module that loaded ``model`` (``legacy``: tf-keras).
        names, xs: the model's input names and the data arrays in their order.
        keys_of, read, graph: as for ``load_runner``.
    """
    from ckptdoctor.runtime.keras_model import (
        bind_inputs,
        check_stored_values,
        frozen_note,
        held_in_inference,
        targets,
        trainable_bn_layers,
        variant_notes,
    )

    bns, frozen = trainable_bn_layers(K, model, path)
    keys = keys_of(bns)
    stored = check_stored_values(bns, keys, read, path)
    return KerasRunner(
        model,
        bns,
        frozen,
        targets(bns, keys, stored),
        bind_inputs(model, names, xs),
        graph=graph.format(keras="tf-keras" if legacy else "Keras 3"),
        held=held_in_inference(K, model),
        notes=frozen_note(frozen) + variant_notes(bns),
    )
