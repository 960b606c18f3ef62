"""Published architectures with stale BN statistics, for tests/test_zoo.py (run in a subprocess each).

    python zoo_builders.py build FAMILY NET OUT
    python zoo_builders.py evaluate FAMILY X.npy INFO.json MODEL OUT.npy [MODEL OUT.npy ...]

FAMILY is ``keras3`` (``keras.applications`` saved as ``.keras``), ``tfkeras`` (``tf_keras.applications``
saved as legacy ``.h5`` or, for NET ending in ``-savedmodel``, as a SavedModel directory) or ``slim``
(TF-Slim nets in a TF1 graph saved by ``tf.compat.v1.train.Saver`` with its ``.meta``).

``build`` makes the net at 32x32x3 with 10 classes (``weights=None``, logits: no softmax), trains it a few
steps with SGD at a high learning rate and momentum (Keras: BN momentum 0.99, so the moving statistics are
stale; slim: the train op does not depend on ``UPDATE_OPS``, so they stay at their initial values), saves it
and writes into OUT:

* the model (``model.keras``, ``model.h5``, ``savedmodel/`` or ``model.ckpt.*``) and ``X.npy`` (the samples);
* ``ref.npy``: the reference outputs, computed independently of ckptdoctor from the saved file: BN in
  training mode over all samples in one batch and nothing else in training mode. Keras: a freshly loaded copy
  with every Dropout/SpatialDropout/GaussianDropout/AlphaDropout rate and GaussianNoise stddev set to 0, called
  with ``training=True``. Slim: the same net built in a fresh graph with ``dropout_keep_prob=1.0``, the
  checkpoint restored, ``is_training`` fed True;
* ``info.json``: ``model`` (the path to inspect and repair), ``bn_layers`` (Keras: the BatchNormalization
  layers' paths from the top model, ``a/b`` for nested models; slim: the BN variable scopes), ``zeroed`` (the
  noise layers set to 0 for the reference), ``input``/``output``/``training`` (slim: tensor names),
  ``samples`` and ``seconds`` (the build's wall time).

``evaluate`` loads each MODEL (Keras: safe mode; slim: ``import_meta_graph`` of ``MODEL.meta`` and restore) and
saves its outputs on X.npy to OUT.npy in inference mode (Keras ``model(x, training=False)``; slim
``is_training`` fed False).
"""

import importlib
import json
import os
import sys
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SIZE, CLASSES, SAMPLES, BATCH, EPOCHS = 32, 10, 64, 32, 2
NOISE_CLASSES = {
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "AlphaDropout",
    "GaussianNoise",
}
BN_CLASSES = {"BatchNormalization", "SyncBatchNormalization"}
SLIM_NETS = ("resnet_v1_50", "inception_v2")


def _keras(family):
    """Keras 3 must run without TF_USE_LEGACY_KERAS; tf-keras and tf.compat.v1.layers need it."""
    if family == "keras3":
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import keras as K
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as K
    K.utils.set_random_seed(0)
    return K


def make_data(net):
    """SAMPLES images whose brightness and contrast vary per image; 0..255 like the apps expect."""
    rng = np.random.default_rng(zlib.crc32(net.encode()))
    base = rng.uniform(0, 1, size=(SAMPLES, SIZE, SIZE, 3))
    contrast = rng.uniform(0.3, 1.0, size=(SAMPLES, 1, 1, 1))
    brightness = rng.uniform(0.0, 0.6, size=(SAMPLES, 1, 1, 3))
    x = np.clip(base * contrast + brightness, 0, 1) * 255
    y = rng.integers(0, CLASSES, size=SAMPLES)
    return x.astype("float32"), y.astype("int64")


# --------------------------------------------------------------------------- Keras


def walk(model, prefix=""):
    """(path, layer) for every layer, nested models' layers by their path from the top (``a/b``)."""
    for layer in model.layers:
        path = prefix + layer.name
        yield path, layer
        if hasattr(layer, "layers") and layer.layers:
            yield from walk(layer, path + "/")


def zero_noise(model):
    """Set every dropout rate and noise stddev to 0; return the paths changed."""
    changed = []
    for path, layer in walk(model):
        if any(cls.__name__ in NOISE_CLASSES for cls in type(layer).__mro__):  # subclasses too
            if hasattr(layer, "stddev"):
                layer.stddev = 0.0
            if hasattr(layer, "rate"):
                layer.rate = 0.0
            changed.append(path)
    return changed


def keras_app(K, net):
    kwargs = dict(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None)
    return getattr(K.applications, net)(**kwargs)


def load_keras(family, K, path):
    if family == "keras3":
        return K.saving.load_model(path, compile=False, safe_mode=True)
    return K.models.load_model(path, compile=False)


def build_keras(family, net, out):
    K = _keras(family)
    savedmodel = net.endswith("-savedmodel")
    app = net[: -len("-savedmodel")] if savedmodel else net
    x, y = make_data(net)
    model = keras_app(K, app)
    model.compile(
        optimizer=K.optimizers.SGD(0.05, momentum=0.9), loss=K.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=False)
    os.makedirs(out, exist_ok=True)
    if family == "keras3":
        path = os.path.join(out, "model.keras")
        model.save(path)
    elif savedmodel:
        path = os.path.join(out, "savedmodel")
        model.save(path, save_format="tf")
    else:
        path = os.path.join(out, "model.h5")
        model.save(path, save_format="h5")
    np.save(os.path.join(out, "X.npy"), x)
    bn = [p for p, layer in walk(model) if type(layer).__name__ in BN_CLASSES]
    del model
    copy = load_keras(family, K, path)
    zeroed = zero_noise(copy)
    ref = np.asarray(copy(x, training=True))
    np.save(os.path.join(out, "ref.npy"), ref)
    return {"model": path, "bn_layers": bn, "zeroed": zeroed}


