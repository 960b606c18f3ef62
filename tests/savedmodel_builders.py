"""tf-keras models with stale BN statistics saved as SavedModel directories (run in a subprocess).

    python savedmodel_builders.py ROOT [KIND,...]

Writes, with the models of ``keras_builders.py`` (trained a few steps, BN momentum 0.99):
ROOT/dense/sm and ROOT/conv/sm (SavedModels), their X.npy and y.npy, and stats.npz: each
BN layer's input moments in training mode over the whole data as one batch, computed with
numpy; ROOT/lambda/sm (a Lambda layer) with X.npy; ROOT/multi/model.h5 (two inputs, legacy
HDF5) with data.h5 (datasets ``left``, ``right`` and ``y``), data.npz and y.npy.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from keras_builders import _keras, _model  # noqa: E402


def build(kind, out):
    K = _keras("tfkeras")
    model, x, y = _model(K, kind, np.random.default_rng(1))
    model.compile(optimizer=K.optimizers.Adam(0.03), loss="mse")
    xs = [x["left"], x["right"]] if isinstance(x, dict) else x
    model.fit(xs, y, batch_size=64, epochs=4, verbose=0, shuffle=False)
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "y.npy"), y)
    if kind == "multi":
        model.save(os.path.join(out, "model.h5"))
        np.savez(os.path.join(out, "data.npz"), **x)
        with h5py.File(os.path.join(out, "data.h5"), "w") as f:
            f["left"], f["right"], f["y"] = x["left"], x["right"], y
        return
    np.save(os.path.join(out, "X.npy"), x)
    bns = [layer for layer in model.layers if isinstance(layer, K.layers.BatchNormalization) and layer.trainable]
    model.save(os.path.join(out, "sm"), save_format="tf")
    if kind != "lambda":  # after saving: a training-mode call moves the statistics in memory
        probe = K.Model(model.inputs, [layer.input for layer in bns])
        values = probe(x, training=True)
        stats = {}
        for layer, v in zip(bns, values):
            v = np.asarray(v, np.float64).reshape(-1, v.shape[-1])
            stats[layer.name + "/mean"], stats[layer.name + "/var"] = v.mean(axis=0), v.var(axis=0)
        np.savez(os.path.join(out, "stats.npz"), **stats)


if __name__ == "__main__":
    for kind in (sys.argv[2] if len(sys.argv) > 2 else "dense,conv,lambda,multi").split(","):
        build(kind, os.path.join(sys.argv[1], kind))
