"""Small Keras models with stale BN statistics, saved in every Keras format (run in a subprocess).

    python keras_builders.py build {keras3,tfkeras} dense,conv,multi,lambda,nested ROOT
    python keras_builders.py evaluate {keras3,tfkeras} X.npy|data.npz y.npy MODEL...

``build`` trains a model for a few steps with BN momentum 0.99 and a high learning
rate, so the moving statistics are far from the data's (the "high accuracy in fit(),
low in evaluate()" failure), then writes OUT/model.keras (Keras 3) or OUT/model.h5
(tf-keras, legacy HDF5), OUT/model.weights.h5, a TF2 checkpoint OUT/tf2/ckpt (tf-keras
dense: also a SavedModel OUT/savedmodel), the data (X.npy or data.npz, y.npy) and
OUT/info.json, with OUT = ROOT/<kind>. ``nested`` (see ``build_nested``) writes the model, its weights
(tf-keras: and OUT/savedmodel), X.npy, y.npy and stats.npz (the trainable BN layers' input moments computed
with numpy, keys ``<layer path>/mean@<batch size>``), and two models repair must refuse. ``evaluate``
prints one JSON line per model with the inference-mode loss and the training-mode loss (consecutive batches
of 64).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _keras(which):
    if which == "keras3":
        import keras as K
    else:
        import tf_keras as K
    K.utils.set_random_seed(0)
    return K


def _model(K, kind, rng):
    L = K.layers
    bn = dict(momentum=0.99)
    if kind == "nested":
        return _nested(K, rng)
    if kind == "conv":
        offsets = rng.normal(size=(320, 1, 1, 3)).astype("float32")
        x = (rng.normal(size=(320, 8, 8, 3)).astype("float32") + offsets) * 2 + 4
        inp = K.Input((8, 8, 3), name="image")
        h = L.Conv2D(8, 3, padding="same", name="conv1")(inp)
        h = L.BatchNormalization(name="bn1", **bn)(h)
        h = L.Activation("relu")(h)
        h = L.Conv2D(8, 3, padding="same", name="conv2")(h)
        h = L.BatchNormalization(name="bn2", **bn)(h)
        h = L.Activation("relu")(h)
        h = L.GlobalAveragePooling2D()(h)
        out = L.Dense(1, name="head")(h)
        y = (offsets.reshape(-1, 3) @ rng.normal(size=(3, 1))).astype("float32")
        return K.Model(inp, out), x, y
    if kind == "multi":
        a = rng.normal(size=(320, 6)).astype("float32") * 3 + 5
        b = rng.normal(size=(320, 4)).astype("float32") - 3
        ia, ib = K.Input((6,), name="left"), K.Input((4,), name="right")
        ha = L.BatchNormalization(name="bn_left", **bn)(L.Dense(8, name="dl")(ia))
        hb = L.BatchNormalization(name="bn_right", **bn)(L.Dense(8, name="dr")(ib))
        h = L.BatchNormalization(name="bn_joint", **bn)(L.Concatenate()([ha, hb]))
        out = L.Dense(1, name="head")(L.Activation("relu")(h))
        y = (a[:, :1] - 2 * b[:, :1]).astype("float32")
        return K.Model([ia, ib], out), {"left": a, "right": b}, y
    x = rng.normal(size=(320, 10)).astype("float32") * 3 + 5
    inp = K.Input((10,), name="features")
    h = L.Dense(16, name="d1")(inp)
    h = L.BatchNormalization(name="bn1", **bn)(h)
    h = L.Activation("relu")(h)
    if kind == "lambda":
        h = L.Lambda(lambda t: t * 2.0, name="double")(h)
    h = L.Dense(16, name="d2")(h)
    h = L.BatchNormalization(name="bn2", **bn)(h)
    h = L.Activation("relu")(h)
    h = L.BatchNormalization(name="bn_frozen", trainable=False)(h)
    out = L.Dense(1, name="head")(h)
    y = (x @ rng.normal(size=(10, 1)) / 3).astype("float32")
    return K.Model(inp, out), x, y


def _nested(K, rng):
    """The fine-tuning shape: a backbone model used as a layer, BN layers at depth 1 to 3.

    features -> backbone (Functional in Functional: d1, bn1, relu, block) -> frozen (Sequential,
    trainable=False: d3, bn3) -> bn_top -> head; block is a Sequential in the backbone holding cell,
    a Functional in a Sequential (d2, bn2, relu). BN layer paths: backbone/bn1,
    backbone/block/cell/bn2, frozen/bn3, bn_top.
    """
    L = K.layers
    bn = dict(momentum=0.99)
    x = rng.normal(size=(320, 10)).astype("float32") * 3 + 5
    ci = K.Input((16,), name="cell_in")
    cell = K.Model(
        ci, L.Activation("relu")(L.BatchNormalization(name="bn2", **bn)(L.Dense(16, name="d2")(ci))), name="cell"
    )
    block = K.Sequential([K.Input((16,)), cell], name="block")
    bi = K.Input((10,), name="bb_in")
    h = L.Activation("relu")(L.BatchNormalization(name="bn1", **bn)(L.Dense(16, name="d1")(bi)))
    backbone = K.Model(bi, block(h), name="backbone")
    frozen = K.Sequential(
        [K.Input((16,)), L.Dense(16, name="d3"), L.BatchNormalization(name="bn3", **bn)], name="frozen"
    )
    inp = K.Input((10,), name="features")
    h = L.BatchNormalization(name="bn_top", **bn)(frozen(backbone(inp)))
    out = L.Dense(1, name="head")(L.Activation("relu")(h))
    y = (x @ rng.normal(size=(10, 1)) / 3).astype("float32")
    return K.Model(inp, out), x, y


def _bn_numpy(x, layer, training):
    g, b, mm, mv = (np.asarray(w, np.float64) for w in layer.get_weights())
    mean, var = (x.mean(axis=0), x.var(axis=0)) if training else (mm, mv)
    return (x - mean) / np.sqrt(var + layer.epsilon) * g + b


def _dense_numpy(x, layer):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return x @ kernel + bias


def nested_stats(model, x, batch_size):
    """Each trainable BN layer's input moments over all samples, the model in training mode batch by batch,
    computed with numpy from the weights (independent of Keras' call path and of ckptdoctor)."""
    backbone, frozen = model.get_layer("backbone"), model.get_layer("frozen")
    cell = backbone.get_layer("block").get_layer("cell")
    seen = {"backbone/bn1": [], "backbone/block/cell/bn2": [], "bn_top": []}
    for s in range(0, len(x), batch_size):
        h = _dense_numpy(np.asarray(x[s : s + batch_size], np.float64), backbone.get_layer("d1"))
        seen["backbone/bn1"].append(h)
        h = _dense_numpy(np.maximum(_bn_numpy(h, backbone.get_layer("bn1"), True), 0), cell.get_layer("d2"))
        seen["backbone/block/cell/bn2"].append(h)
        h = _dense_numpy(np.maximum(_bn_numpy(h, cell.get_layer("bn2"), True), 0), frozen.get_layer("d3"))
        seen["bn_top"].append(_bn_numpy(h, frozen.get_layer("bn3"), False))  # frozen: inference mode
    stats = {}
    for name, parts in seen.items():
        v = np.concatenate(parts)
        stats[f"{name}/mean"], stats[f"{name}/var"] = v.mean(axis=0), v.var(axis=0)
    return stats


def build_nested(which, out):
    """``nested`` trains the whole model for one epoch, then freezes ``frozen`` (base.trainable = False) and
    trains three more; also writes shared.<ext> (one backbone called on two inputs) and allfrozen.<ext>."""
    K = _keras(which)
    L = K.layers
    model, x, y = _nested(K, np.random.default_rng(1))
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    model.get_layer("frozen").trainable = False
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    model.fit(x, y, batch_size=64, epochs=3, verbose=0, shuffle=False)
    os.makedirs(out, exist_ok=True)
    ext = ".keras" if which == "keras3" else ".h5"
    model.save(os.path.join(out, "model" + ext))
    model.save_weights(os.path.join(out, "model.weights.h5"))
    if which == "tfkeras":
        model.save(os.path.join(out, "savedmodel"), save_format="tf")
        model.save_weights(os.path.join(out, "legacy_weights.h5"), save_format="h5")  # the legacy layout
    np.save(os.path.join(out, "X.npy"), x)
    np.save(os.path.join(out, "y.npy"), y)
    stats = {f"{k}@{bs}": v for bs in (64, 320) for k, v in nested_stats(model, x, bs).items()}
    np.savez(os.path.join(out, "stats.npz"), **stats)

    bi = K.Input((10,), name="base_in")
    base = K.Model(bi, L.BatchNormalization(name="bn")(L.Dense(4, name="d")(bi)), name="base")
    a, b = K.Input((10,), name="a"), K.Input((10,), name="b")
    K.Model([a, b], L.Dense(1, name="head")(L.Concatenate()([base(a), base(b)]))).save(
        os.path.join(out, "shared" + ext)
    )
    np.savez(os.path.join(out, "ab.npz"), a=x[:64], b=x[64:128])
    inner = K.Sequential([K.Input((10,)), L.Dense(4, name="d"), L.BatchNormalization(name="bn")], name="base")
    inner.trainable = False
    K.Sequential([K.Input((10,)), inner, L.Dense(1, name="head")]).save(os.path.join(out, "allfrozen" + ext))


def build(which, kind, out):
    if kind == "nested":
        return build_nested(which, out)
    K = _keras(which)
    rng = np.random.default_rng(1)
    model, x, y = _model(K, kind, rng)
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    model.fit(
        x if not isinstance(x, dict) else [x["left"], x["right"]], y, batch_size=64, epochs=4, verbose=0, shuffle=False
    )
    os.makedirs(out, exist_ok=True)
    main = os.path.join(out, "model.keras" if which == "keras3" else "model.h5")
    model.save(main)
    model.save_weights(os.path.join(out, "model.weights.h5"))
    if which == "tfkeras" and kind == "dense":
        model.save(os.path.join(out, "savedmodel"), save_format="tf")
    if kind != "lambda":
        import tensorflow as tf

        tf.train.Checkpoint(model=model).write(os.path.join(out, "tf2", "ckpt"))
    if isinstance(x, dict):
        np.savez(os.path.join(out, "data.npz"), **x)
        data = os.path.join(out, "data.npz")
    else:
        np.save(os.path.join(out, "X.npy"), x)
        data = os.path.join(out, "X.npy")
    np.save(os.path.join(out, "y.npy"), y)
    info = {
        "model": main,
        "data": data,
        "y": os.path.join(out, "y.npy"),
        "weights": {v.path if hasattr(v, "path") else v.name: list(v.shape) for v in model.weights},
        "bn": [layer.name for layer in model.layers if isinstance(layer, K.layers.BatchNormalization)],
    }
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f)


def evaluate(which, data, y_path, *paths):
    K = _keras(which)
    for path in paths:
        if which == "keras3":
            model = K.saving.load_model(path, compile=False, safe_mode=True)
        else:
            model = K.models.load_model(path, compile=False)
        _evaluate(model, data, y_path)


def _evaluate(model, data, y_path):
    y = np.load(y_path)
    if data.endswith(".npz"):
        z = np.load(data)
        x = [z[n] for n in ("left", "right")]
    else:
        x = [np.load(data)]
    n = len(y)

    def loss(training):
        total = 0.0
        for s in range(0, n, 64):
            batch = [a[s : s + 64] for a in x]
            pred = np.asarray(model(batch, training=training))
            total += float(np.square(pred - y[s : s + 64]).sum())
        return total / n

    infer = loss(False)  # first: training mode would move the statistics in memory
    train = loss(True)
    print(json.dumps({"infer": infer, "train": train}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        for kind in sys.argv[3].split(","):
            build(sys.argv[2], kind, os.path.join(sys.argv[4], kind))
    else:
        evaluate(*sys.argv[2:])
