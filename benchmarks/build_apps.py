"""Build the published architectures section D times: ``keras.applications`` nets saved as ``.keras``.

    python benchmarks/build_apps.py OUTDIR [--arch ResNet50 --arch EfficientNetB0] [--size 64] [--samples 96]

Each net is built with ``weights=None`` (nothing to download), ``input_shape=(SIZE, SIZE, 3)`` and 10
classes, compiled with Adam and trained for two ``train_on_batch`` steps, so the file holds the
optimizer's variables too (ResNet50: about 280 MB, stored in the zip as Keras writes it) and the BN
moving statistics lag the weights. Saved as ``OUTDIR/<arch>/model.keras`` with ``OUTDIR/<arch>/X.npy``
(SAMPLES seeded float32 images, the generator of ``build_convnet.py``). Prints a JSON summary.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_convnet import images  # noqa: E402  (sets TF_USE_LEGACY_KERAS: undone below)

os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Keras 3 here
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build(keras, arch: str, outdir: str, size: int, samples: int) -> dict:
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = images(rng, samples, size)
    y = rng.integers(0, 10, samples)
    for _ in range(2):
        model.train_on_batch(x[:32], y[:32])
    folder = os.path.join(outdir, arch)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.keras")
    model.save(path)
    np.save(os.path.join(folder, "X.npy"), x)
    return {
        "arch": arch,
        "path": path,
        "data": os.path.join(folder, "X.npy"),
        "bytes": os.path.getsize(path),
        "params": int(model.count_params()),
        "bn_layers": sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers),
        "size": size,
        "samples": samples,
        "seconds": time.perf_counter() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--arch", action="append")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=96)
    args = parser.parse_args(argv)
    import keras

    built = [build(keras, a, args.outdir, args.size, args.samples) for a in args.arch or ["ResNet50", "EfficientNetB0"]]
    print(json.dumps(built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
