"""``repair`` for Keras models (``.keras`` archives and full legacy ``.h5`` files).

Keras runs only the forward passes; it never writes the output. The model is
loaded with Keras' safe mode (Lambda layers are refused before loading unless the
user passes ``--unsafe``), each BN layer's input moments are pooled over
consecutive batches (``estimator.PooledMoments``), and the new file is a copy of
the input in which only the moving-mean and moving-variance datasets are
overwritten with h5py. Every other byte of the weights, and the config itself,
are therefore the input's own. The copy is written under a temporary name beside
the output, read back with our own readers and compared with the input, and only
then renamed into place.

BN layers at any depth of nested models (a backbone model used as a layer) are
repaired: each layer's input is read where Keras hands it to the layer (``_Taps``),
and its file key is the one the file's layout gives its path (``backbone/block/bn2``),
checked against the loaded variable's bytes before anything runs. Frozen layers
(``trainable=False``, or inside a nested model with ``trainable=False``) are left as
they are; a layer that runs more than once per forward pass is refused. Each
repaired layer's inference-vs-training gap on the first batch is measured with the
stored and with the new statistics (assigned to the loaded model only).

Which Keras: a file written by Keras 3 is loaded with ``keras``; one written by
tf-keras / Keras 2 with ``tf_keras`` (from its ``keras_version``).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
import zipfile
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from .data import check_data, load_data
from .errors import BadDataError, CkptDoctorError, OutputExistsError, UnsupportedFormatError
from .estimator import PooledMoments
from .repairing import check_options
from .keras_inspect import open_keras_reader
from .keras_model import BN_CLASSES, describe_keras_file, lambda_layers, model_inputs

__all__ = ["repair_keras", "default_output", "find_bn_layers", "BNLayer"]


def default_output(path: str) -> str:
    """``model.keras`` -> ``model-repaired.keras``."""
    for ext in (".weights.h5", ".keras", ".hdf5", ".h5"):
        if path.endswith(ext):
            return path[: -len(ext)] + "-repaired" + ext
    return path + "-repaired"


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


def input_arrays(config, arrays: dict, data: str) -> list:
    """The data arrays in the order of the model's inputs (checked before Keras loads anything)."""
    names = model_inputs(config) or ["input"]
    if None in arrays:
        if len(names) != 1:
            raise BadDataError(f"the model has {len(names)} inputs ({', '.join(names)}): pass an .npz "
                               "whose keys are these names, or an HDF5 file with one dataset per name")
        return [arrays[None]]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadDataError(f"{data} has no array for the model input(s) {', '.join(missing)} "
                           f"(it holds {', '.join(sorted(arrays)) or 'nothing'}): name the arrays after the inputs")
    return [arrays[n] for n in names]


