"""Keras 3 models saved in every storage form Keras has (run in a subprocess: Keras 3 only).

    python keras_storage_builders.py build ROOT
    python keras_storage_builders.py backbone ROOT
    python keras_storage_builders.py check ROOT X.npy ORIGINAL ITEM...

``build`` trains the small nested model of ``storage_factory.nested`` (BN layers backbone/bn1,
backbone/block/bn2 and bn_top, Dropout inside the backbone and before bn_top) with BN momentum 0.99 and a
high learning rate, so its statistics are stale, and writes into ROOT:

- ``model.keras`` (zipped, HDF5 weights: the reference form), ``model_dir/`` (``save_model(zipped=False)``),
  ``hub/`` (the same files as a Hugging Face Hub snapshot: symlinks into ``blobs/``, with README.md and
  .gitattributes), ``model_npz.keras`` (``weights_format="npz"``), ``npz_dir/`` (npz weights, unzipped: Keras
  writes them as ``model.weights.h5``), ``constraint_npz.keras`` (npz weights of a Dense layer whose kernel has a
  ``MaxNorm`` constraint, which Keras pickles with the variable);
- ``model.weights.h5`` and ``sharded/w.weights.json`` with its shards (``save_weights(max_shard_size=...)``);
- ``storage_factory.py`` (its ``nested`` and ``backbone`` build the models), ``X.npy``, ``y.npy``, ``info.json``
  (``bn``: the BN layer paths; ``shards``: the shard names).

``backbone`` writes ROOT/backbone/: a model with a nested Keras Applications backbone
(``storage_factory.backbone``: MobileNetV2 at alpha 0.35 and 32x32, weights=None, then Dropout, Dense, BN,
Dense), trained two epochs on 64 samples; its weights as ``sharded/w.weights.json`` and ``w.weights.h5``,
``arch.keras`` (the same architecture with other, untrained weights), ``X.npy`` and ``info.json``.

``check`` loads each model, computed with Keras alone: an ITEM is a model path (``keras.saving.load_model``; an
npz-weights ``.keras`` with Keras' npz store patched as ``_npz_store`` says: stock Keras 3.15 loads no npz weights,
its own included; these are the test's own files) or
``SPEC=WEIGHTS`` (the factory ``module:function`` in ROOT, then ``load_weights(WEIGHTS)``). The reference is
ORIGINAL (an ITEM) with every dropout rate set to 0 and the BN layers in training mode on all samples in one
batch. One JSON line per ITEM: ``gap``, its inference outputs' largest distance to the reference relative to
``scale`` (the largest |reference|); ``outputs``, the first 64 inference outputs; ``stats``, every BN layer's
moving statistics as loaded (layer path -> [mean, variance]); for an npz-weights ``.keras``, ``stock_refusal``:
what stock ``load_model`` says of it (None if it loads it).
"""

import json
import os
import shutil
import sys

os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FACTORY = '''"""The models of keras_storage_builders.py (imported by ckptdoctor --graph storage_factory:NAME)."""

import keras

L = keras.layers


def nested():
    """features -> backbone (d1, drop1, bn1, relu, block: Sequential d2, bn2) -> relu -> drop_top -> bn_top -> head."""
    bi = keras.Input((10,), name="bb_in")
    h = L.BatchNormalization(name="bn1", momentum=0.99)(L.Dropout(0.3, name="drop1")(L.Dense(16, name="d1")(bi)))
    block = keras.Sequential(
        [keras.Input((16,)), L.Dense(16, name="d2"), L.BatchNormalization(name="bn2", momentum=0.99)], name="block"
    )
    backbone = keras.Model(bi, block(L.Activation("relu")(h)), name="backbone")
    inp = keras.Input((10,), name="features")
    h = L.Dropout(0.2, name="drop_top")(L.Activation("relu")(backbone(inp)))
    return keras.Model(inp, L.Dense(1, name="head")(L.BatchNormalization(name="bn_top", momentum=0.99)(h)))


def backbone():
    """A Keras Applications backbone nested in a model with its own head (Dropout, Dense, BN)."""
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg", name="backbone"
    )
    inp = keras.Input((32, 32, 3), name="image")
    h = L.Dense(16, name="fc")(L.Dropout(0.3, name="drop")(base(inp)))
    h = L.Activation("relu")(L.BatchNormalization(name="bn_head", momentum=0.9)(h))
    return keras.Model(inp, L.Dense(4, name="logits")(h))
'''


