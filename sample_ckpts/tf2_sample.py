"""Rebuild ``sample_ckpts/tf2-manager/``: a Keras 3 model trained in a custom loop, saved by CheckpointManager.

Usage: ``python sample_ckpts/tf2_sample.py`` (Keras 3; TF_USE_LEGACY_KERAS unset).

The model (``model_factory.py``) trains 30 Adam steps at a high learning rate with
BatchNormalization's default momentum 0.99, so its moving statistics lag the weights
(stale): the restored model's inference-mode outputs are far from its training-mode
ones. The checkpoint's root objects are ``net``, ``opt`` and ``step``. ``X.npy`` holds
the 256 training samples.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tf2-manager")


def main() -> int:
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, OUT)
    from model_factory import build

    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = (rng.rand(256, 12, 12, 3) * 255).astype("float32")
    y = rng.randint(0, 4, size=256)
    model = build()
    opt = keras.optimizers.Adam(1e-2)
    step = tf.Variable(0, dtype=tf.int64)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i in range(30):
        batch = slice((32 * i) % 256, (32 * i) % 256 + 32)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[batch], model(x[batch] / 255.0 * 4 - 2, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)
    ckpts = os.path.join(OUT, "ckpts")
    shutil.rmtree(ckpts, ignore_errors=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(net=model, opt=opt, step=step), ckpts, max_to_keep=1)
    manager.save()
    x_in = x / 255.0 * 4 - 2
    np.save(os.path.join(OUT, "X.npy"), x_in.astype("float32"))
    gap = float(np.max(np.abs(np.asarray(model(x_in, training=False)) - np.asarray(model(x_in, training=True)))))
    with open(os.path.join(OUT, "info.json"), "w") as f:
        json.dump({"steps": int(step.numpy()), "inference_vs_training_gap": gap}, f, indent=1)
    print(f"tf2-manager: {int(step.numpy())} steps, |inference - training| output gap {gap:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
