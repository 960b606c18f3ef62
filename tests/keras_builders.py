"""Small Keras models with stale BN statistics, saved in every Keras format (run in a subprocess).

    python keras_builders.py build {keras3,tfkeras} dense,conv,multi,lambda ROOT
    python keras_builders.py evaluate {keras3,tfkeras} X.npy|data.npz y.npy MODEL...

``build`` trains a model for a few steps with BN momentum 0.99 and a high learning
rate, so the moving statistics are far from the data's (the "high accuracy in fit(),
low in evaluate()" failure), then writes OUT/model.keras (Keras 3) or OUT/model.h5
(tf-keras, legacy HDF5), OUT/model.weights.h5, a TF2 checkpoint OUT/tf2/ckpt (tf-keras
dense: also a SavedModel OUT/savedmodel), the data (X.npy or data.npz, y.npy) and
OUT/info.json, with OUT = ROOT/<kind>. ``evaluate`` prints one JSON line per model
with the inference-mode loss and the training-mode loss (consecutive batches of 64).
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


def build(which, kind, out):
    K = _keras(which)
    rng = np.random.default_rng(1)
    model, x, y = _model(K, kind, rng)
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    model.fit(x if not isinstance(x, dict) else [x["left"], x["right"]], y, batch_size=64, epochs=4, verbose=0,
              shuffle=False)
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
    info = {"model": main, "data": data, "y": os.path.join(out, "y.npy"),
            "weights": {v.path if hasattr(v, "path") else v.name: list(v.shape) for v in model.weights},
            "bn": [l.name for l in model.layers if isinstance(l, K.layers.BatchNormalization)]}
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
            batch = [a[s:s + 64] for a in x]
            pred = np.asarray(model(batch, training=training))
            total += float(np.square(pred - y[s:s + 64]).sum())
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