def _factory(root):
    with open(os.path.join(root, "storage_factory.py"), "w") as f:
        f.write(FACTORY)
    sys.path.insert(0, root)
    import storage_factory

    return storage_factory


def bn_paths(K, model):
    """Every BN layer's path from the top model (``backbone/block/bn2``)."""
    out = []

    def walk(container, prefix):
        for sub in container._flatten_layers(include_self=False, recursive=False):
            if isinstance(sub, K.layers.BatchNormalization):
                out.append(prefix + sub.name)
            elif list(sub._flatten_layers(include_self=False, recursive=False)):
                walk(sub, prefix + sub.name + "/")

    walk(model, "")
    return out


def _hub(model_dir, hub):
    """The model directory as a Hugging Face Hub snapshot: files are symlinks into ../blobs/, beside a model card."""
    blobs = os.path.join(os.path.dirname(hub), "blobs")
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(hub)
    for i, name in enumerate(sorted(os.listdir(model_dir))):
        if os.path.isdir(os.path.join(model_dir, name)):  # assets/: empty (no layer has assets), so git has none
            continue
        blob = os.path.join(blobs, f"blob{i}")
        shutil.copyfile(os.path.join(model_dir, name), blob)
        os.symlink(os.path.relpath(blob, hub), os.path.join(hub, name))
    with open(os.path.join(hub, "README.md"), "w") as f:
        f.write("---\nlibrary_name: keras\n---\n\nThis model has been uploaded using the Keras library.\n")
    with open(os.path.join(hub, ".gitattributes"), "w") as f:
        f.write("*.h5 filter=lfs diff=lfs merge=lfs -text\n")


def build(root):
    import keras as K
    from keras.src.saving import saving_lib

    K.utils.set_random_seed(0)
    factory = _factory(root)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(320, 10)).astype("float32") * 3 + 5
    y = (x @ rng.normal(size=(10, 1)) / 3).astype("float32")
    model = factory.nested()
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    model.fit(x, y, batch_size=64, epochs=3, verbose=0, shuffle=False)
    model.save(os.path.join(root, "model.keras"))
    K.saving.save_model(model, os.path.join(root, "model_dir"), zipped=False)
    _hub(os.path.join(root, "model_dir"), os.path.join(root, "hub", "snapshot"))
    saving_lib.save_model(model, os.path.join(root, "model_npz.keras"), weights_format="npz")
    saving_lib.save_model(model, os.path.join(root, "npz_dir"), weights_format="npz", zipped=False)
    constrained = K.Sequential([K.Input((4,)), K.layers.Dense(3, kernel_constraint=K.constraints.MaxNorm(2))])
    saving_lib.save_model(constrained, os.path.join(root, "constraint_npz.keras"), weights_format="npz")
    model.save_weights(os.path.join(root, "model.weights.h5"))
    os.makedirs(os.path.join(root, "sharded"))
    model.save_weights(os.path.join(root, "sharded", "w.weights.json"), max_shard_size=0.000004)
    np.save(os.path.join(root, "X.npy"), x)
    np.save(os.path.join(root, "y.npy"), y)
    shards = sorted(n for n in os.listdir(os.path.join(root, "sharded")) if n.endswith(".weights.h5"))
    with open(os.path.join(root, "info.json"), "w") as f:
        json.dump({"bn": bn_paths(K, model), "shards": shards}, f)


