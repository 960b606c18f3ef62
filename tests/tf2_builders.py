"""TF2 object-based checkpoints for tests/test_tf2.py, built by real Keras 3 and TensorFlow in a subprocess.

    python tf2_builders.py build OUT
    python tf2_builders.py check OUT PREFIX OUTPUTS.npy

``build`` writes into OUT:

* ``tf2_factory.py``: ``build()`` returns the model: a Keras Applications MobileNetV2
  backbone (alpha 0.35, 32x32, ``weights=None``) nested as a layer, and a head of its
  own (pooling, Dropout, Dense, BatchNormalization ``head_bn``, Dense);
* ``ckpts/``: the model trained 3 steps in a custom loop (Adam, BN in training mode),
  saved by ``tf.train.CheckpointManager`` under the root names ``encoder`` (the
  model), ``optim`` (the optimizer) and ``global_step`` (a step counter);
* ``arch.keras``: the same architecture with other, untrained, weights;
* ``X.npy`` (64 samples), ``ref.npy``: the reference outputs computed without
  ckptdoctor: the model restored from the checkpoint, dropout rate set to 0, and
  called with ``training=True`` on all samples in one batch;
* ``info.json``: the BN layers' paths (``backbone/bn_Conv1``...), the checkpoint prefix,
  the moving statistics' keys.

``check`` restores PREFIX into new objects with the same roots, asserts
``assert_existing_objects_matched()``, saves the model's inference outputs on X.npy to
OUTPUTS.npy and prints ``{"step": ...}``.
"""

from __future__ import annotations

import json
import os
import sys

FACTORY = """
import keras


def build():
    inp = keras.Input((32, 32, 3), name="image")
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, name="backbone"
    )
    x = backbone(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Dense(16, name="fc")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.ReLU()(x)
    out = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name="classifier")
"""


def _factory(out):
    sys.path.insert(0, out)
    import tf2_factory

    return tf2_factory.build


def _bn_paths(model, prefix=""):
    import keras

    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            yield path
        if hasattr(layer, "layers") and layer.layers:
            yield from _bn_paths(layer, path + "/")


def _roots(model):
    import keras
    import tensorflow as tf

    opt = keras.optimizers.Adam(1e-3)
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    return tf.train.Checkpoint(encoder=model, optim=opt, global_step=step), opt, step


def build(out):
    import numpy as np
    import tensorflow as tf

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tf2_factory.py"), "w") as f:
        f.write(FACTORY)
    factory = _factory(out)
    rng = np.random.RandomState(0)
    x = (rng.rand(64, 32, 32, 3) * 255).astype("float32")
    y = rng.randint(0, 5, size=64)
    model = factory()
    ckpt, opt, step = _roots(model)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i in range(3):
        batch = slice(16 * i, 16 * i + 16)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[batch], model(x[batch], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(out, "ckpts"), max_to_keep=2)
    prefix = manager.save()
    factory().save(os.path.join(out, "arch.keras"))  # other, untrained weights
    np.save(os.path.join(out, "X.npy"), x)

    copy = factory()
    tf.train.Checkpoint(encoder=copy).read(prefix).expect_partial()
    copy.get_layer("drop").rate = 0.0
    np.save(os.path.join(out, "ref.npy"), np.asarray(copy(x, training=True)))
    stats = [name for name, _shape in tf.train.list_variables(prefix) if "/moving_" in name]
    info = {"prefix": prefix, "bn_layers": list(_bn_paths(model)), "statistics": stats, "step": int(step.numpy())}
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f)


def check(out, prefix, outputs):
    import numpy as np

    model = _factory(out)()
    ckpt, _opt, step = _roots(model)
    ckpt.restore(prefix).assert_existing_objects_matched()
    x = np.load(os.path.join(out, "X.npy"))
    np.save(outputs, np.asarray(model(x, training=False)))
    print(json.dumps({"step": int(step.numpy())}))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4])
