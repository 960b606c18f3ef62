"""The weights Keras itself stores for each layer of a model config, learned by rebuilding the layer.

Which weights a layer class stores (DepthwiseConv2D's ``depthwise_kernel``, an LSTM's
``cell/vars/0``, MultiHeadAttention's ``query_dense/...``) changes with Keras; a table kept by
hand falls behind. So the expectation comes from the Keras that wrote the file, when it is
installed: each layer is rebuilt from its config and asked what it saves.

* Keras 3 (``keras_version`` 3.x): every layer is rebuilt alone from its config item, built with
  its ``build_config`` input shape, and walked by Keras' own saving walk into a recorder (nothing
  is written). Keys are relative to the layer's group: ``vars/0``, ``cell/vars/1``. For a Keras 3
  legacy ``.h5`` the keys are the variables' paths without the layer's own name. Results are
  cached per config (names aside), so a model of repeated blocks rebuilds each kind once. The
  results are also kept on disk per installed Keras version (``expect_cache``): when they cover
  every layer of a file, Keras is not imported at all.
* tf-keras (``keras_version`` 2.x, legacy ``.h5``): its configs carry no input shapes, so the
  whole model is rebuilt from its config, as ``load_model`` does; each layer's variable names,
  trainable first (the order tf-keras writes), without their first scope (the layer's own name,
  which a renamed layer does not change): ``kernel``, ``lstm_cell/kernel``.

Only built-in classes are rebuilt: a config naming ``Lambda``, a function, or a class from a
module outside Keras is never deserialized (its layers are "not checked"). Keras is imported
lazily, here only; without it nothing is checked against Keras, never reported missing.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from dataclasses import dataclass, field

from ckptdoctor.formats.keras import expect_cache

__all__ = ["ExpectedWeight", "Expectation", "expect_weights", "legacy_key"]

#: Model classes: their layers are rebuilt one by one, the model itself stores nothing of its own.
_MODELS = frozenset({"Functional", "Sequential", "Model"})
#: Config fields that do not change what a layer stores (left out of the cache key).
_IRRELEVANT = frozenset({"name", "inbound_nodes", "shared_object_id"})

#: What Keras stores for each kind of layer (cache key), asked this process or read from the expectation cache;
#: None: Keras built nothing from the config.
_CACHE: dict[str, tuple | None] = {}
#: The kinds Keras failed to rebuild in this process, with why (never kept on disk: another run asks again).
_FAILED: dict[str, str] = {}
#: Layers (Keras 3: kinds of layers, names aside) checked per file at most: a rebuild is about 2 ms, and a config
#: is cheap to fill with tens of thousands. Real models have at most a few hundred kinds. The bound is on the
#: kinds checked, not on those rebuilt, so that a file's report is the same whatever the cache already holds.
MAX_REBUILDS = 1024


@dataclass(frozen=True)
class ExpectedWeight:
    """One weight Keras stores for a layer.

    Attributes:
        key: where, relative to the layer's group: ``vars/0``, ``cell/vars/1`` (Keras 3 layout) or
            the variable's name without the layer's scope, ``lstm_cell/kernel`` (legacy layout).
        name: the variable's name for messages: ``kernel``, ``cell/kernel``.
        shape: its shape.
    """

    key: str
    name: str
    shape: tuple


@dataclass
class Expectation:
    """What Keras stores for each checked layer (by config path), and which Keras said so."""

    layers: dict = field(default_factory=dict)  # config path -> tuple[ExpectedWeight, ...]
    keras: str | None = None  # "Keras 3.15.1", "tf-keras 2.21.0"; None: no Keras to ask
    unchecked: list = field(default_factory=list)  # (layer path, why)
    reason: str = ""  # why nothing was checked


def legacy_key(name: str) -> str:
    """A legacy variable name without its layer's scope and ``:0``.

    ``lstm/lstm_cell/kernel:0`` -> ``lstm_cell/kernel``.
    """
    name = re.sub(r":\d+$", "", name)
    return name.split("/", 1)[1] if "/" in name else name


def _flavor(keras_version: str | None, layout: str, config: dict) -> str:
    if keras_version:
        return "keras3" if keras_version.split(".")[0] == "3" else "tfkeras"
    if layout == "v3" or _has_build_configs(config):
        return "keras3"
    return "tfkeras"


def _has_build_configs(obj) -> bool:
    if isinstance(obj, dict):
        return "build_config" in obj or any(_has_build_configs(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_build_configs(v) for v in obj)
    return False


def _unsafe_part(obj) -> str | None:
    """What in a config would run or import code outside Keras when deserialized (None: nothing)."""
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        if cls is not None:
            module = obj.get("module")
            if cls in ("Lambda", "__lambda__") or "function_type" in obj:
                return str(cls)
            if module not in (None, "keras", "tf_keras") and not str(module).startswith(("keras.", "tf_keras.")):
                return f"{cls} from {module}"
            if obj.get("registered_name") and ">" in str(obj["registered_name"]):
                return str(obj["registered_name"])
        for v in obj.values():
            found = _unsafe_part(v)
            if found:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _unsafe_part(v)
            if found:
                return found
    return None


def _cache_key(flavor: str, item: dict) -> str:
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in _IRRELEVANT}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return flavor + json.dumps(strip(item), sort_keys=True, default=str)


def _import(flavor: str):
    """The Keras module for ``flavor`` and its label, or (None, why)."""
    import importlib.util

    from ckptdoctor.errors import MissingDependencyError
    from ckptdoctor.tfcompat import import_tensorflow

    package = "keras" if flavor == "keras3" else "tf_keras"
    label = "Keras" if flavor == "keras3" else "tf-keras"
    try:
        if importlib.util.find_spec(package) is None:
            return None, f"{package} is not installed"
    except (ImportError, ValueError):
        return None, f"{package} is not installed"
    try:
        import_tensorflow()
        module = __import__(package)
    except (ImportError, MissingDependencyError) as e:
        return None, f"{package} cannot be imported ({e})"
    version = getattr(module, "__version__", "")
    if flavor == "keras3" and not version.startswith("3"):
        return None, f"the installed keras is {version}, not Keras 3"
    return module, f"{label} {version}".strip()


def expect_weights(layers: list, config: dict | None, keras_version: str | None, layout: str) -> Expectation:
    """Rebuild the config's layers with the Keras that wrote the file and list what each one stores.

    Args:
        layers: the config's ``ConfigLayer`` objects (``path``, ``class_name``, ``item``).
        config: the whole model config.
        keras_version: the file's ``keras_version`` (None: guessed from the config's form).
        layout: ``v3`` (``vars/0`` keys) or ``legacy`` (variable names).

    Returns:
        An ``Expectation``; a layer missing from ``layers`` of it was not checked (why: ``unchecked``).
    """
    out = Expectation()
    if not config or not layers:
        return out
    flavor = _flavor(keras_version, layout, config)
    if flavor == "tfkeras" and layout != "legacy":
        out.reason = "tf-keras weights in the Keras 3 layout are not checked against Keras"
        return out
    todo = _checkable(layers) if flavor == "keras3" else []
    version = expect_cache.installed_keras() if flavor == "keras3" else None
    if version and version.startswith("3") and _from_cache(todo, version, layout, out):
        return out
    K, label = _import(flavor)
    if K is None:
        out.reason = label
        return out
    out.keras = label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deserialization warnings would bury the report on stderr
        if flavor == "keras3":
            learnt = _rebuild_keras3(K, todo, layout, out)
            if learnt and version and label == f"Keras {version}":
                expect_cache.save(version, {key: _triples(_CACHE[key]) for key in learnt})
        else:
            _rebuild_tfkeras(K, layers, config, out)
    return out


def _checkable(layers: list) -> list:
    """``(layer, cache key, "")`` of each layer to rebuild, in order; ``(layer, None, why)`` for one whose config
    would run code outside Keras (never rebuilt). Computed once per file, for the cache and the rebuild alike."""
    todo: list[tuple[object, str | None, str]] = []
    kinds: set[str] = set()
    for layer in layers:
        item = layer.item
        if layer.class_name in _MODELS or not isinstance(item, dict):
            continue
        unsafe = _unsafe_part(item)
        if unsafe:
            todo.append((layer, None, f"{unsafe} is not rebuilt (code outside Keras)"))
            continue
        key = _cache_key("keras3", item)
        if key not in kinds and len(kinds) >= MAX_REBUILDS:
            todo.append((layer, None, f"not rebuilt: the config asks for more than {MAX_REBUILDS} kinds of layers"))
            continue
        kinds.add(key)
        todo.append((layer, key, ""))
    return todo


def _from_cache(todo: list, version: str, layout: str, out: Expectation) -> bool:
    """Fill ``out`` from the kept answers of Keras ``version`` (the installed one) when they cover every layer
    of ``todo`` (True); False: Keras has to be asked (``out`` untouched)."""

    def unknown(key) -> bool:
        return key is not None and key not in _CACHE and key not in _FAILED

    if any(unknown(key) for _layer, key, _why in todo):
        for key, answer in expect_cache.load(version).items():
            _CACHE.setdefault(key, _weights(answer))
        if any(unknown(key) for _layer, key, _why in todo):
            return False
    out.keras = f"Keras {version}"
    for layer, key, why in todo:
        _fill(out, layer, key, why, layout)
    return True


def _fill(out: Expectation, layer, key: str | None, why: str, layout: str) -> None:
    """What ``layer`` stores (its kind ``key`` known), or why it is not checked: the same whether the answer
    came from the cache or from Keras now."""
    if key is None or key in _FAILED:
        out.unchecked.append((layer.path, why or _FAILED[key]))  # type: ignore[index]
        return
    found = _CACHE[key]
    if found is None:
        out.unchecked.append((layer.path, "Keras did not build it from its config (no build_config)"))
    else:
        out.layers[layer.path] = found[0] if layout == "v3" else found[1]


def _triples(found):
    """``(v3, legacy)`` of ``ExpectedWeight`` as the cache file keeps them."""
    if found is None:
        return None
    return tuple(tuple((w.key, w.name, w.shape) for w in part) for part in found)


def _weights(answer):
    """The cache file's ``(v3, legacy)`` of ``(key, name, shape)`` as ``ExpectedWeight``."""
    if answer is None:
        return None
    return tuple(tuple(ExpectedWeight(k, n, s) for k, n, s in part) for part in answer)


