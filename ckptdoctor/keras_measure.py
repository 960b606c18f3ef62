"""Running a loaded Keras model to measure its BN layers' inputs (the model half of Keras repairs).

Which Keras: a file written by Keras 3 is loaded with ``keras``; one written by
tf-keras / Keras 2 with ``tf_keras`` (from its ``keras_version``), always in safe mode.

BN layers are found at any depth of nested models (``find_bn_layers``); a layer is
frozen when it, or any model holding it, has ``trainable=False``. Each trainable
layer's input is read where Keras hands it to the layer (``_Taps`` wraps ``call`` on
the layer instance and always unwraps it), so no probe model has to reach across a
nested model's graph boundary. The same wrapper puts only the BN layers in training
mode: the model itself is always called with ``training=False``, so dropout, noise
and stochastic depth stay off (``held_in_inference`` names those layers).
``recompute_bn_moments`` pools the inputs over consecutive batches
(``estimator.PooledMoments``) with the BN layers in training mode (``train``) or
layer by layer in inference mode (``sequential``), and measures each layer's and the
final output's gap to the BN-training reference before and after (in memory only).
"""

from __future__ import annotations

import inspect
import itertools
from typing import NamedTuple

import numpy as np

from .data import check_data, release_rows
from .errors import BadDataError, UnsupportedFormatError
from .estimator import PooledMoments
from .keras_model import BN_CLASSES, config_layers
from .selfcheck import OutputCheck, checked_batches, judge, largest_gap, output_scale

__all__ = ["BNLayer", "Measured", "keras_module", "load_keras_model", "find_bn_layers", "trainable_bn_layers",
           "check_loadable", "check_model_inputs", "held_in_inference", "recompute_bn_moments", "variable_values"]


def keras_module(version: str | None, fmt: str):
    """Keras 3 for files it wrote, tf-keras for Keras 2 files."""
    from .tfcompat import import_tensorflow

    import_tensorflow()
    legacy = version is not None and version.split(".")[0] == "2"
    if fmt == "keras-legacy-h5" and version is None:
        legacy = True
    try:
        if legacy:
            import tf_keras as K
        else:
            import keras as K
    except ImportError as e:
        raise UnsupportedFormatError(
            f"this file was written by Keras {version or '?'}, which needs "
            f"{'tf-keras' if legacy else 'keras>=3'} to run: pip install {'tf-keras' if legacy else 'keras'}") from e
    return K, legacy


def load_keras_model(K, legacy: bool, path: str, unsafe: bool):
    try:
        if legacy:
            return K.models.load_model(path, compile=False, safe_mode=not unsafe)
        return K.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedFormatError(f"Keras cannot load {path}: {first[:300]} (custom layers must be importable "
                                     "and registered; ckptdoctor never runs code from the file)") from e


def check_loadable(config: dict | None, path: str) -> None:
    """Refuse, before Keras loads anything, the BN layers Keras cannot load back from their own config.

    tf-keras ``BatchNormalization(virtual_batch_size=...)`` stores the axis it shifted
    for its virtual batch dimension, so loading it fails (``Invalid value for axis``).

    Raises:
        UnsupportedFormatError: naming the layer, why, and what to do.
    """
    for layer in config_layers(config):
        if layer.class_name in BN_CLASSES and layer.config.get("virtual_batch_size") is not None:
            raise UnsupportedFormatError(
                f"BN layer {layer.path} of {path} has virtual_batch_size={layer.config['virtual_batch_size']}: "
                "tf-keras saves such a layer with the axis it shifted for its virtual batches and cannot load it "
                "back (Invalid value for axis), so the model cannot run; rebuild the model in code with "
                "virtual_batch_size=None (inference is the same), load these weights (model.load_weights), save "
                "it and repair that file")


def _layer_axis(layer) -> int:
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedFormatError(f"BN layer {layer.name} normalises over several axes {list(axis)}: "
                                         "not supported")
        axis = axis[0]
    return int(axis)


def _moments(value, axis: int, channels: int):
    """One batch's count, per-channel mean and centred sum of squares, in float64."""
    x = np.asarray(value, np.float64)
    x = np.moveaxis(x, axis % x.ndim, -1).reshape(-1, channels)
    mean = x.mean(axis=0)
    return x.shape[0], mean, np.square(x - mean).sum(axis=0)


class BNLayer(NamedTuple):
    """A BN layer of a loaded Keras model, at any nesting depth."""

    name: str  # its path from the top model: "bn1", "backbone/block/bn2"
    layer: object  # the Keras layer
    chain: tuple  # (model, child) links from the top model down to the layer
    trainable: bool  # the layer and every model holding it are trainable
    reason: str = ""  # why it is frozen


