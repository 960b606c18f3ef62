"""A weights-only Keras file run for repair: the model built from ``--graph``, the file's weights loaded into it.

``.weights.h5`` and sharded ``.weights.json`` hold no model. ``--graph`` names one
(``keras_build.build_model``: a ``.keras``, a config ``.json`` or a ``package.module:function``
factory). Where Keras stores each of the built model's variables is asked of Keras itself: its
saving walk (``saving_lib._save_state``) is run into a recorder that writes nothing, which gives
every variable's key (``layers/functional/layers/batch_normalization/vars/2``) and shape. The
file is checked against those keys before anything is loaded, so a model that does not fit the
weights is refused with a list of what differs; then ``model.load_weights`` loads them (Keras
reads the manifest and its shards itself), and each BN layer's statistics are found under the
key its variables have.
"""

from __future__ import annotations

import warnings

from ckptdoctor.errors import UnsupportedFormatError

__all__ = ["saved_variables", "weights_runner", "config_runner"]

#: Roots of a weights file that hold no model variables (the optimizer's state, metrics).
_NOT_MODEL = ("optimizer", "optimizer_weights", "metrics")


def _saving_lib(K):
    if K.__name__.split(".")[0] == "tf_keras":
        from tf_keras.src.saving import saving_lib
    else:
        from keras.src.saving import saving_lib
    return saving_lib


def saved_variables(K, model) -> dict:
    """Key -> variable for every variable Keras' saving walk stores for ``model`` (nothing is written)."""
    saving_lib = _saving_lib(K)

    class Recorder(saving_lib.H5IOStore):  # type: ignore[name-defined]
        """Keras' saving walk writes each saveable's variables into ``make(path)``; this keeps them."""

        def __init__(self):  # no file
            self.made: dict[str, dict] = {}

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            return self.made.setdefault(path, {})

    store = Recorder()
    saving_lib._save_state(model, store, None, "", set())
    return {
        (f"{path}/vars/{i}" if path else f"vars/{i}"): v for path, made in store.made.items() for i, v in made.items()
    }


def _shape(v) -> tuple:
    return tuple(int(d) for d in getattr(v, "shape", ()))