@contextlib.contextmanager
def _unallocated_variables():
    """Keras 3 variables created here get their shapes but no values: a config's sizes come from a file, and a
    600-byte config declaring a Dense layer of 16,000 x 16,000 made the rebuild allocate and initialise 1 GB
    (82 s, 3.7 GB RSS). Keras defers a variable's initialisation inside a ``StatelessScope``; the deferred ones
    are then taken off Keras' list of variables to initialise, so that nothing initialises them later."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def _rebuild_keras3(K, todo: list, layout: str, out: Expectation) -> list[str]:
    """Rebuild each layer kind of ``todo`` (``_checkable``) not known yet; returns the cache keys learnt (to keep
    on disk)."""
    from keras.src.saving import saving_lib

    class Recorder(saving_lib.H5IOStore):
        """Keras' saving walk writes each saveable's variables into ``make(path)``; this keeps them."""

        def __init__(self):  # no file: nothing is written
            self.made: dict[str, dict] = {}

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            return self.made.setdefault(path, {})

    learnt: list[str] = []
    for layer, key, why in todo:
        if key is not None and key not in _CACHE and key not in _FAILED:
            try:
                _CACHE[key] = _rebuild_one(K, saving_lib, Recorder, layer.item)
                learnt.append(key)
            # Rebuilding is a best effort on behalf of the user's config: whatever Keras raises
            # (ValueError, TypeError, NotImplementedError...) means only "this layer is not checked".
            except Exception as e:  # noqa: BLE001
                _FAILED[key] = f"Keras could not rebuild it ({type(e).__name__}: {e})"[:300]
        _fill(out, layer, key, why, layout)
    return learnt


def _rebuild_one(K, saving_lib, Recorder, item: dict):
    """``(v3, legacy)`` weights of one layer rebuilt from its config item; None: Keras built nothing."""
    with _unallocated_variables():
        built = K.saving.deserialize_keras_object(
            {k: v for k, v in item.items() if k != "inbound_nodes"}, safe_mode=True
        )
        store = Recorder()
        if getattr(built, "built", False):
            saving_lib._save_state(built, store, None, "", set())
    if not getattr(built, "built", False):
        return None
    v3 = tuple(
        ExpectedWeight(
            f"{path}/vars/{i}" if path else f"vars/{i}",
            f"{path}/{_var_name(v, i)}" if path else _var_name(v, i),
            _shape(v),
        )
        for path, made in sorted(store.made.items())
        for i, v in sorted(made.items(), key=_index)
    )
    legacy = tuple(
        ExpectedWeight(legacy_key(str(v.path)), legacy_key(str(v.path)), _shape(v))
        for v in list(built.trainable_weights) + list(built.non_trainable_weights)
    )
    return v3, legacy


def _index(item) -> tuple:
    k = item[0]
    return (0, int(k)) if str(k).isdigit() else (1, str(k))


def _var_name(v, i) -> str:
    name = getattr(v, "name", None)
    return str(name).rsplit("/", 1)[-1] if name else f"vars/{i}"


def _shape(v) -> tuple:
    return tuple(int(d) for d in getattr(v, "shape", ()))


def _rebuild_tfkeras(K, layers: list, config: dict, out: Expectation) -> None:
    unsafe = _unsafe_part(config)
    if unsafe:
        out.reason = f"the config holds {unsafe}, which is never rebuilt (code outside Keras)"
        return
    if len(layers) > MAX_REBUILDS:
        out.reason = f"the config has {len(layers)} layers; more than {MAX_REBUILDS} are not rebuilt"
        return
    import logging

    import tensorflow as tf

    # In a graph, variables are ops whose initialisers never run: the shapes the config declares (sizes
    # from a file) are not allocated. The names and shapes are those of an eager rebuild.
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel(logging.ERROR)  # graph-mode deprecation notices would be lines on stderr
    try:
        with tf.Graph().as_default():
            _walk_tfkeras(K, layers, config, out)
    finally:
        logger.setLevel(level)


def _walk_tfkeras(K, layers: list, config: dict, out: Expectation) -> None:
    try:
        model = K.models.model_from_config(config)
    except Exception as e:  # noqa: BLE001  (as in _rebuild_keras3: a failed rebuild means "not checked")
        out.reason = f"tf-keras could not rebuild the model from its config ({type(e).__name__}: {e})"[:300]
        return
    wanted = {layer.path for layer in layers}

    def walk(container, parent: str) -> None:
        for sub in getattr(container, "layers", []):
            path = f"{parent}/{sub.name}" if parent else sub.name
            if (
                sub.__class__.__name__ in _MODELS
                or hasattr(sub, "layers")
                and path in wanted
                and any(p.startswith(path + "/") for p in wanted)
            ):
                walk(sub, path)
                continue
            if path in wanted:
                out.layers[path] = tuple(
                    ExpectedWeight(legacy_key(w.name), legacy_key(w.name), _shape(w))
                    for w in list(sub.trainable_weights) + list(sub.non_trainable_weights)
                )

    walk(model, "")
