"""A Keras model loaded to be repaired: which Keras, its BN layers at any depth, what stays in inference mode.

Which Keras: a file written by Keras 3 is loaded with ``keras``; one written by
tf-keras / Keras 2 with ``tf_keras`` (from its ``keras_version``), always in safe mode.
BN layers are found at any depth of nested models (``find_bn_layers``); a layer is
frozen when it, or any model holding it, has ``trainable=False``, and repair leaves it
as it is. ``held_in_inference`` names the layers that have a training mode but stay in
inference mode while the BN layers are measured (dropout, noise, stochastic depth).
Running the model is ``keras_runner``'s part.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import numpy as np

from ckptdoctor.errors import BadDataError, UnsupportedFormatError
from ckptdoctor.readers.keras_config import BN_CLASSES, config_layers, model_inputs
from ckptdoctor.runtime.base import Input, Target

__all__ = [
    "BNLayer",
    "keras_module",
    "import_keras",
    "load_keras_model",
    "find_bn_layers",
    "trainable_bn_layers",
    "check_loadable",
    "held_in_inference",
    "variable_values",
    "check_stored_values",
    "input_arrays",
    "frozen_note",
    "variant_notes",
    "targets",
    "bind_inputs",
]


def keras_module(version: str | None, fmt: str):
    """Keras 3 for files it wrote, tf-keras for Keras 2 files."""
    from ckptdoctor.tfcompat import import_tensorflow

    import_tensorflow()
    legacy = version is not None and version.split(".")[0] == "2"
    if fmt == "keras-legacy-h5" and version is None:
        legacy = True
    try:
        K = import_keras(legacy)
    except ImportError as e:
        raise UnsupportedFormatError(
            f"this file was written by Keras {version or '?'}, which needs "
            f"{'tf-keras' if legacy else 'keras>=3'} to run: pip install {'tf-keras' if legacy else 'keras'}"
        ) from e
    return K, legacy


def import_keras(legacy: bool):
    """``tf_keras`` (``legacy``) or ``keras``, imported as TensorFlow is (``collector.long_lived_imports``: the
    garbage collector paused, then what they created frozen).

    Raises:
        ImportError: that Keras is not installed.
    """
    from ckptdoctor.collector import long_lived_imports

    with long_lived_imports():
        if legacy:
            import tf_keras

            return tf_keras
        import keras

        return keras


def load_keras_model(K, legacy: bool, path: str, unsafe: bool):
    try:
        if legacy:
            return K.models.load_model(path, compile=False, safe_mode=not unsafe)
        return K.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedFormatError(
            f"Keras cannot load {path}: {first[:300]} (custom layers must be importable "
            "and registered; ckptdoctor never runs code from the file)"
        ) from e


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
                "it and repair that file"
            )


class BNLayer(NamedTuple):
    """A BN layer of a loaded Keras model, at any nesting depth."""

    name: str  # its path from the top model: "bn1", "backbone/block/bn2"
    layer: Any  # the Keras layer
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
        weighted = (
            [sub for sub in container._flatten_layers(include_self=False) if sub.weights]
            if hasattr(container, "_flatten_layers")
            else []
        )
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
                    reason = (
                        f"inside nested model {frozen_by}, which has trainable=False"
                        if frozen_by
                        else "the whole model has trainable=False"
                    )
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
            "to recalibrate one, set trainable=True on it and on the models holding it, and save the model again"
        )
    return bns, frozen


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
        if (
            cls is not None
            and getattr(type(layer), "call", None) is getattr(cls, "call", ())
            and getattr(layer, "quantization_mode", None) in (None, "int8", "int4")
        ):
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


def variable_values(variable) -> np.ndarray:
    """A Keras variable's (or array's) values as numpy."""
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable)


def input_arrays(
    config, arrays: dict, data: str, input: str | None, names: list[str] | None = None
) -> tuple[list[str], list]:
    """The model's input names (from its config, or ``names``) and the data arrays in their order.

    ``input`` names the input a single array feeds (default: the only one).
    """
    names = names or model_inputs(config) or ["input"]
    if input and None in arrays:
        arrays = {input: arrays[None]}
    if None in arrays:
        if len(names) != 1:
            raise BadDataError(
                f"the model has {len(names)} inputs ({', '.join(names)}): pass an .npz "
                "whose keys are these names, or an HDF5 file with one dataset per name"
            )
        return names, [arrays[None]]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadDataError(
            f"{data} has no array for the model input(s) {', '.join(missing)} "
            f"(it holds {', '.join(sorted(arrays)) or 'nothing'}): name the arrays after the inputs "
            "(TFRecord features: or map them with --input NAME=FEATURE)"
        )
    return names, [arrays[n] for n in names]


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
                    "Keras loaded; nothing was written"
                )
            stored[key] = have
    return stored


def frozen_note(frozen: list[BNLayer]) -> list[str]:
    """The report note about BN layers left as they are."""
    if not frozen:
        return []
    return [
        f"left as they are: frozen BN layers ({'; '.join(f'{bn.name}: {bn.reason}' for bn in frozen)}); "
        "the model learned with their stored statistics, in training mode too"
    ]


def variant_notes(bns: list[BNLayer]) -> list[str]:
    """Report notes on BN variants whose extra state repair leaves as it is."""
    renorm = [bn.name for bn in bns if getattr(bn.layer, "renorm", False) is True]
    if not renorm:
        return []
    return [
        f"batch renormalization (renorm=True: {', '.join(renorm)}): measured as plain batch normalization; "
        "renorm_mean and renorm_stddev (and Keras 3's moving_stddev), used only in training mode, are left as "
        "they are"
    ]


def targets(bns: list, keys: dict[str, dict], stored: dict) -> list[Target]:
    """One ``Target`` per trainable BN layer, keyed as stored; the new values are written in the stored dtype."""
    out = []
    for bn in bns:
        w = keys[bn.name]
        mm, mv = w["moving_mean"], w["moving_variance"]
        out.append(
            Target(
                bn.name,
                mm,
                mv,
                w.get("gamma"),
                w.get("beta"),
                int(stored[mm].shape[0]),
                {mm: stored[mm], mv: stored[mv]},
                {mm: stored[mm].dtype, mv: stored[mv].dtype},
            )
        )
    return out


def bind_inputs(model, names: list[str], xs: list) -> list[Input]:
    """The data arrays bound to the loaded model's inputs (its shapes and dtypes)."""
    if len(xs) != len(model.inputs):
        raise UnsupportedFormatError(f"the loaded model has {len(model.inputs)} inputs, its config names {len(xs)}")
    return [
        Input(
            names[i] if i < len(names) else str(i),
            a,
            list(t.shape),
            t.dtype if isinstance(t.dtype, str) else t.dtype.name,
        )
        for i, (t, a) in enumerate(zip(model.inputs, xs))
    ]


def input_names(model) -> list[str]:
    """A loaded model's input names, in call order."""
    try:
        names = model_inputs({"config": model.get_config()})
    except Exception:  # noqa: BLE001 - a subclassed model may not serialize its config
        names = []
    if len(names) == len(model.inputs):
        return names
    return [str(getattr(t, "name", f"input_{i}")).split(":")[0] for i, t in enumerate(model.inputs)]