def _children(layer) -> list:
    try:
        return list(layer._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        return list(getattr(layer, "layers", None) or [])


def find_bn_layers(K, model) -> list[BNLayer]:
    """Every BN layer of the loaded model, nested models' ones included (depth first, in layer order)."""
    bn_type = K.layers.BatchNormalization
    found: list[BNLayer] = []
    seen: set[int] = set()

    def all_frozen(container) -> bool:
        weighted = [sub for sub in container._flatten_layers(include_self=False) if sub.weights] \
            if hasattr(container, "_flatten_layers") else []
        return bool(weighted) and not any(sub.trainable for sub in weighted)

    def walk(container, names: list[str], chain: tuple, frozen_by: str | None) -> None:
        for sub in _children(container):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            path, link = names + [sub.name], chain + ((container, sub),)
            if isinstance(sub, bn_type) or type(sub).__name__ in BN_CLASSES:
                reason = ""
                if frozen_by is not None:
                    reason = (f"inside nested model {frozen_by}, which has trainable=False" if frozen_by else
                              "the whole model has trainable=False")
                elif not sub.trainable:
                    reason = "trainable=False"
                    if names and all_frozen(container):
                        reason += f", as is every layer of nested model {'/'.join(names)} (base.trainable = False)"
                found.append(BNLayer("/".join(path), sub, link, not reason, reason))
            elif _children(sub):
                walk(sub, path, link, frozen_by if frozen_by is not None or sub.trainable else "/".join(path))

    walk(model, [], (), None if model.trainable else "")
    return found


def trainable_bn_layers(K, model, path: str) -> tuple[list[BNLayer], list[BNLayer]]:
    """The loaded model's trainable BN layers (at any nesting depth), and the frozen ones.

    Raises:
        UnsupportedFormatError: no trainable BN layer (the message names the frozen ones and why).
    """
    every = find_bn_layers(K, model)
    bns = [bn for bn in every if bn.trainable]
    frozen = [bn for bn in every if not bn.trainable]
    if not every:
        raise UnsupportedFormatError(f"{path} has no BatchNormalization layer: nothing to repair")
    if not bns:
        listed = "; ".join(f"{bn.name} ({bn.reason})" for bn in frozen[:4]) + ("; ..." if len(frozen) > 4 else "")
        raise UnsupportedFormatError(
            f"{path} has no trainable BatchNormalization layer: nothing to repair; repair leaves frozen BN layers as "
            f"they are, because the model learned with their stored statistics (in training mode too): {listed}; "
            "to recalibrate one, set trainable=True on it and on the models holding it, and save the model again")
    return bns, frozen


def check_model_inputs(model, xs: list, names: list[str], data: str, max_samples: int | None) -> tuple[int, list]:
    """Check the data arrays against the loaded model's inputs; return the sample count and input dtypes."""
    if len(xs) != len(model.inputs):
        raise UnsupportedFormatError(f"the loaded model has {len(model.inputs)} inputs, its config names {len(xs)}")
    n = min(int(a.shape[0]) for a in xs)
    if max_samples is not None:
        if max_samples < 1:
            raise BadDataError(f"--max-samples must be at least 1, received {max_samples}")
        n = min(n, int(max_samples))
    dtypes = []
    for i, (t, a) in enumerate(zip(model.inputs, xs)):
        dtype = t.dtype if isinstance(t.dtype, str) else t.dtype.name
        dtypes.append(dtype)
        check_data(a[:n] if n < a.shape[0] else a, f"{data} ({names[i] if i < len(names) else i})",
                   list(t.shape), dtype)
    return n, dtypes


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
        self._gaps: dict[str, float] = {}
        self.pooled: dict | None = None
        self.only: str | None = None
        self._tapped = []
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
            if self.pooled is not None and self.only in (None, bn.name):
                x = args[0] if args else kwargs["inputs"]
                self.pooled[bn.name].add(*_moments(x, self.axes[bn.name], self.channels[bn.name]))
                if self.only is not None:
                    raise _Stop
            out = original(*args, **kwargs)
            if self.outputs is not None:
                self.outputs[bn.name] = np.asarray(out)
            elif self.reference is not None:  # compared at once: one set of outputs is held, not two
                self._gaps[bn.name] = largest_gap(out, self.reference[bn.name])
            return out

        object.__setattr__(bn.layer, "call", call)
        self._tapped.append(bn.layer)

    def run(self, model, batch: list, bn_training: bool, keep: bool = False, pooled: dict | None = None,
            only: str | None = None):
        """One forward pass in inference mode (``bn_training``: the tapped BN layers in training mode); return
        the model's outputs as numpy. ``keep``: keep each layer's output in ``outputs``; ``pooled``: add each
        layer's input moments (``only``: this layer's, then stop and return None)."""
        self.calls, self.outputs, self.pooled, self.only = [], ({} if keep else None), pooled, only
        self.bn_training = bn_training
        try:
            return _as_numpy(model(batch[0] if len(batch) == 1 else batch, training=False))
        except _Stop:
            return None
        finally:
            self.pooled, self.only, self.bn_training = None, None, False

    def gaps(self, model, batches: list, layer_reference: dict, references: list) -> tuple[dict[str, float], float]:
        """Inference-mode passes over ``batches``: each layer's largest |output - reference output| on the first
        batch, and the largest |model output - reference| over all of them."""
        gap = 0.0
        for i, (batch, reference) in enumerate(zip(batches, references)):
            if i == 0:
                self._gaps, self.reference = {}, layer_reference
            try:
                out = self.run(model, batch, bn_training=False)
            finally:
                self.reference = None
            gap = max(gap, largest_gap(out, reference))
        return self._gaps, gap

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
                "set trainable=False on it (repair then leaves it as it is) or remove it")
        if counts[bn.name] > 1:
            raise UnsupportedFormatError(
                f"BN layer {bn.name} runs {counts[bn.name]} times per forward pass (it, or a nested model holding "
                "it, is shared by several calls): no one moving mean and variance match training mode for every "
                "call, so repair cannot recompute it; set trainable=False on it to leave it as it is, or give each "
                "call its own layer")


