"""``repair`` for SavedModel directories written by tf-keras (``model.save("dir")``).

The model is rebuilt by ``tf_keras.models.load_model`` from ``keras_metadata.pb``
(Lambda layers listed there are refused before loading unless ``--unsafe``); the
BN input moments are pooled exactly as for ``.keras``/``.h5`` models (the helpers
of ``keras_repair``). The output directory is a copy of the input in which only
the variables bundle ``variables/variables.*`` is rewritten, by
``writer.write_checkpoint`` from the input bundle's own tensors with only the moving
means and variances replaced; every other file is copied byte for byte.

Which bundle key holds which layer's statistics: tf-keras tracks the j-th layer of a
model's ``layers`` as its child ``layer-{j}`` at every nesting level, and the bundle's
object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``) records every such edge, so a BN
layer's moving mean is the ``VARIABLE_VALUE`` of the node reached by
``layer-{j}/.../layer-{k}/moving_mean``. Its key is whatever TensorFlow chose
(``layer_with_weights-1/moving_mean/.ATTRIBUTES/VARIABLE_VALUE`` for a top-level
layer, ``variables/4/.ATTRIBUTES/VARIABLE_VALUE`` for one inside a nested model).
The mapping is checked, not trusted: the stored bytes under that key must equal the
loaded layer's variable before anything is computed.

The directory is assembled in a hidden ``.ckptdoctor-tmp-*`` folder beside the
output, verified, and only then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings

from .constants import KERAS_METADATA_PB, OBJECT_GRAPH_KEY, SAVED_MODEL_PB, SAVED_MODEL_VARIABLES
from .data import load_data
from .errors import CkptDoctorError, CorruptCheckpointError, OutputExistsError, UnsupportedFormatError
from .keras_model import CODE_CLASSES, lambda_layers, model_inputs
from .keras_measure import (check_loadable, check_model_inputs, held_in_inference, keras_module, load_keras_model,
                            recompute_bn_moments, trainable_bn_layers)
from .keras_repair import (GAP_NOTE, TRAINING_ARGUMENT, check_stored_values, frozen_note, input_arrays,
                           replacement_rows, variant_notes)
from .repairing import check_options
from .selfcheck import verdict

__all__ = ["is_saved_model", "read_keras_metadata", "repair_saved_model"]

_BN_WEIGHTS = ("moving_mean", "moving_variance", "gamma", "beta")


def is_saved_model(path: str) -> bool:
    """A directory holding ``saved_model.pb``."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SAVED_MODEL_PB))


