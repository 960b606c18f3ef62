"""A model holding every built-in Keras layer class that builds on a simple input (run in a subprocess).

    python keras_layer_builders.py {keras3,tfkeras} OUT

The classes are enumerated from ``keras.layers`` (``tf_keras.layers``), not listed by hand: each
class is constructed with the arguments its signature requires (filled by parameter name from
``ARGS``) and called on the first of a few inputs (a sequence, an image, a volume, a vector,
integer ids) that it accepts, in a fresh instance per try. Variants add what defaults miss
(BatchNormalization without center and scale, RNN around each cell, wrappers around
convolutions). Writes OUT/layers.keras and OUT/layers.weights.h5 (Keras 3) or OUT/layers.h5
and OUT/layers.legacy-weights.h5 (tf-keras, legacy HDF5), OUT/mobilenet.<ext> (MobileNetV2,
weights=None, 32x32x3, 10 classes) and OUT/info.json: ``classes`` (class -> the layer names using
it), ``weighted`` (classes whose layers hold weights), ``skipped`` (class -> why it is not in the
model), ``weights`` (layer name -> its weights' names, as Keras reports them).
"""

import inspect
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

#: Never built: abstract bases, code wrappers, other frameworks' modules, string-only preprocessing.
SKIP = {
    "Layer",
    "Lambda",
    "InputLayer",
    "Wrapper",
    "AbstractRNNCell",
    "JaxLayer",
    "FlaxLayer",
    "TorchModuleWrapper",
    "TFSMLayer",
    "Pipeline",
    "DenseFeatures",
    "TextVectorization",
    "StringLookup",
    "HashedCrossing",
}
#: Values for required constructor arguments, by parameter name.
ARGS = {
    "units": 3,
    "filters": 2,
    "kernel_size": 2,
    "input_dim": 10,
    "output_dim": 3,
    "num_heads": 2,
    "key_dim": 2,
    "rate": 0.1,
    "height": 2,
    "width": 2,
    "output_size": 2,
    "num_tokens": 10,
    "num_bins": 4,
    "scale": 0.5,
    "factor": 0.1,
    "target_shape": (-1,),
    "dims": (2, 1),
    "n": 2,
    "axes": 1,
    "equation": "ab,bc->ac",
    "output_shape": 3,
    "num_query_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 2,
    "max_num_boxes": 2,
    "value_range": (0, 1),
    "stddev": 0.1,
    "size": 2,
    "groups": 2,
    "bin_boundaries": [0.0, 1.0],
    "max_tokens": 10,
    "num_classes": 3,
    "threshold": 0.5,
    "max_value": 1.0,
    "l1": 0.0,
    "alpha": 0.1,
    "mask_value": 0.0,
    "activation": "relu",
    "height_factor": 0.1,
    "width_factor": 0.1,
    "max_number": 2,
    "cropping": 1,
    "padding": 1,
    "pool_size": 2,
    "data_format": None,
}


def _keras(which):
    if which == "keras3":
        import keras as K
    else:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
        import tf_keras as K
    K.utils.set_random_seed(0)
    return K


def _inputs(K):
    return {
        "seq": K.Input((6, 4), name="seq"),
        "image": K.Input((6, 6, 4), name="image"),
        "rgb": K.Input((6, 6, 3), name="rgb"),
        "volume": K.Input((4, 4, 4, 4), name="volume"),
        "vector": K.Input((4,), name="vector"),
        "ids": K.Input((5,), dtype="int32", name="ids"),
        "video3d": K.Input((3, 3, 3, 3, 2), name="video3d"),
    }


def _factories(K):
    """(class name, name suffix, factory) for every layer class of K.layers, then the variants."""
    L = K.layers
    special = {
        "Bidirectional": lambda: L.Bidirectional(L.LSTM(2)),
        "TimeDistributed": lambda: L.TimeDistributed(L.Dense(2)),
        "SpectralNormalization": lambda: L.SpectralNormalization(L.Dense(2)),
        "RNN": lambda: L.RNN(L.LSTMCell(2)),
        "StackedRNNCells": lambda: L.RNN(L.StackedRNNCells([L.SimpleRNNCell(2), L.GRUCell(2)])),
        "LSTMCell": lambda: L.RNN(L.LSTMCell(2)),
        "GRUCell": lambda: L.RNN(L.GRUCell(2)),
        "SimpleRNNCell": lambda: L.RNN(L.SimpleRNNCell(2)),
        "GroupNormalization": lambda: L.GroupNormalization(groups=2),
        "CategoryEncoding": lambda: L.CategoryEncoding(num_tokens=10),
        "Discretization": lambda: L.Discretization(bin_boundaries=[0.0, 1.0]),
        "RandomPosterization": lambda: L.RandomPosterization(factor=4),
        "LocallyConnected1D": lambda: L.LocallyConnected1D(2, 2),
        "LocallyConnected2D": lambda: L.LocallyConnected2D(2, 2),
    }
    seen = set()
    for name in sorted(dir(L)):
        cls = getattr(L, name)
        if not (inspect.isclass(cls) and issubclass(cls, L.Layer)) or name in SKIP or cls in seen:
            continue
        seen.add(cls)  # aliases (Convolution2D, MaxPool2D) are the same class
        if name in special:
            yield cls.__name__, "", special[name]
            continue
        yield cls.__name__, "", lambda cls=cls: cls(**_required_args(cls))
    variants = [
        ("BatchNormalization", "_plain", lambda: L.BatchNormalization(center=False, scale=False)),
        ("LayerNormalization", "_plain", lambda: L.LayerNormalization(center=False, scale=False)),
        ("Dense", "_nobias", lambda: L.Dense(3, use_bias=False)),
        ("Conv2D", "_nobias", lambda: L.Conv2D(2, 2, use_bias=False)),
        ("DepthwiseConv2D", "_mult", lambda: L.DepthwiseConv2D(2, depth_multiplier=2)),
        ("Bidirectional", "_gru", lambda: L.Bidirectional(L.GRU(2, return_sequences=True))),
        ("TimeDistributed", "_conv", lambda: L.TimeDistributed(L.Conv2D(2, 2))),
        ("LSTM", "_seq", lambda: L.LSTM(2, return_sequences=True)),
        ("Attention", "_scaled", lambda: L.Attention(use_scale=True)),
        ("Normalization", "_given", lambda: L.Normalization(mean=0.5, variance=2.0)),
        ("Embedding", "_masked", lambda: L.Embedding(10, 3, mask_zero=True)),
    ]
    yield from variants


