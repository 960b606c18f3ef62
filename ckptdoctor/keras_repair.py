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

import numpy as np

from .data import check_data, load_data
from .errors import BadDataError, CkptDoctorError, OutputExistsError, UnsupportedFormatError
from .estimator import PooledMoments
from .repairing import check_options
from .keras_inspect import open_keras_reader
from .keras_model import BN_CLASSES, describe_keras_file, lambda_layers, model_inputs

__all__ = ["repair_keras", "default_output"]


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


def trainable_bn_layers(K, model, path: str) -> tuple[list, list[str]]:
    """The loaded model's trainable top-level BN layers, and the names of the frozen ones.

    Raises:
        UnsupportedFormatError: BN layers inside nested models, or no trainable BN layer.
    """
    bn_type = K.layers.BatchNormalization
    all_bn = [layer for layer in model.layers if isinstance(layer, bn_type) or type(layer).__name__ in BN_CLASSES]
    nested = [layer.name for layer in model.layers if hasattr(layer, "layers") and
              any(type(sub).__name__ in BN_CLASSES for sub in layer._flatten_layers())]
    if nested:
        raise UnsupportedFormatError(f"BN layers inside the nested model(s) {', '.join(nested)}: repair handles "
                                     "BN layers of the top-level model only")
    frozen = [layer.name for layer in all_bn if not layer.trainable]
    bns = [layer for layer in all_bn if layer.trainable]
    if not bns:
        raise UnsupportedFormatError(f"{path} has no trainable BatchNormalization layer: nothing to repair")
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


def recompute_bn_moments(K, model, bns: list, xs: list, dtypes: list, n: int, batch_size: int, method: str,
                         progress: bool) -> dict[str, PooledMoments]:
    """Pool each BN layer's input moments over the first ``n`` samples, in consecutive batches.

    ``train``: one forward pass per batch in training mode, every layer's input read
    at once. ``sequential``: layer by layer in inference mode, each layer's new
    statistics assigned (in memory only) before the next layer is measured. Batches
    are merged exactly by ``PooledMoments`` (population variance over all samples).
    """
    from .repairing import Progress

    try:
        probe = K.Model(model.inputs, [layer.input for layer in bns])
    except (ValueError, AttributeError) as e:
        raise UnsupportedFormatError(f"cannot reach the inputs of the BN layers from the model inputs: {e}") from e

    def batches():
        for start in range(0, n, batch_size):
            yield [np.asarray(a[start:start + batch_size]).astype(d, copy=False) for a, d in zip(xs, dtypes)]

    channels = {layer.name: int(layer.moving_mean.shape[0]) for layer in bns}
    axes = {layer.name: _layer_axis(layer) for layer in bns}
    pooled = {layer.name: PooledMoments(channels[layer.name]) for layer in bns}
    steps = -(-n // batch_size)
    if method == "train":
        bar = Progress(steps, progress, "repair")
        for batch in batches():
            outs = probe(batch, training=True)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for layer, value in zip(bns, outs):
                pooled[layer.name].add(*_moments(value, axes[layer.name], channels[layer.name]))
            bar.step()
        return pooled
    bar = Progress(steps * len(bns), progress, "repair")
    for layer in bns:
        one = K.Model(model.inputs, layer.input)
        for batch in batches():
            value = one(batch, training=False)
            pooled[layer.name].add(*_moments(value, axes[layer.name], channels[layer.name]))
            bar.step()
        p = pooled[layer.name]
        layer.moving_mean.assign(p.mean.astype(np.dtype(_np_dtype(layer.moving_mean))))
        layer.moving_variance.assign(p.variance.astype(np.dtype(_np_dtype(layer.moving_variance))))
    return pooled


def replacement_rows(bns: list, weights: dict[str, dict], pooled: dict, stored: dict, n: int) -> tuple[dict, list]:
    """The new statistics keyed as stored (in the stored dtype), and one report row per layer.

    Args:
        weights: layer name -> {"moving_mean": key, "moving_variance": key, "gamma": key, "beta": key}.
        stored: key -> the stored value before repair.
    """
    from .repairing import layer_row

    replacements, rows = {}, []
    for layer in bns:
        w, p = weights[layer.name], pooled[layer.name]
        mm, mv = w["moving_mean"], w["moving_variance"]
        replacements[mm] = p.mean.astype(stored[mm].dtype)
        replacements[mv] = p.variance.astype(stored[mv].dtype)
        spec = SimpleNamespace(layer=layer.name, moving_mean=mm, moving_variance=mv, gamma=w.get("gamma"),
                               beta=w.get("beta"), channels=int(p.mean.shape[0]))
        rows.append(layer_row(spec, p, stored, n, {}, {}))
    return replacements, rows


def frozen_note(frozen: list[str]) -> list[str]:
    """The report note about BN layers left as they are."""
    if not frozen:
        return []
    return [f"left as they are: BN layers with trainable=False ({', '.join(frozen)}); the model learned with "
            "their stored statistics, in training mode too"]


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
        for layer in bns:
            if layer.name not in keys or "moving_mean" not in keys[layer.name].weights \
                    or "moving_variance" not in keys[layer.name].weights:
                raise UnsupportedFormatError(f"the file does not store the moving statistics of BN layer {layer.name}")
        names = model_inputs(config) or ["input"]
        n, dtypes = check_model_inputs(model, xs, names, data, max_samples)
        stored = {}
        for layer in bns:
            for w in ("moving_mean", "moving_variance"):
                key = keys[layer.name].weights[w]
                stored[key] = reader.read(key)
        pooled = recompute_bn_moments(K, model, bns, xs, dtypes, n, batch_size, method, progress)
        replacements, rows = replacement_rows(bns, {name: k.weights for name, k in keys.items()}, pooled, stored, n)

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

    notes = ["inference-vs-training gaps are not measured for Keras models"] + frozen_note(frozen)
    result = RepairReport(
        checkpoint=path, graph=f"{path} (model config, {'tf-keras' if legacy else 'Keras 3'})", data=data,
        inputs=tuple(names), training_flag=None, method=method, batch_size=batch_size, samples=n,
        layers=tuple(rows), output=None if dry_run else out_path, backup=backup, dry_run=dry_run,
        untouched=written["untouched"], updated=written["updated"], notes=tuple(notes), gap_note="",
    )
    if report:
        from .h5report import write_repair_report

        write_repair_report(result, report, force=force)
    return result


def _np_dtype(variable) -> str:
    dtype = variable.dtype
    return dtype if isinstance(dtype, str) else dtype.name
