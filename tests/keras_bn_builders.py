"""Keras models whose BN statistics repair must get right beside layers held in inference mode, and BN variants
(run in a subprocess: Keras 3 and tf-keras need a process each).

    python keras_bn_builders.py build {keras3,tfkeras} KIND,KIND... ROOT
    python keras_bn_builders.py check {keras3,tfkeras} X.npy ORIGINAL REPAIRED [X.npy ORIGINAL REPAIRED ...]

``build`` writes ROOT/<kind>/model.keras (Keras 3) or model.h5 (tf-keras), X.npy and info.json (the BN
layer names and the layers that take a ``training`` argument). Models are trained for a few steps with BN
momentum 0.99 and a high learning rate, so their moving statistics are stale. Kinds:

- ``dropout``: d1 -> Dropout(0.5) drop1 -> bn1 -> relu -> d2 -> GaussianNoise(0.5) noise -> bn2 -> relu -> head
  (tf-keras: also ROOT/dropout/savedmodel, written by ``model.save(dir)``)
- ``nested`` (Keras 3): a Sequential backbone (d1 -> Dropout(0.5) drop1 -> bn1) -> relu -> head
- ``sync`` (Keras 3): bn1 with ``synchronized=True``; ``renorm``: bn1 with ``renorm=True``
- ``centerscale``: bn1 with ``center=False``, bn2 with ``scale=False``
- ``axis1``: channels-first (a Conv1D between two Permutes) -> bn_conv (axis=1) -> Dense on (N, C, L) -> bn_dense
  (axis=1) -> Flatten -> Dense -> bn_last (axis=-1)
- ``mixed``: the ``mixed_float16`` policy (the head in float32)
- ``vbs`` (tf-keras): bn1 with ``virtual_batch_size=16`` (also a SavedModel), which tf-keras cannot load back
- ``refuse`` (Keras 3): d1 -> bn1 -> head, untrained, whose stored statistics are the exact statistics of the first
  512 of 2048 samples (the first 512 are shifted): repair with --batch-size 512 checks only those, where the
  stored statistics are already exact, so the new (population) ones can only be worse
- ``nchw`` (Keras 3): a channels-first Conv1D -> bn (axis=1) -> head, untrained (statistics at init)
- ``effnet`` (Keras 3): ``keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10)``,
  two training steps on 64 samples

``check`` prints one JSON line per triple, computed with Keras alone (independent of ckptdoctor): ``stats``, each
trainable top-level BN layer's input moments over all samples with the REPAIRED model in inference mode (a sub-model up
to the layer's input, ``training=False``, numpy mean and population variance); ``stored``, the REPAIRED model's
moving statistics as Keras loads them; and the inference outputs' gap to the reference, the ORIGINAL model with
every dropout rate and noise stddev set to 0 (and renorm off) called with ``training=True`` on all samples in one batch
(``gap_after`` for REPAIRED, ``gap_before`` for ORIGINAL, both relative to ``scale``, the largest |reference|).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

KERAS3_KINDS = ("dropout", "nested", "sync", "renorm", "centerscale", "axis1", "mixed", "refuse", "effnet", "nchw")
TFKERAS_KINDS = ("dropout", "renorm", "centerscale", "axis1", "mixed", "vbs")


def _keras(which):
    if which == "keras3":
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import keras as K
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as K
    K.utils.set_random_seed(0)
    return K


def _dense_data(rng, n=256):
    x = rng.normal(size=(n, 10)).astype("float32") * 3 + 5
    y = (x @ rng.normal(size=(10, 1)) / 3).astype("float32")
    return x, y


def _two_bn(K, x, bn1=None, bn2=None, head_dtype=None):
    """features -> d1 -> bn1 -> relu -> d2 -> bn2 -> relu -> head."""
    L = K.layers
    inp = K.Input((x.shape[1],), name="features")
    h = L.BatchNormalization(name="bn1", momentum=0.99, **(bn1 or {}))(L.Dense(16, name="d1")(inp))
    h = L.Dense(16, name="d2")(L.Activation("relu")(h))
    h = L.BatchNormalization(name="bn2", momentum=0.99, **(bn2 or {}))(h)
    head = L.Dense(1, name="head", **({"dtype": head_dtype} if head_dtype else {}))
    return K.Model(inp, head(L.Activation("relu")(h)))


def _model(K, which, kind, rng):
    L = K.layers
    if kind == "dropout":
        x, y = _dense_data(rng)
        inp = K.Input((10,), name="features")
        h = L.Dropout(0.5, name="drop1")(L.Dense(16, name="d1")(inp))
        h = L.BatchNormalization(name="bn1", momentum=0.99)(h)
        h = L.GaussianNoise(0.5, name="noise")(L.Dense(16, name="d2")(L.Activation("relu")(h)))
        h = L.BatchNormalization(name="bn2", momentum=0.99)(h)
        return K.Model(inp, L.Dense(1, name="head")(L.Activation("relu")(h))), x, y
    if kind == "nested":
        x, y = _dense_data(rng)
        backbone = K.Sequential(
            [
                K.Input((10,)),
                L.Dense(16, name="d1"),
                L.Dropout(0.5, name="drop1"),
                L.BatchNormalization(name="bn1", momentum=0.99),
            ],
            name="backbone",
        )
        inp = K.Input((10,), name="features")
        return K.Model(inp, L.Dense(1, name="head")(L.Activation("relu")(backbone(inp)))), x, y
    if kind == "sync":
        x, y = _dense_data(rng)
        return _two_bn(K, x, bn1={"synchronized": True}), x, y
    if kind == "renorm":
        x, y = _dense_data(rng)
        return _two_bn(K, x, bn1={"renorm": True}), x, y
    if kind == "centerscale":
        x, y = _dense_data(rng)
        return _two_bn(K, x, bn1={"center": False}, bn2={"scale": False}), x, y
    if kind == "mixed":
        x, y = _dense_data(rng)
        return _two_bn(K, x, head_dtype="float32"), x, y
    if kind == "vbs":
        x, y = _dense_data(rng)
        return _two_bn(K, x, bn1={"virtual_batch_size": 16}), x, y
    if kind == "axis1":
        x = (rng.normal(size=(256, 3, 12)) * 2 + rng.normal(size=(1, 3, 1)) * 3).astype("float32")
        y = x[:, :, :4].mean(axis=(1, 2)).reshape(-1, 1).astype("float32")
        inp = K.Input((3, 12), name="signal")
        # Channels first around a channels-last conv: TensorFlow's own CPU kernels have no channels-first
        # convolution (oneDNN's have, and TensorFlow turns oneDNN on for some Intel CPUs only).
        h = L.Permute((2, 1))(L.Conv1D(8, 3, name="conv")(L.Permute((2, 1))(inp)))  # (N, 8, 10)
        h = L.Activation("relu")(L.BatchNormalization(axis=1, name="bn_conv", momentum=0.99)(h))
        h = L.BatchNormalization(axis=1, name="bn_dense", momentum=0.99)(L.Dense(6, name="d_last")(h))  # (N, 8, 6)
        h = L.Dense(4, name="d_flat")(L.Flatten()(L.Activation("relu")(h)))
        h = L.BatchNormalization(axis=-1, name="bn_last", momentum=0.99)(h)
        return K.Model(inp, L.Dense(1, name="head")(h)), x, y
    raise ValueError(kind)


def _refuse(K, out):
    """Stored statistics exact for the first 512 samples (shifted); the population's differ."""
    L = K.layers
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2048, 6)).astype("float32")
    x[:512] += 4.0
    inp = K.Input((6,), name="features")
    d1 = L.Dense(8, name="d1")
    bn = L.BatchNormalization(name="bn1")
    model = K.Model(inp, L.Dense(1, name="head")(bn(d1(inp))))
    h = np.asarray(d1(x[:512]), np.float64)
    gamma, beta, _, _ = bn.get_weights()
    bn.set_weights([gamma, beta, h.mean(axis=0).astype("float32"), h.var(axis=0).astype("float32")])
    model.save(os.path.join(out, "model.keras"))
    np.save(os.path.join(out, "X.npy"), x)