def read_keras_metadata(path: str) -> tuple[dict | None, list[str], str | None]:
    """The model config, the Lambda layers and the Keras version from ``keras_metadata.pb``.

    ``keras_metadata.pb`` is a ``SavedMetadata`` message: repeated ``nodes`` (field 1),
    each with ``node_path`` (3, ``root``, ``root.layer-3``), ``identifier`` (4) and a
    JSON ``metadata`` string (5). The root node's JSON carries the model's config;
    every layer node's names its class, which also finds Lambda layers of models
    without a config (subclassed ones).

    Returns:
        ``(config, lambda layer names, keras_version)``; ``config`` is
        ``{"class_name": ..., "config": ...}`` or None.
    """
    from .readers.protowire import WireFormatError, iter_fields

    file = os.path.join(path, KERAS_METADATA_PB)
    try:
        with open(file, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise CorruptCheckpointError(f"cannot read {file}: {e.strerror or e}") from e
    config, version, code = None, None, []
    try:
        for field, _wtype, node in iter_fields(buf):
            if field != 1 or not isinstance(node, bytes):
                continue
            parts = {f: v for f, _w, v in iter_fields(node) if isinstance(v, bytes)}
            node_path = parts.get(3, b"").decode("utf-8", "replace")
            meta = json.loads(parts.get(5, b"{}").decode("utf-8"))
            if not isinstance(meta, dict):
                continue
            if meta.get("class_name") in CODE_CLASSES:
                code.append(meta.get("name") or node_path)
            if node_path == "root":
                version = meta.get("keras_version")
                if isinstance(meta.get("config"), dict):
                    config = {"class_name": meta.get("class_name", ""), "config": meta["config"]}
    except (WireFormatError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{file} is not a readable keras_metadata.pb ({e})") from e
    code += [name for name in lambda_layers(config) if name not in code]
    return config, code, version


def default_output_dir(path: str) -> str:
    """``saved_model_dir`` -> ``saved_model_dir-repaired``."""
    return os.path.normpath(path) + "-repaired"


def _object_graph(reader) -> list | None:
    """The bundle's decoded ``TrackableObjectGraph`` nodes, or None when it has none."""
    from .readers.protowire import WireFormatError, decode_object_graph

    if OBJECT_GRAPH_KEY not in {e.name for e in reader.entries()}:
        return None
    try:
        return decode_object_graph(reader.read(OBJECT_GRAPH_KEY).reshape(-1)[0])
    except (WireFormatError, IndexError, AttributeError) as e:
        raise CorruptCheckpointError(f"the SavedModel's object graph {OBJECT_GRAPH_KEY} is unreadable ({e})") from e


def _bundle_keys(bns: list, reader) -> dict[str, dict]:
    """Each BN layer's bundle keys, found by following the layer's route through the object graph.

    tf-keras tracks the j-th layer of a model's ``layers`` as its child ``layer-{j}`` (and,
    among layers with weights, the i-th as ``layer_with_weights-{i}``), at every nesting
    level; a variable's key is the ``VARIABLE_VALUE`` attribute of the node reached by
    ``layer-{j}/.../moving_mean`` (a nested layer's key is often ``variables/{k}/...``, the
    first route TensorFlow found). The keys are then checked by ``check_stored_values``,
    not trusted.
    """
    nodes = _object_graph(reader)
    if nodes is None:
        raise CorruptCheckpointError(f"{SAVED_MODEL_VARIABLES}.index holds no object graph: it was not written by "
                                     "tf-keras model.save, so its variables cannot be matched to the model's layers")
    out = {}
    for bn in bns:
        keys = {}
        for attr in _BN_WEIGHTS:
            if getattr(bn.layer, attr, None) is None:  # center=False / scale=False
                continue
            node, route = 0, []
            for parent, child in bn.chain:
                route.append(f"layer-{[id(layer) for layer in parent.layers].index(id(child))}")
                node = _child(nodes, node, route[-1], bn.name)
            node = _child(nodes, node, attr, bn.name)
            values = [a[2] for a in nodes[node].attributes if a[0] == "VARIABLE_VALUE"]
            if not values:
                raise UnsupportedFormatError(f"the SavedModel's object graph stores no value for BN layer {bn.name}'s "
                                             f"{attr} ({'/'.join(route)}/{attr}); nothing was written")
            keys[attr] = values[0]
        out[bn.name] = keys
    return out


def _child(nodes: list, node: int, name: str, layer: str) -> int:
    for child, local in nodes[node].children:
        if local == name:
            return child
    raise UnsupportedFormatError(f"the SavedModel's object graph has no {name} on the way to BN layer {layer}: "
                                 "it was not written by the tf-keras that loads it; nothing was written")


def _variables_files(directory: str) -> set[str]:
    """Paths (relative to ``directory``) of the variables bundle's files."""
    folder, base = os.path.split(os.path.join(directory, SAVED_MODEL_VARIABLES))
    if not os.path.isdir(folder):
        return set()
    rel = os.path.relpath(folder, directory)
    return {os.path.join(rel, n) for n in os.listdir(folder)
            if n == base + ".index" or n.startswith(base + ".data-")}


def _files(directory: str, skip: set[str]) -> set[str]:
    found = set()
    for root, _dirs, names in os.walk(directory):
        for n in names:
            rel = os.path.relpath(os.path.join(root, n), directory)
            if rel not in skip:
                found.add(rel)
    return found


def _copy_except_variables(source: str, target: str) -> None:
    """Copy every folder and file of ``source`` into ``target`` but the variables bundle."""
    skip = _variables_files(source)
    for root, dirs, names in os.walk(source):
        rel = os.path.relpath(root, source)
        for d in dirs:
            os.makedirs(os.path.join(target, rel, d), exist_ok=True)
            shutil.copymode(os.path.join(root, d), os.path.join(target, rel, d))
        for n in names:
            if os.path.normpath(os.path.join(rel, n)) not in skip:
                shutil.copy2(os.path.join(root, n), os.path.join(target, rel, n))


def _same_files(source: str, written: str, ignore: set[str]) -> None:
    """Every file of ``source`` outside the bundle is in ``written`` with the same bytes, and nothing else is."""
    src = _files(source, _variables_files(source))
    got = _files(written, _variables_files(written) | ignore)
    if src != got:
        extra = sorted(src ^ got)
        raise CkptDoctorError(f"verification failed: the written folder differs in its files ({extra[0]}); "
                              "nothing was kept")
    for rel in sorted(src):
        a, b = os.path.join(source, rel), os.path.join(written, rel)
        if os.path.getsize(a) != os.path.getsize(b):
            raise CkptDoctorError(f"verification failed: {rel} changed; nothing was kept")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 20), fb.read(1 << 20)
                if x != y:
                    raise CkptDoctorError(f"verification failed: {rel} changed; nothing was kept")
                if not x:
                    break


def _write_directory(source: str, out: str, reader, replacements: dict, in_place: bool) -> tuple[dict, str | None]:
    """Assemble the repaired directory beside ``out``, verify it, rename it into place.

    An existing ``out`` (``--force``) is moved aside first and deleted once the new
    one is in place; ``in_place`` keeps the input as ``<dir>.backup-<UTC time>``.
    """
    from .atomic import temporary_name
    from .writer import OWNER_FILE, temporary_folder, clean_stale_temporaries, write_checkpoint

    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CkptDoctorError(f"the output folder {parent} does not exist: create it or choose --output elsewhere")
    if not os.access(parent, os.W_OK):
        raise CkptDoctorError(f"the output folder {parent} is not writable: choose --output elsewhere")
    backup = None
    if in_place:
        backup = f"{source}.backup-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        if os.path.exists(backup):
            raise OutputExistsError(f"{backup} exists: wait a second and run again, or move it away")
    clean_stale_temporaries(parent)
    tmp = temporary_folder(parent)
    try:
        shutil.copymode(source, tmp)  # mkdtemp's 0700 is not the input's mode
        _copy_except_variables(source, tmp)
        written = write_checkpoint(reader, os.path.join(tmp, SAVED_MODEL_VARIABLES), replacements, meta_path=None)
        _same_files(source, tmp, {OWNER_FILE})
        os.remove(os.path.join(tmp, OWNER_FILE))
        if in_place:
            os.rename(source, backup)
            os.rename(tmp, source)
        elif os.path.lexists(out):
            old = temporary_name(out)
            os.rename(out, old)
            os.rename(tmp, out)
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(tmp, out)
        return written, backup
    except OSError as e:
        raise CkptDoctorError(f"cannot write {out}: {e.strerror or e}; choose a writable place with free space") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def repair_saved_model(path: str, data: str, input: str | None = None, batch_size: int = 256,
                       max_samples: int | None = None, method: str = "train", output: str | None = None,
                       in_place: bool = False, dry_run: bool = False, force: bool = False,
                       report: str | None = None, unsafe: bool = False, progress: bool = False):
    """Recompute every trainable BN layer's moving mean and variance of a tf-keras SavedModel from data.

    Args: as ``keras_repair.repair_keras``; ``output`` is a directory (default
    ``<dir>-repaired``).

    Returns:
        A ``RepairReport``; ``refused`` (nothing written) as ``keras_repair.repair_keras``'s.
    """
    from .readers.bundle import BundleReader
    from .repairing import RepairReport

    check_options(method, batch_size, in_place, output)
    path = os.path.normpath(os.fspath(path))
    if not os.path.isfile(os.path.join(path, KERAS_METADATA_PB)):
        raise UnsupportedFormatError(
            f"{path} is a SavedModel without {KERAS_METADATA_PB} (e.g. written by Keras 3 model.export or "
            "tf.saved_model.save): it holds traced functions but no Keras model to run the BN layers in training "
            "mode, so it cannot be repaired; repair the model it was exported from (.keras, .h5) and export again")
    prefix = os.path.join(path, SAVED_MODEL_VARIABLES)
    if not os.path.isfile(prefix + ".index"):
        raise CorruptCheckpointError(f"{path} has no {SAVED_MODEL_VARIABLES}.index: the SavedModel holds no variables")
    out = path if in_place else os.path.normpath(output or default_output_dir(path))
    if not in_place and os.path.abspath(out) == os.path.abspath(path):
        raise CkptDoctorError(f"--output is the input {path} itself: pass --in-place to replace it (keeping a backup)")
    if not dry_run and not in_place and os.path.lexists(out) and not force:
        raise OutputExistsError(f"{out} exists: pass --force to overwrite it, or choose --output elsewhere")
    if report and os.path.exists(report) and not force:
        raise OutputExistsError(f"{report} exists: pass --force to overwrite it, or choose another --report path")

    config, code, version = read_keras_metadata(path)
    if code and not unsafe:
        raise UnsupportedFormatError(
            f"{path} has Lambda layers ({', '.join(code[:3])}) whose Python code would run on load: "
            "pass --unsafe only if you trust the file")
    arrays = load_data(data)
    if input and None in arrays:
        arrays = {input: arrays[None]}
    xs = input_arrays(config, arrays, data)

    check_loadable(config, path)
    K, _legacy = keras_module(version if version and version.startswith("2") else "2", "keras-saved-model")
    reader = BundleReader(prefix)
    quiet = warnings.catch_warnings()
    quiet.__enter__()
    try:
        warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
        model = load_keras_model(K, True, path, unsafe)
        bns, frozen = trainable_bn_layers(K, model, path)
        keys = _bundle_keys(bns, reader)
        stored = check_stored_values(bns, keys, reader.read, path)  # before anything runs
        names = model_inputs(config) or ["input"]
        n, dtypes = check_model_inputs(model, xs, names, data, max_samples)
        held = held_in_inference(K, model)
        measured = recompute_bn_moments(model, bns, frozen, xs, dtypes, n, batch_size, method, progress)
        replacements, rows = replacement_rows(bns, keys, measured.pooled, stored, n, measured.gaps_before,
                                              measured.gaps_after)
        refused, findings = verdict(measured.check, held)
        written, backup = {"untouched": 0, "updated": 0}, None
        if not dry_run and not refused:
            written, backup = _write_directory(path, out, reader, replacements, in_place)
    finally:
        quiet.__exit__(None, None, None)
        reader.close()

    notes = ([] if dry_run or refused else
             [f"only {SAVED_MODEL_VARIABLES}.* was rewritten; every other file is the input's own"])
    notes += frozen_note(frozen) + variant_notes(bns)
    result = RepairReport(
        checkpoint=path, graph=f"{path} ({KERAS_METADATA_PB}, tf-keras)", data=data, inputs=tuple(names),
        training_flag=TRAINING_ARGUMENT, method=method, batch_size=batch_size, samples=n, layers=tuple(rows),
        output=None if dry_run or refused else out, backup=backup, dry_run=dry_run, untouched=written["untouched"],
        updated=written["updated"], notes=tuple(notes), gap_note=GAP_NOTE, held_in_inference=held,
        output_check=measured.check, findings=findings, refused=refused,
    )
    if report and not refused:
        from .h5report import write_repair_report

        write_repair_report(result, report, force=force)
    return result
