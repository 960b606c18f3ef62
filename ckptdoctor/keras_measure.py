"""Running a loaded Keras model to measure its BN layers' inputs (the model half of Keras repairs).

Which Keras: a file written by Keras 3 is loaded with ``keras``; one written by
tf-keras / Keras 2 with ``tf_keras`` (from its ``keras_version``), always in safe mode.

BN layers are found at any depth of nested models (``find_bn_layers``); a layer is
frozen when it, or any model holding it, has ``trainable=False``. Each trainable
layer's input is read where Keras hands it to the layer (``_Taps`` wraps ``call`` on
the layer instance and always unwraps it), so no probe model has to reach across a
nested model's graph boundary. ``recompute_bn_moments`` pools the inputs over
consecutive batches (``estimator.PooledMoments``) in training mode (``train``) or
layer by layer in inference mode (``sequential``), and measures each layer's
inference-vs-training gap on the first batch before and after (in memory only).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .data import check_data, release_rows
from .errors import BadDataError, UnsupportedFormatError
from .estimator import PooledMoments
from .keras_model import BN_CLASSES

__all__ = ["BNLayer", "keras_module", "load_keras_model", "find_bn_layers", "trainable_bn_layers",
           "check_model_inputs", "recompute_bn_moments", "variable_values"]


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


class _Taps:
    """Sees each trainable BN layer's input and output where Keras hands them over.

    ``call`` is wrapped on each layer instance (and the wrapper removed by ``close``),
    so inputs are read at any nesting depth, inside Functional, Sequential and
    subclassed models alike, in Keras 3 and tf-keras: no probe model has to reach
    across a nested model's graph boundary, and a layer that runs more than once per
    forward pass (a shared layer or nested model) is seen doing so.
    """

    def __init__(self, bns: list[BNLayer]):
        self.bns = bns
        self.axes = {bn.name: _layer_axis(bn.layer) for bn in bns}
        self.channels = {bn.name: int(bn.layer.moving_mean.shape[0]) for bn in bns}
        self.calls: list[str] = []
        self.outputs: dict | None = None
        self.reference: dict | None = None
        self._gaps: dict[str, float] = {}
        self.pooled: dict | None = None
        self.only: str | None = None
        self._tapped = []
        try:
            for bn in bns:
                self._tap(bn)
        except BaseException:
            self.close()
            raise

    def _tap(self, bn: BNLayer) -> None:
        original = bn.layer.call

        def call(*args, **kwargs):
            self.calls.append(bn.name)
            if self.pooled is not None and self.only in (None, bn.name):
                x = args[0] if args else kwargs["inputs"]
                self.pooled[bn.name].add(*_moments(x, self.axes[bn.name], self.channels[bn.name]))
                if self.only is not None:
                    raise _Stop
            out = original(*args, **kwargs)
            if self.outputs is not None:
                self.outputs[bn.name] = np.asarray(out)
            elif self.reference is not None:  # compared at once: one set of outputs is held, not two
                self._gaps[bn.name] = _largest_gap(out, self.reference[bn.name])
            return out

        object.__setattr__(bn.layer, "call", call)
        self._tapped.append(bn.layer)

    def run(self, model, batch: list, training: bool, keep: bool = False, pooled: dict | None = None,
            only: str | None = None) -> dict | None:
        """One forward pass; ``keep``: return each layer's output; ``pooled``: add each layer's input moments
        (``only``: this layer's, then stop)."""
        self.calls, self.outputs, self.pooled, self.only = [], ({} if keep else None), pooled, only
        try:
            model(batch[0] if len(batch) == 1 else batch, training=training)
        except _Stop:
            pass
        finally:
            self.pooled, self.only = None, None
        return self.outputs

    def gaps(self, model, batch: list, reference: dict) -> dict[str, float]:
        """One inference-mode pass: each layer's largest |output - reference output|."""
        self._gaps, self.reference = {}, reference
        try:
            self.run(model, batch, training=False)
        finally:
            self.reference = None
        return self._gaps

    def close(self) -> None:
        for layer in self._tapped:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")
        self._tapped = []


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


def recompute_bn_moments(model, bns: list[BNLayer], frozen: list[BNLayer], xs: list, dtypes: list, n: int,
                         batch_size: int, method: str, progress: bool) -> tuple[dict, dict, dict]:
    """Pool each BN layer's input moments over the first ``n`` samples, in consecutive batches.

    ``train``: one forward pass per batch with the whole model in training mode,
    every layer's input read at once. ``sequential``: layer by layer in the order
    the layers run, the model in inference mode, each layer's new statistics
    assigned (in memory only) before the next layer is measured. Batches are merged
    exactly by ``PooledMoments`` (population variance over all samples).

    Inference-vs-training gaps: on the first batch, the largest |inference-mode
    output - training-mode output| of each layer, before (the stored statistics) and
    after (the new ones, assigned to the loaded model in memory only). Training mode
    never reads the moving statistics, so one training-mode pass serves both.

    Returns:
        ``(pooled, gaps_before, gaps_after)``, keyed by layer name.

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
    first = next(batches())
    taps = _Taps(bns)
    try:
        # The first pass is a training-mode pass on the first batch: its outputs are the
        # gaps' reference, and its calls show each layer running once, in which order.
        if method == "train":
            bar = Progress(steps, progress, "repair")
            train = None
            for batch in batches():
                out = taps.run(model, batch, training=True, keep=train is None, pooled=pooled)
                if train is None:
                    _check_calls(bns, taps.calls)
                    train = out
                bar.step()
        else:
            train = taps.run(model, first, training=True, keep=True)
            _check_calls(bns, taps.calls)
        order = list(dict.fromkeys(taps.calls))
        for bn in every:  # undo Keras' own moving-average updates of the training-mode passes
            _assign(bn, *snapshot[bn.name])
        gaps_before = taps.gaps(model, first, train)
        if method == "train":
            for bn in bns:
                _assign(bn, pooled[bn.name].mean, pooled[bn.name].variance)
        else:
            by_name = {bn.name: bn for bn in bns}
            bar = Progress(steps * len(order), progress, "repair")
            for name in order:
                for batch in batches():
                    taps.run(model, batch, training=False, pooled=pooled, only=name)
                    bar.step()
                _assign(by_name[name], pooled[name].mean, pooled[name].variance)
        gaps_after = taps.gaps(model, first, train)
    finally:
        taps.close()
    return pooled, gaps_before, gaps_after


def _largest_gap(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def _np_dtype(variable) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else dtype.name


def variable_values(variable) -> np.ndarray:
    """A Keras variable's (or array's) values as numpy."""
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