def evaluate_keras(family, path, x):
    K = _keras(family)  # imported once per process
    model = load_keras(family, K, path)
    return np.asarray(model(x, training=False))


# --------------------------------------------------------------------------- TF-Slim


def _slim():
    """tf-slim 1.1 imports tf_keras.legacy_tf_layers (through tensorflow.python.layers); tf-keras 2.21 keeps it
    as tf_keras.src.legacy_tf_layers: alias the package and its modules before tf_slim is imported."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    package = importlib.import_module("tf_keras.src.legacy_tf_layers")
    sys.modules.setdefault("tf_keras.legacy_tf_layers", package)
    for sub in ("base", "convolutional", "core", "normalization", "pooling", "variable_scope_shim"):
        sys.modules.setdefault(
            f"tf_keras.legacy_tf_layers.{sub}", importlib.import_module(f"tf_keras.src.legacy_tf_layers.{sub}")
        )
    tf.compat.v1.disable_v2_behavior()
    import tf_slim

    return tf, tf_slim


def slim_graph(tf, slim, net, keep_prob):
    """The net's logits on a 32x32 input placeholder with an ``is_training`` switch (default False)."""
    from tf_slim.nets import inception_v2, resnet_v1

    v1 = tf.compat.v1
    images = v1.placeholder(tf.float32, (None, SIZE, SIZE, 3), name="images")
    training = v1.placeholder_with_default(False, (), name="is_training")
    scaled = images / 127.5 - 1.0
    if net == "resnet_v1_50":
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            logits, _ = resnet_v1.resnet_v1_50(scaled, CLASSES, is_training=training, global_pool=True)
        logits = tf.squeeze(logits, [1, 2])
    elif net == "inception_v2":
        with slim.arg_scope(inception_v2.inception_v2_arg_scope()):
            logits, _ = inception_v2.inception_v2(scaled, CLASSES, is_training=training, dropout_keep_prob=keep_prob)
    else:
        raise SystemExit(f"unknown slim net {net!r}: expected one of {SLIM_NETS}")
    return images, training, tf.identity(logits, name="zoo_logits")


def build_slim(net, out):
    tf, slim = _slim()
    v1 = tf.compat.v1
    x, y = make_data(net)
    os.makedirs(out, exist_ok=True)
    prefix = os.path.join(out, "model.ckpt")
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        images, training, logits = slim_graph(tf, slim, net, keep_prob=0.8)
        labels = v1.placeholder(tf.int64, (None,), name="labels")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
        # No control dependency on UPDATE_OPS: the moving statistics stay at 0 and 1.
        train_op = v1.train.MomentumOptimizer(0.05, 0.9).minimize(loss)
        bn = sorted(
            v.op.name[: -len("/moving_mean")] for v in v1.global_variables() if v.op.name.endswith("/moving_mean")
        )
        saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(EPOCHS):
                for s in range(0, SAMPLES, BATCH):
                    sess.run(train_op, {images: x[s : s + BATCH], labels: y[s : s + BATCH], training: True})
            saver.save(sess, prefix)
    names = {"input": images.name, "output": logits.name, "training": training.name}
    graph = tf.Graph()  # the reference: the same net without dropout, restored, BN in training mode
    with graph.as_default():
        images, training, logits = slim_graph(tf, slim, net, keep_prob=1.0)
        with v1.Session(graph=graph) as sess:
            v1.train.Saver().restore(sess, prefix)
            ref = sess.run(logits, {images: x, training: True})
    np.save(os.path.join(out, "X.npy"), x)
    np.save(os.path.join(out, "ref.npy"), ref)
    return {"model": prefix, "bn_layers": bn, "zeroed": [], **names}


def evaluate_slim(prefix, x, info):
    tf, _ = _slim()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        saver = v1.train.import_meta_graph(prefix + ".meta")
        with v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            return sess.run(info["output"], {info["input"]: x, info["training"]: False})


# --------------------------------------------------------------------------- command line


def main(argv):
    if argv[0] == "build":
        family, net, out = argv[1:4]
        started = time.perf_counter()
        info = build_slim(net, out) if family == "slim" else build_keras(family, net, out)
        info.update(family=family, net=net, samples=SAMPLES, seconds=round(time.perf_counter() - started, 1))
        with open(os.path.join(out, "info.json"), "w") as f:
            json.dump(info, f, indent=1)
        return 0
    if argv[0] == "evaluate":
        family, data, info_path, pairs = argv[1], argv[2], argv[3], argv[4:]
        x = np.load(data)
        with open(info_path) as f:
            info = json.load(f)
        for model, out in zip(pairs[::2], pairs[1::2]):
            outputs = evaluate_slim(model, x, info) if family == "slim" else evaluate_keras(family, model, x)
            np.save(out, outputs)
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