def _effnet(K, out):
    model = K.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(4)
    x = (rng.uniform(size=(64, 32, 32, 3)) * 255).astype("float32")
    y = K.utils.to_categorical(rng.integers(0, 10, size=64), 10)
    model.compile(optimizer=K.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    model.save(os.path.join(out, "model.keras"))
    np.save(os.path.join(out, "X.npy"), x)


def _nchw(K, out):
    """A channels-first Conv1D before a BN layer (axis=1), untrained: TensorFlow's own CPU kernels cannot run it."""
    L = K.layers
    inp = K.Input((3, 12), name="signal")
    h = L.BatchNormalization(axis=1, name="bn")(L.Conv1D(8, 3, data_format="channels_first", name="conv")(inp))
    K.Model(inp, L.Dense(1, name="head")(L.Flatten()(h))).save(os.path.join(out, "model.keras"))
    rng = np.random.default_rng(5)
    np.save(os.path.join(out, "X.npy"), (rng.normal(size=(64, 3, 12)) * 2 + 1).astype("float32"))


def _layers(model):
    """Every leaf layer with its path from the top model."""
    out = []

    def walk(container, prefix):
        for sub in container._flatten_layers(include_self=False, recursive=False):
            path = prefix + sub.name
            inner = list(sub._flatten_layers(include_self=False, recursive=False))
            if inner:
                walk(sub, path + "/")
            else:
                out.append((path, sub))

    walk(model, "")
    return out


def build(which, kinds, root):
    K = _keras(which)
    for kind in kinds:
        out = os.path.join(root, kind)
        os.makedirs(out, exist_ok=True)
        if kind == "refuse":
            _refuse(K, out)
            continue
        if kind == "effnet":
            _effnet(K, out)
            continue
        if kind == "nchw":
            _nchw(K, out)
            continue
        if kind == "mixed":
            K.mixed_precision.set_global_policy("mixed_float16")
        try:
            model, x, y = _model(K, which, kind, np.random.default_rng(1))
        finally:
            K.mixed_precision.set_global_policy("float32")
        model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, shuffle=False)
        model.save(os.path.join(out, "model.keras" if which == "keras3" else "model.h5"))
        if which == "tfkeras" and kind in ("dropout", "vbs"):
            model.save(os.path.join(out, "savedmodel"), save_format="tf")
        np.save(os.path.join(out, "X.npy"), x)
        bn_type = K.layers.BatchNormalization
        layers = _layers(model)
        info = {
            "bn": {p: len(layer.weights) for p, layer in layers if isinstance(layer, bn_type)},
            "dtypes": {
                p: (layer.dtype_policy.name if hasattr(layer.dtype_policy, "name") else str(layer.dtype_policy))
                for p, layer in layers
            },
        }
        with open(os.path.join(out, "info.json"), "w") as f:
            json.dump(info, f)