def backbone(root):
    import keras as K

    K.utils.set_random_seed(0)
    factory = _factory(root)
    out = os.path.join(root, "backbone")
    os.makedirs(os.path.join(out, "sharded"))
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(64, 32, 32, 3)) + rng.normal(size=(64, 1, 1, 3))).astype("float32")
    y = K.utils.to_categorical(rng.integers(0, 4, size=64), 4)
    factory.backbone().save(os.path.join(out, "arch.keras"))  # the architecture, with other (untrained) weights
    model = factory.backbone()
    model.compile(optimizer=K.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    model.save_weights(os.path.join(out, "sharded", "w.weights.json"), max_shard_size=0.001)
    model.save_weights(os.path.join(out, "w.weights.h5"))
    np.save(os.path.join(out, "X.npy"), x)
    shards = sorted(n for n in os.listdir(os.path.join(out, "sharded")) if n.endswith(".weights.h5"))
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump({"bn": bn_paths(K, model), "shards": shards}, f)


def _holds_npz(item):
    import zipfile

    if not zipfile.is_zipfile(item):
        return False
    with zipfile.ZipFile(item) as z:
        return "model.weights.npz" in z.namelist()


def _npz_store(stock):
    """Keras' npz store with its two defects worked around: it loads with ``allow_pickle=False`` (so it refuses
    the pickles it writes) and reads ``__root__`` with ``dict()`` of a 0-d array (which raises)."""

    class Store(stock):
        def __init__(self, root_path, archive=None, mode="r"):
            real = np.load
            np.load = lambda f, allow_pickle=False, **kw: real(f, allow_pickle=True, **kw)
            try:
                super().__init__(root_path, archive, mode)
            finally:
                np.load = real

        def get(self, path):
            if not path and "__root__" in self.contents:
                return self.contents["__root__"].tolist()
            return super().get(path)

    return Store


def _stock_refusal(K, item):
    """What stock ``keras.saving.load_model`` says of an npz-weights ``.keras`` (None: it loads it)."""
    try:
        K.saving.load_model(item, compile=False)
    except ValueError as e:
        return str(e)
    return None


def _load(root, item):
    """``SPEC=WEIGHTS``: the factory's model with ``load_weights(WEIGHTS)``; otherwise ``load_model(item)``."""
    import importlib

    import keras as K

    if "=" not in item:
        if not _holds_npz(item):
            return K.saving.load_model(item, compile=False)
        from keras.src.saving import saving_lib

        stock = saving_lib.NpzIOStore
        saving_lib.NpzIOStore = _npz_store(stock)
        try:
            return K.saving.load_model(item, compile=False)
        finally:
            saving_lib.NpzIOStore = stock
    spec, weights = item.split("=", 1)
    if root not in sys.path:
        sys.path.insert(0, root)
    module, _, name = spec.partition(":")
    model = getattr(importlib.import_module(module), name)()
    model.load_weights(weights)
    return model


def _stats(K, model):
    out = {}

    def walk(container, prefix):
        for sub in container._flatten_layers(include_self=False, recursive=False):
            if isinstance(sub, K.layers.BatchNormalization):
                out[prefix + sub.name] = [
                    np.asarray(sub.moving_mean).tolist(),
                    np.asarray(sub.moving_variance).tolist(),
                ]
            elif list(sub._flatten_layers(include_self=False, recursive=False)):
                walk(sub, prefix + sub.name + "/")

    walk(model, "")
    return out


def check(root, data, original, *items):
    import keras as K

    x = np.load(data)
    model = _load(root, original)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, K.layers.Dropout):
            layer.rate = 0.0
    reference = np.asarray(model(x, training=True), np.float64)
    scale = float(np.abs(reference).max())
    for item in items:
        model = _load(root, item)
        after = np.asarray(model(x, training=False), np.float64)
        row = {"item": item, "scale": scale, "gap": float(np.abs(after - reference).max()) / scale}
        row.update(outputs=after.ravel()[:64].tolist(), stats=_stats(K, model))
        if "=" not in item and _holds_npz(item):
            row["stock_refusal"] = _stock_refusal(K, item)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    {"build": build, "backbone": backbone, "check": check}[sys.argv[1]](*sys.argv[2:])
