"""A Keras 3 residual conv net with many BN layers, for the report tests (run in a subprocess).

    python report_builders.py OUT [BLOCKS]

Writes OUT/model.keras and OUT/X.npy (256 samples of 8x8x3). The net is a stem (conv -> BN ``stem_bn``) and
BLOCKS residual blocks (``block{b}_conv1`` -> ``block{b}_bn1`` -> relu -> ``block{b}_conv2`` -> ``block{b}_bn2``,
added to the block's input): 2 * BLOCKS + 1 BN layers, created (and run) in that order, while Keras 3 stores them
as ``layers/batch_normalization_N`` (so ``block5_bn2`` is stored before ``block1_bn2``). It is trained for one
epoch of 4 steps with BN momentum 0.99, so every moving statistic lags (``bn-stats-stale`` with the data), and
``block2_bn1``'s statistics are then set back to their initial values (``bn-stats-at-init``).
"""

import os
import sys

if __name__ == "__main__":  # as a builder: Keras 3. Imported by a test for its names: the test's environment stays.
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

AT_INIT = "block2_bn1"
BLOCKS = 10  # 21 BN layers; block10 sorts before block2 by plain string order


def bn_names(blocks: int) -> list[str]:
    """The BN layers in the order the network runs them."""
    return ["stem_bn"] + [f"block{b}_bn{i}" for b in range(1, blocks + 1) for i in (1, 2)]


def build(out: str, blocks: int) -> None:
    import keras as K

    K.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(256, 8, 8, 3)) * 2 + 1).astype("float32")
    y = rng.integers(0, 4, size=(256,))
    inp = K.Input((8, 8, 3), name="image")
    h = K.layers.Conv2D(16, 3, padding="same", name="stem_conv")(inp)
    h = K.layers.ReLU()(K.layers.BatchNormalization(momentum=0.99, name="stem_bn")(h))
    for b in range(1, blocks + 1):
        r = K.layers.Conv2D(16, 3, padding="same", name=f"block{b}_conv1")(h)
        r = K.layers.ReLU()(K.layers.BatchNormalization(momentum=0.99, name=f"block{b}_bn1")(r))
        r = K.layers.Conv2D(16, 3, padding="same", name=f"block{b}_conv2")(r)
        r = K.layers.BatchNormalization(momentum=0.99, name=f"block{b}_bn2")(r)
        h = K.layers.ReLU()(K.layers.Add()([h, r]))
    out_layer = K.layers.Dense(4, name="head")(K.layers.GlobalAveragePooling2D()(h))
    model = K.Model(inp, out_layer)
    model.compile(K.optimizers.SGD(0.05), K.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    bn = model.get_layer(AT_INIT)
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    os.makedirs(out, exist_ok=True)
    model.save(os.path.join(out, "model.keras"))
    np.save(os.path.join(out, "X.npy"), x)


if __name__ == "__main__":
    build(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else BLOCKS)