def _required_args(cls):
    kwargs = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if p.name not in ARGS:
            raise TypeError(f"no value for its required argument {p.name!r}")
        kwargs[p.name] = ARGS[p.name]
    return kwargs


def _snake(name):
    import re

    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()


def _rename(layer, name):
    try:
        layer.name = name  # Keras 3
    except AttributeError:
        layer._name = name  # tf-keras: a read-only property


def _flatten(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return [out]


CALLS = {"x": lambda f, x: f(x), "[x, x]": lambda f, x: f([x, x]), "x, x": lambda f, x: f(x, x)}


def _first_fit(K, make, name):
    """The first (input kind, call) a fresh instance accepts, tried on scratch inputs; or (None, why).

    A layer that returns its input unchanged (augmentation outside training) would make the shared
    inputs part of a cycle, so it is left out.
    """
    why = None
    for kind in _inputs(K):
        for call, run in CALLS.items():
            x = _inputs(K)[kind]  # scratch: a failed or identity call must not touch the model's inputs
            try:
                layer = make()
                _rename(layer, name)
                result = run(layer, x)
            except Exception as e:  # noqa: BLE001  (a class that does not fit this input: try the next)
                why = why or f"{type(e).__name__}: {str(e)[:120]}"
                continue
            if any(t is x for t in _flatten(result)):
                return None, "returns its input unchanged outside training"
            try:  # a model holding it must rebuild from its config, as loading the file does
                _round_trip(K, K.Model(x, [t for t in _flatten(result) if hasattr(t, "shape")]))
            except Exception as e:  # noqa: BLE001
                return None, f"Keras cannot rebuild it from its own config ({type(e).__name__}: {str(e)[:100]})"
            return (kind, call), None
    return None, why


def _round_trip(K, model):
    if not K.__version__.startswith("3"):  # tf-keras: what load_model of a legacy .h5 does
        return K.models.model_from_config(json.loads(model.to_json()))
    return K.saving.deserialize_keras_object(K.saving.serialize_keras_object(model), safe_mode=True)


def _built_weights(K, make, kind, call):
    layer = make()
    CALLS[call](layer, _inputs(K)[kind])
    return layer.weights


def _update_bn_statistics(K, model):
    """Run each BN layer once in training mode: a healthy saved model has trained statistics (at init they
    would be reported, rightly, as never updated)."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, K.layers.BatchNormalization):
            shape = [2] + [int(d) for d in layer.input.shape[1:]]
            layer(rng.normal(size=shape).astype("float32") + 3, training=True)


def build_layers(K, which, out):
    inputs = _inputs(K)
    outputs, classes, weights, skipped = [], {}, {}, {}
    for cls_name, suffix, make in _factories(K):
        name = _snake(cls_name) + suffix
        fit, why = _first_fit(K, make, name)
        if fit is None:
            skipped[cls_name + suffix] = why
            continue
        kind, call = fit
        layer = make()
        if which == "tfkeras" and any(not hasattr(w, "assign") for w in _built_weights(K, make, kind, call)):
            skipped[cls_name + suffix] = "holds weights that are not variables: legacy HDF5 cannot store them"
            continue
        _rename(layer, name)
        result = CALLS[call](layer, inputs[kind])
        outputs.extend(t for t in _flatten(result) if hasattr(t, "shape"))
        classes.setdefault(cls_name, []).append(name)
        if isinstance(layer, K.layers.RNN) and not isinstance(layer, (K.layers.LSTM, K.layers.GRU)):
            cell = type(layer.cell).__name__
            classes.setdefault(cell, []).append(name)
        weights[name] = [str(getattr(w, "path", None) or getattr(w, "name", type(w).__name__)) for w in layer.weights]
    model = K.Model(list(inputs.values()), outputs, name="every_layer")
    _update_bn_statistics(K, model)
    weighted = sorted({c for c, names in classes.items() if any(weights[n] for n in names)})
    if which == "keras3":
        model.save(os.path.join(out, "layers.keras"))
        model.save_weights(os.path.join(out, "layers.weights.h5"))
    else:
        model.save(os.path.join(out, "layers.h5"))
        model.save_weights(os.path.join(out, "layers.legacy-weights.h5"), save_format="h5")
    return {"classes": classes, "weighted": weighted, "skipped": skipped, "weights": weights}


def main(which, out):
    K = _keras(which)
    os.makedirs(out, exist_ok=True)
    info = build_layers(K, which, out)
    mobile = K.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    mobile(np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32"), training=True)
    mobile.save(os.path.join(out, "mobilenet.keras" if which == "keras3" else "mobilenet.h5"))
    info["keras_version"] = K.__version__
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    np.save(os.path.join(out, "ok.npy"), np.zeros(1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