def _check_matches(spec: str, path: str, saved: dict, shapes: dict, model: str | None = None) -> None:
    """Refuse a model whose variables are not the file's: list what is missing, extra, or of another shape.

    The optimizer's state is left out on both sides: a factory's model may be compiled, or not.
    """
    stored = {k: s for k, s in shapes.items() if k.split("/")[0] not in _NOT_MODEL}
    saved = {k: v for k, v in saved.items() if k.split("/")[0] not in _NOT_MODEL}
    missing = sorted(set(saved) - set(stored))
    extra = sorted(set(stored) - set(saved))
    other = sorted(k for k in set(saved) & set(stored) if _shape(saved[k]) != tuple(stored[k]))
    if not (missing or extra or other):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its variables are not in the file ({', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} weights of the file belong to none of its variables ({', '.join(extra[:3])})")
    if other:
        k = other[0]
        parts.append(
            f"{len(other)} have another shape ({k}: {list(stored[k])} in the file, {list(_shape(saved[k]))} in the "
            "model)"
        )
    raise UnsupportedFormatError(
        f"the model {model or f'--graph {spec} builds'} does not match {path}: {'; '.join(parts)}; "
        + ("pass the model that wrote these weights" if model is None else "save the model again")
    )


def _keys_of(saved: dict):
    """``keys_of`` for ``bind_runner``: each BN layer's statistics under the key Keras' saving walk gives them."""
    key_of = {id(v): k for k, v in saved.items()}

    def keys_of(bns: list) -> dict:
        keys = {}
        for bn in bns:
            named = {}
            for attr in ("moving_mean", "moving_variance", "gamma", "beta"):
                variable = getattr(bn.layer, attr, None)
                if variable is not None and id(variable) in key_of:
                    named[attr] = key_of[id(variable)]
            if "moving_mean" not in named or "moving_variance" not in named:
                raise UnsupportedFormatError(
                    f"Keras' saving walk does not store BN layer {bn.name}'s moving statistics"
                )
            keys[bn.name] = named
        return keys

    return keys_of


def weights_runner(
    spec: str,
    path: str,
    shapes: dict,
    arrays: dict,
    *,
    data: str,
    input: str | None,
    unsafe: bool,
    read,
):
    """Build the model ``spec`` describes, load the weights file ``path`` into it, and bind it to the data.

    Args:
        shapes: the file's tensors, key -> shape (checked against the model's variables first).
        arrays, data, input: as for ``keras_runner.load_runner``.
        unsafe: Lambda layers of a ``.keras``/``.json`` description are deserialized.
        read: key -> the stored value.
    """
    from ckptdoctor.runtime.keras_build import build_model
    from ckptdoctor.runtime.keras_model import input_arrays, input_names
    from ckptdoctor.runtime.keras_runner import bind_runner

    K, model = build_model(spec, unsafe)
    legacy = K.__name__.split(".")[0] == "tf_keras"
    saved = saved_variables(K, model)
    _check_matches(spec, path, saved, shapes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras' UserWarnings would bury the report on stderr
            model.load_weights(path)
    except Exception as e:  # Keras raises ValueError, KeyError, OSError... when the file does not fit
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UnsupportedFormatError(f"Keras cannot load {path} into the model --graph {spec} builds: {first}") from e
    keys_of = _keys_of(saved)

    names, xs = input_arrays(None, arrays, data, input, names=input_names(model))
    return bind_runner(
        K, model, path, names, xs, keys_of=keys_of, read=read, graph=f"{spec} (--graph, {{keras}})", legacy=legacy
    )


def config_runner(
    path: str,
    config: dict,
    code: list[str],
    shapes: dict,
    arrays: dict,
    *,
    data: str,
    input: str | None,
    unsafe: bool,
    read,
    graph: str,
):
    """The model of a file whose weights Keras cannot load itself, with the values ckptdoctor read assigned.

    An npz-weights ``.keras``: Keras 3.9 and later refuse its pickled members, and ckptdoctor reads
    them with its restricted unpickler (``readers.npz_pickle``). The model is built from the file's
    config as ``keras.saving.load_model`` builds it (``saving_lib._model_from_config``, safe mode
    unless ``unsafe``, not compiled); each variable is assigned the value stored under the key
    Keras' own saving walk gives it (``saved_variables``), after every key and shape is checked.

    Args:
        config: the file's model config; ``code``: its Lambda layers, refused unless ``unsafe``.
        shapes: the file's tensors, key -> shape.
        arrays, data, input: as for ``keras_runner.load_runner``; ``read``: key -> the stored value.
        graph: what described the model, for the report (``{keras}`` is filled in).
    """
    import json

    from ckptdoctor.runtime.keras_model import check_loadable, input_arrays, keras_module
    from ckptdoctor.runtime.keras_runner import bind_runner

    if code and not unsafe:
        raise UnsupportedFormatError(
            f"{path} has Lambda layers ({', '.join(code[:3])}) whose Python code would run on load: "
            "pass --unsafe only if you trust the file"
        )
    names, xs = input_arrays(config, arrays, data, input)
    check_loadable(config, path)
    K, legacy = keras_module(None, "keras-v3")
    saving_lib = _saving_lib(K)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = saving_lib._model_from_config(json.dumps(config), None, False, not unsafe)
    except Exception as e:  # Keras raises many kinds for a config it cannot build
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UnsupportedFormatError(
            f"Keras cannot build the model of {path} from its config: {first} (custom layers must be importable "
            "and registered; ckptdoctor never runs code from the file)"
        ) from e
    saved = {k: v for k, v in saved_variables(K, model).items() if k.split("/")[0] not in _NOT_MODEL}
    _check_matches(path, path, saved, shapes, model=f"that {path}'s config builds")
    for key, variable in saved.items():
        variable.assign(read(key))
    return bind_runner(K, model, path, names, xs, keys_of=_keys_of(saved), read=read, graph=graph, legacy=legacy)
