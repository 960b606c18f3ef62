"""Build the Keras 3 conv net the Keras repair benchmarks run (section C), and its data files.

    python benchmarks/build_keras.py OUTDIR [--steps N] [--data NAME:SAMPLES:SIZE ...]

The network (Keras 3, functional, channels last): input 16x16x3 (``(None, None, 3)``,
so 8x8 images fit too), eight blocks of ``Conv2D`` 3x3 (no bias) + ``BatchNormalization``
(``momentum=0.99``, the Keras default) + ReLU with 16, 16, 16, 32/2, 32, 32, 32/2, 32
channels (/2: stride 2), global average pooling, ``Dense(10)``. Trained for a few Adam
steps (``train_on_batch``) so the moving statistics lag far behind the data (after N
steps they hold ``1 - 0.99**N`` of the batch statistics), saved as ``OUTDIR/model.keras``.

Each ``--data NAME:SAMPLES:SIZE`` writes ``OUTDIR/NAME.npy`` with the same generator as
``build_convnet.py`` (seeded float32 images, per-channel offsets and scales), in chunks,
never whole in memory. Prints a JSON summary on stdout.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_convnet import images, run_builder  # noqa: E402  (sets TF_USE_LEGACY_KERAS: undone below)

os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3 here
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

BLOCKS = [(16, 1), (16, 1), (16, 1), (32, 2), (32, 1), (32, 1), (32, 2), (32, 1)]


def build(outdir: str, steps: int) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3), name="images")
    n = inp
    for i, (channels, stride) in enumerate(BLOCKS):
        n = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(n)
        n = keras.layers.BatchNormalization(momentum=0.99, name=f"bn{i}")(n)
        n = keras.layers.ReLU(name=f"relu{i}")(n)
    n = keras.layers.GlobalAveragePooling2D(name="pool")(n)
    out = keras.layers.Dense(10, name="logits")(n)
    model = keras.Model(inp, out, name="convnet")
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(1)
    for _ in range(steps):
        batch = images(rng, 64, 16)
        target = (batch[..., 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) + 2 * (
            batch[:, :8, :, 1].mean(axis=(1, 2)) > -1
        )
        model.train_on_batch(batch, target)
    path = os.path.join(outdir, "model.keras")
    model.save(path)
    return {
        "path": path,
        "bn_layers": len(BLOCKS),
        "steps": steps,
        "keras": keras.__version__,
        "bytes": os.path.getsize(path),
        "params": int(model.count_params()),
    }


def main(argv=None) -> int:
    return run_builder(build, __doc__, argv, first_seed=20)


if __name__ == "__main__":
    sys.exit(main())