def _copy_with(source: str, target: str, fmt: str, replacements: dict) -> None:
    """Copy ``source`` to ``target`` with the datasets in ``replacements`` overwritten."""
    import h5py

    from .readers.keras_archive import WEIGHTS_MEMBER

    def overwrite(h5_path):
        with h5py.File(h5_path, "r+") as f:
            for key, value in replacements.items():
                f[key][...] = value

    if fmt != "keras-v3":
        shutil.copyfile(source, target)
        overwrite(target)
        return
    weights_tmp = target + ".weights-tmp.h5"
    try:
        with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
            for info in zin.infolist():
                if info.filename != WEIGHTS_MEMBER:
                    zout.writestr(info, zin.read(info))
                    continue
                with zin.open(info) as src, open(weights_tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                overwrite(weights_tmp)
                with open(weights_tmp, "rb") as src, zout.open(info, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst)
    finally:
        if os.path.exists(weights_tmp):
            os.remove(weights_tmp)


def _verify(source_reader, written: str, replacements: dict) -> dict:
    """Every tensor of ``written`` equals the source's bytes, or its replacement; the config is the same."""
    back = open_keras_reader(written)
    try:
        if back.model_config != source_reader.model_config:
            raise CkptDoctorError("verification failed: the written model config differs; nothing was kept")
        src = {e.name: e for e in source_reader.entries()}
        got = {e.name: e for e in back.entries()}
        if set(src) != set(got):
            raise CkptDoctorError("verification failed: the written file holds other tensors; nothing was kept")
        untouched = updated = 0
        for name in sorted(src):
            want = replacements[name] if name in replacements else source_reader.read(name)
            have = back.read(name)
            same = want.dtype == have.dtype and want.shape == have.shape and (
                want.tobytes() == have.tobytes() if want.dtype.kind != "O" else bool(np.all(want == have)))
            if not same:
                raise CkptDoctorError(f"verification failed: {name} does not read back as intended; nothing was kept")
            if name in replacements:
                updated += 1
            else:
                untouched += 1
        return {"untouched": untouched, "updated": updated}
    finally:
        back.close()


def _same_config_bytes(source: str, written: str, fmt: str) -> None:
    if fmt != "keras-v3":
        return
    from .readers.keras_archive import CONFIG_MEMBER

    with zipfile.ZipFile(source) as a, zipfile.ZipFile(written) as b:
        for info in a.infolist():
            from .readers.keras_archive import WEIGHTS_MEMBER

            if info.filename != WEIGHTS_MEMBER and a.read(info) != b.read(info.filename):
                raise CkptDoctorError(f"verification failed: {info.filename} changed; nothing was kept")
        if CONFIG_MEMBER not in b.namelist():
            raise CkptDoctorError("verification failed: the written archive has no config; nothing was kept")


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


def check_stored_values(bns: list[BNLayer], keys: dict[str, dict], read, where: str) -> dict:
    """The stored moving statistics, checked to be the loaded layers' own values (the key mapping is
    checked, not trusted). Call before anything runs: a training-mode pass moves them in memory.

    Args:
        keys: layer name -> {"moving_mean": key, "moving_variance": key, ...}.
        read: key -> stored array.

    Raises:
        UnsupportedFormatError: a key holds other values than the loaded variable.
    """
    stored = {}
    for bn in bns:
        for attr in ("moving_mean", "moving_variance"):
            key = keys[bn.name][attr]
            have = read(key)
            want = _numpy(getattr(bn.layer, attr))
            if have.dtype != want.dtype or have.shape != want.shape or have.tobytes() != want.tobytes():
                raise UnsupportedFormatError(
                    f"cannot tell where {where} stores BN layer {bn.name}'s {attr}: {key} holds other values than "
                    "Keras loaded; nothing was written")
            stored[key] = have
    return stored


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
        for start in range(0, n, batch_size):
            yield [np.asarray(a[start:start + batch_size]).astype(d, copy=False) for a, d in zip(xs, dtypes)]

    every = bns + frozen
    snapshot = {bn.name: (_numpy(bn.layer.moving_mean), _numpy(bn.layer.moving_variance)) for bn in every}
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


def replacement_rows(bns: list[BNLayer], weights: dict[str, dict], pooled: dict, stored: dict, n: int,
                     gaps_before: dict | None = None, gaps_after: dict | None = None) -> tuple[dict, list]:
    """The new statistics keyed as stored (in the stored dtype), and one report row per layer.

    Args:
        weights: layer name -> {"moving_mean": key, "moving_variance": key, "gamma": key, "beta": key}.
        stored: key -> the stored value before repair.
    """
    from .repairing import layer_row

    replacements, rows = {}, []
    for bn in bns:
        w, p = weights[bn.name], pooled[bn.name]
        mm, mv = w["moving_mean"], w["moving_variance"]
        replacements[mm] = p.mean.astype(stored[mm].dtype)
        replacements[mv] = p.variance.astype(stored[mv].dtype)
        spec = SimpleNamespace(layer=bn.name, moving_mean=mm, moving_variance=mv, gamma=w.get("gamma"),
                               beta=w.get("beta"), channels=int(p.mean.shape[0]))
        rows.append(layer_row(spec, p, stored, n, gaps_before or {}, gaps_after or {}))
    return replacements, rows


#: What switches the BN layers between training and inference mode (the report's ``training_flag``).
TRAINING_ARGUMENT = "model(x, training=True|False)"
#: The report's explanation of the gap columns (as the graph repair's).
GAP_NOTE = "gaps: largest |inference-mode output - training-mode output| of each BN layer on the first batch"


def frozen_note(frozen: list[BNLayer]) -> list[str]:
    """The report note about BN layers left as they are."""
    if not frozen:
        return []
    return [f"left as they are: frozen BN layers ({'; '.join(f'{bn.name}: {bn.reason}' for bn in frozen)}); "
            "the model learned with their stored statistics, in training mode too"]


def repair_keras(path: str, data: str, input: str | None = None, batch_size: int = 256,
                 max_samples: int | None = None, method: str = "train", output: str | None = None,
                 in_place: bool = False, dry_run: bool = False, force: bool = False, report: str | None = None,
                 unsafe: bool = False, progress: bool = False):
    """Recompute every trainable BN layer's moving mean and variance of a Keras model from data.

    Args: as ``repairing.repair``; ``input`` names the model input a single array
    feeds (default: the only one); ``unsafe`` allows Lambda layers (their code runs).

    Returns:
        A ``RepairReport``.
    """
    from .atomic import atomic_output
    from .repairing import RepairReport

    check_options(method, batch_size, in_place, output)
    path = os.fspath(path)
    out_path = path if in_place else (output or default_output(path))
    if not dry_run and not in_place and os.path.exists(out_path) and not force:
        raise OutputExistsError(f"{out_path} exists: pass --force to overwrite it, or choose --output elsewhere")
    if report and os.path.exists(report) and not force:
        raise OutputExistsError(f"{report} exists: pass --force to overwrite it, or choose another --report path")

    reader = open_keras_reader(path)
    quiet = None
    try:
        fmt, config = reader.format, reader.model_config
        if not config:
            raise UnsupportedFormatError(
                f"{path} holds weights only (no model config): repair needs the model; save it with "
                "model.save('model.keras') (or a full .h5) and repair that")
        code = lambda_layers(config)
        if code and not unsafe:
            raise UnsupportedFormatError(
                f"{path} has Lambda layers ({', '.join(code[:3])}) whose Python code would run on load: "
                "pass --unsafe only if you trust the file")
        layout = describe_keras_file(reader, config)
        keys = {layer.name: layer for layer in layout.bn_layers}
        arrays = load_data(data)
        if input and None in arrays:
            arrays = {input: arrays[None]}
        xs = input_arrays(config, arrays, data)

        K, legacy = keras_module(reader.keras_version, fmt)
        quiet = warnings.catch_warnings()
        quiet.__enter__()
        warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
        model = load_keras_model(K, legacy, path, unsafe)
        bns, frozen = trainable_bn_layers(K, model, path)
        for bn in bns:
            if bn.name not in keys or "moving_mean" not in keys[bn.name].weights \
                    or "moving_variance" not in keys[bn.name].weights:
                raise UnsupportedFormatError(f"the file does not store the moving statistics of BN layer {bn.name}")
        names = model_inputs(config) or ["input"]
        n, dtypes = check_model_inputs(model, xs, names, data, max_samples)
        weights = {name: k.weights for name, k in keys.items()}
        stored = check_stored_values(bns, weights, reader.read, path)
        pooled, gaps_before, gaps_after = recompute_bn_moments(model, bns, frozen, xs, dtypes, n, batch_size, method,
                                                               progress)
        replacements, rows = replacement_rows(bns, weights, pooled, stored, n, gaps_before, gaps_after)

        written = {"untouched": 0, "updated": 0}
        backup = None
        if not dry_run:
            out_dir = os.path.dirname(os.path.abspath(out_path))
            if not os.path.isdir(out_dir):
                raise CkptDoctorError(f"the output folder {out_dir} does not exist: create it or choose --output elsewhere")
            with atomic_output(out_path) as tmp:
                _copy_with(path, tmp, fmt, replacements)
                written = _verify(reader, tmp, replacements)
                _same_config_bytes(path, tmp, fmt)
                if in_place:
                    backup = f"{path}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
                    shutil.copy2(path, backup)
    finally:
        if quiet is not None:
            quiet.__exit__(None, None, None)
        reader.close()

    notes = frozen_note(frozen)
    result = RepairReport(
        checkpoint=path, graph=f"{path} (model config, {'tf-keras' if legacy else 'Keras 3'})", data=data,
        inputs=tuple(names), training_flag=TRAINING_ARGUMENT, method=method, batch_size=batch_size, samples=n,
        layers=tuple(rows), output=None if dry_run else out_path, backup=backup, dry_run=dry_run,
        untouched=written["untouched"], updated=written["updated"], notes=tuple(notes), gap_note=GAP_NOTE,
    )
    if report:
        from .h5report import write_repair_report

        write_repair_report(result, report, force=force)
    return result


def _np_dtype(variable) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else dtype.name


def _numpy(variable) -> np.ndarray:
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)