def _load(K, which, path):
    if which == "keras3":
        return K.saving.load_model(path, compile=False)
    return K.models.load_model(path, compile=False)


def _reference(K, which, path, x):
    """The original model with dropout and noise off, BN layers in training mode, all samples in one batch."""
    model = _load(K, which, path)
    for _path, layer in _layers(model):
        if isinstance(layer, (K.layers.Dropout, K.layers.GaussianDropout)):
            layer.rate = 0.0
        elif isinstance(layer, K.layers.GaussianNoise):
            layer.stddev = 0.0
        elif isinstance(layer, K.layers.BatchNormalization) and getattr(layer, "renorm", False):
            layer.renorm = False  # the target is plain batch normalization
    return np.asarray(model(x, training=True), np.float64)


def check(which, *paths):
    K = _keras(which)
    for data, original, repaired in zip(paths[::3], paths[1::3], paths[2::3]):
        x = np.load(data)
        ref = _reference(K, which, original, x)
        scale = float(np.abs(ref).max())
        before = np.asarray(_load(K, which, original)(x, training=False), np.float64)
        model = _load(K, which, repaired)
        after = np.asarray(model(x, training=False), np.float64)
        bns = [
            (p, layer)
            for p, layer in _layers(model)  # top-level ones: a probe cannot reach into a nested model
            if isinstance(layer, K.layers.BatchNormalization) and layer.trainable and "/" not in p
        ]
        seen = K.Model(model.inputs, [layer.input for _p, layer in bns])(x, training=False) if bns else []
        seen = seen if isinstance(seen, (list, tuple)) else [seen]
        stats, stored = {}, {}
        for (p, layer), value in zip(bns, seen):
            v = np.moveaxis(
                np.asarray(value, np.float64),
                layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis,
                -1,
            )
            v = v.reshape(-1, v.shape[-1])
            stats[p] = {"mean": v.mean(axis=0).tolist(), "var": v.var(axis=0).tolist()}
            stored[p] = {
                "mean": np.asarray(layer.moving_mean, np.float64).tolist(),
                "var": np.asarray(layer.moving_variance, np.float64).tolist(),
            }
        print(
            json.dumps(
                {
                    "original": original,
                    "repaired": repaired,
                    "scale": scale,
                    "gap_before": float(np.abs(before - ref).max()) / scale,
                    "gap_after": float(np.abs(after - ref).max()) / scale,
                    "stats": stats,
                    "stored": stored,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], sys.argv[3].split(","), sys.argv[4])
    else:
        check(sys.argv[2], *sys.argv[3:])