def _assign(bn: BNLayer, mean, variance) -> None:
    bn.layer.moving_mean.assign(np.asarray(mean).astype(_np_dtype(bn.layer.moving_mean)))
    bn.layer.moving_variance.assign(np.asarray(variance).astype(_np_dtype(bn.layer.moving_variance)))


def _takes_training(layer) -> bool:
    """The layer's ``call`` names a ``training`` parameter (tf-keras' ``_expects_training_arg`` is also true
    for a ``call(inputs, **kwargs)``, as its InputLayer's, so the signature decides there)."""
    if type(layer).__name__ == "InputLayer":
        return False
    value = getattr(layer, "_call_has_training_arg", None)  # Keras 3
    if isinstance(value, bool):
        return value
    try:
        return "training" in inspect.signature(type(layer).call).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _ignores_training(K, layer) -> bool:
    """Keras 3's Dense and EinsumDense take ``training`` and ignore it (unless quantized to float8)."""
    for name in ("Dense", "EinsumDense"):
        cls = getattr(K.layers, name, None)
        if cls is not None and getattr(type(layer), "call", None) is getattr(cls, "call", ()) \
                and getattr(layer, "quantization_mode", None) in (None, "int8", "int4"):
            return True
    return False


def held_in_inference(K, model) -> tuple[str, ...]:
    """The layers the BN-training passes hold in inference mode: every leaf layer (not a model or container, not
    a BN layer) whose ``call`` takes a ``training`` argument (dropout, noise, stochastic depth, RNNs...), named
    by its path from the top model (``backbone/drop1``)."""
    bn_type = K.layers.BatchNormalization
    held: list[str] = []
    seen: set[int] = set()

    def walk(container, names: list[str]) -> None:
        for sub in _children(container):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            path = names + [sub.name]
            if isinstance(sub, bn_type) or type(sub).__name__ in BN_CLASSES:
                continue
            if _children(sub):
                walk(sub, path)
            elif _takes_training(sub) and not _ignores_training(K, sub):
                held.append("/".join(path))

    walk(model, [])
    return tuple(held)


class Measured(NamedTuple):
    """What ``recompute_bn_moments`` measured (all in memory; nothing written)."""

    pooled: dict  # layer name -> PooledMoments of its input
    gaps_before: dict  # layer name -> largest |inference output - reference output|, stored statistics
    gaps_after: dict  # the same with the new statistics
    check: OutputCheck  # the final output's gap to the reference, before and after (``selfcheck.judge``)


