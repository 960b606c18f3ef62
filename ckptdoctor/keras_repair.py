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
repaired; running the model and measuring each layer's input is ``keras_measure``'s
part. Here each layer's file key is the one the file's layout gives its path
(``backbone/block/bn2``), checked against the loaded variable's bytes before
anything runs. Frozen layers (``trainable=False``, or inside a nested model with
``trainable=False``) are left as they are; a layer that runs more than once per
forward pass is refused.

Before anything is written, the repair checks its own result (``selfcheck``): the
final output's gap to the BN-training reference (BN layers in training mode, every
other layer in inference mode) with the stored and with the new statistics. A repair
that does not shrink it writes nothing (no output, no in-place swap, no backup, no
``--report``) and returns a refused report with a ``repair-not-improved`` finding.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
import zipfile
from types import SimpleNamespace

import numpy as np

from .data import load_data
from .errors import BadDataError, CkptDoctorError, OutputExistsError, UnsupportedFormatError
from .keras_measure import (BNLayer, variable_values, check_loadable, check_model_inputs,
                            held_in_inference, keras_module, load_keras_model, recompute_bn_moments,
                            trainable_bn_layers)
from .repairing import check_options
from .keras_inspect import open_keras_reader
from .keras_model import describe_keras_file, lambda_layers, model_inputs
from .selfcheck import verdict

__all__ = ["repair_keras", "default_output"]


def default_output(path: str) -> str:
    """``model.keras`` -> ``model-repaired.keras``."""
    for ext in (".weights.h5", ".keras", ".hdf5", ".h5"):
        if path.endswith(ext):
            return path[: -len(ext)] + "-repaired" + ext
    return path + "-repaired"


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
            want = variable_values(getattr(bn.layer, attr))
            if have.dtype != want.dtype or have.shape != want.shape or have.tobytes() != want.tobytes():
                raise UnsupportedFormatError(
                    f"cannot tell where {where} stores BN layer {bn.name}'s {attr}: {key} holds other values than "
                    "Keras loaded; nothing was written")
            stored[key] = have
    return stored


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


#: What switches the BN layers between training and inference mode (the report's ``training_flag``): the
#: model always runs in inference mode, and each BN layer's own call is handed training=True or False.
TRAINING_ARGUMENT = "model(x, training=False), each BN layer's call(training=True|False)"
#: The report's explanation of the gap columns (as the graph repair's).
GAP_NOTE = ("gaps: largest |inference-mode output - reference output| of each BN layer on the first batch; the "
            "reference runs the BN layers in training mode and every other layer in inference mode")


def frozen_note(frozen: list[BNLayer]) -> list[str]:
    """The report note about BN layers left as they are."""
    if not frozen:
        return []
    return [f"left as they are: frozen BN layers ({'; '.join(f'{bn.name}: {bn.reason}' for bn in frozen)}); "
            "the model learned with their stored statistics, in training mode too"]


def variant_notes(bns: list[BNLayer]) -> list[str]:
    """Report notes on BN variants whose extra state repair leaves as it is."""
    renorm = [bn.name for bn in bns if getattr(bn.layer, "renorm", False) is True]
    if not renorm:
        return []
    return [f"batch renormalization (renorm=True: {', '.join(renorm)}): measured as plain batch normalization; "
            "renorm_mean and renorm_stddev (and Keras 3's moving_stddev), used only in training mode, are left as "
            "they are"]


def repair_keras(path: str, data: str, input: str | None = None, batch_size: int = 256,
                 max_samples: int | None = None, method: str = "train", output: str | None = None,
                 in_place: bool = False, dry_run: bool = False, force: bool = False, report: str | None = None,
                 unsafe: bool = False, progress: bool = False):
    """Recompute every trainable BN layer's moving mean and variance of a Keras model from data.

    Args: as ``repairing.repair``; ``input`` names the model input a single array
    feeds (default: the only one); ``unsafe`` allows Lambda layers (their code runs).

    Returns:
        A ``RepairReport``; ``refused`` (nothing written) when the output check finds the new statistics
        no closer to the reference than the stored ones.
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

        check_loadable(config, path)
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
        held = held_in_inference(K, model)
        measured = recompute_bn_moments(model, bns, frozen, xs, dtypes, n, batch_size, method, progress)
        replacements, rows = replacement_rows(bns, weights, measured.pooled, stored, n, measured.gaps_before,
                                              measured.gaps_after)
        refused, findings = verdict(measured.check, held)

        written = {"untouched": 0, "updated": 0}
        backup = None
        if not dry_run and not refused:
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

    notes = frozen_note(frozen) + variant_notes(bns)
    result = RepairReport(
        checkpoint=path, graph=f"{path} (model config, {'tf-keras' if legacy else 'Keras 3'})", data=data,
        inputs=tuple(names), training_flag=TRAINING_ARGUMENT, method=method, batch_size=batch_size, samples=n,
        layers=tuple(rows), output=None if dry_run or refused else out_path, backup=backup, dry_run=dry_run,
        untouched=written["untouched"], updated=written["updated"], notes=tuple(notes), gap_note=GAP_NOTE,
        held_in_inference=held, output_check=measured.check, findings=findings, refused=refused,
    )
    if report and not refused:
        from .h5report import write_repair_report

        write_repair_report(result, report, force=force)
    return result