def recompute_bn_moments(model, bns: list[BNLayer], frozen: list[BNLayer], xs: list, dtypes: list, n: int,
                         batch_size: int, method: str, progress: bool) -> Measured:
    """Pool each BN layer's input moments over the first ``n`` samples, in consecutive batches.

    The target: for each BN layer, the population mean and (biased) variance of its
    input, per channel, as the network computes that input at inference. Layers that
    behave differently in training (dropout, noise, stochastic depth) therefore stay
    in inference mode throughout: the model is called with ``training=False`` and only
    the trainable BN layers are put in training mode (``_Taps``); frozen BN layers keep
    their stored statistics, in inference mode.

    ``train``: one forward pass per batch with the BN layers in training mode, every
    layer's input read at once. Each batch is normalised with its own statistics, so
    with one batch holding all samples every layer's input is exactly what inference
    computes with the new statistics, and the result is the target. ``sequential``:
    layer by layer in the order the layers run, the whole model in inference mode,
    each layer's new statistics assigned (in memory only) before the next layer is
    measured; it reaches the target layer by layer, whatever the batch size. Batches
    are merged exactly by ``PooledMoments`` (population variance over all samples).
    Keras' own moving-average updates of the training-mode passes are undone.

    The reference, for both methods: the model's outputs with the BN layers in training
    mode and nothing else in training mode, on the first ``selfcheck.checked_batches``
    batches. Per layer, on the first batch: the largest |inference-mode output -
    reference output| before (the stored statistics) and after (the new ones, assigned
    to the loaded model in memory only); for the final output, the same over the
    checked batches, judged by ``selfcheck.judge``. Training mode never reads the
    moving statistics, so one reference pass serves before and after.

    Returns:
        A ``Measured``: the pooled moments and per-layer gaps keyed by layer name, and the output check.

    Raises:
        UnsupportedFormatError: a layer runs more or less than once per forward pass.
    """
    from .repairing import Progress

    def batches():
        # A copy of each batch, then its mapped pages let go (as ``repairing._batches``): otherwise every
        # page of a memory-mapped .npy read stays resident and peak memory grows with the data.
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            yield [np.array(a[start:stop], dtype=d) for a, d in zip(xs, dtypes)]
            for a in xs:
                release_rows(a, start, stop)

    every = bns + frozen
    snapshot = {bn.name: (variable_values(bn.layer.moving_mean), variable_values(bn.layer.moving_variance)) for bn in every}
    pooled = {bn.name: PooledMoments(int(bn.layer.moving_mean.shape[0])) for bn in bns}
    steps = -(-n // batch_size)
    k = checked_batches(n, batch_size)
    checked, references = [], []  # the first k batches and their reference outputs (at most 4 batches)
    taps = _Taps(bns)
    try:
        # The first pass is a BN-training pass on the first batch: its outputs are the reference,
        # and its calls show each layer running once, in which order.
        if method == "train":
            bar = Progress(steps, progress, "repair")
            for i, batch in enumerate(batches()):
                out = taps.run(model, batch, bn_training=True, keep=i == 0, pooled=pooled)
                if i == 0:
                    _check_calls(bns, taps.calls)
                    layer_reference, order = taps.outputs, list(dict.fromkeys(taps.calls))
                if i < k:
                    checked.append(batch)
                    references.append(out)
                bar.step()
        else:
            for i, batch in enumerate(itertools.islice(batches(), k)):
                out = taps.run(model, batch, bn_training=True, keep=i == 0)
                if i == 0:
                    _check_calls(bns, taps.calls)
                    layer_reference, order = taps.outputs, list(dict.fromkeys(taps.calls))
                checked.append(batch)
                references.append(out)
        for bn in every:  # undo Keras' own moving-average updates of the training-mode passes
            _assign(bn, *snapshot[bn.name])
        gaps_before, out_before = taps.gaps(model, checked, layer_reference, references)
        if method == "train":
            for bn in bns:
                _assign(bn, pooled[bn.name].mean, pooled[bn.name].variance)
        else:
            by_name = {bn.name: bn for bn in bns}
            bar = Progress(steps * len(order), progress, "repair")
            for name in order:
                for batch in batches():
                    taps.run(model, batch, bn_training=False, pooled=pooled, only=name)
                    bar.step()
                _assign(by_name[name], pooled[name].mean, pooled[name].variance)
        gaps_after, out_after = taps.gaps(model, checked, layer_reference, references)
    finally:
        taps.close()
    samples = sum(int(batch[0].shape[0]) for batch in checked)
    check = judge(("model output",), samples, output_scale(references), out_before, out_after, gaps_before,
                  gaps_after)
    return Measured(pooled, gaps_before, gaps_after, check)


def _np_dtype(variable) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else dtype.name


def variable_values(variable) -> np.ndarray:
    """A Keras variable's (or array's) values as numpy."""
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
