"""Builds the data-source tests' model and data, and the statistics they must give (Keras 3, one process).

``python data_source_builders.py OUT`` writes, under OUT:

* ``model.keras``: input ``image`` (16x16x3) -> ``Rescaling(1/255)`` -> Conv2D -> BatchNormalization ``bn``
  (stale statistics: the initial ones) -> ReLU -> pooling -> Dense;
* ``X.npy``: 40 random images as float32 0-255, in the sorted order of the image folder;
* ``images/cats``, ``images/dogs``: the same images, PNG (every fifth BMP), written by Pillow;
* ``shards/part-0.tfrecord``, ``part-1.tfrecord``: the same images, feature ``image`` a float_list of the
  flattened pixels (and ``label``), 20 records each; ``bytes/data.tfrecord.gz`` (GZIP): feature ``pixels``
  holding each image as ``tf.io.serialize_tensor``;
* ``big/a``: 6 images of 20x24, for resizing;
* ``expected.npz``: the exact mean and population variance of ``bn``'s input, per channel, computed by a Keras
  sub-model on all samples in one batch: over X (``all_*``), over its first 10 images (``first10_*``), and over
  the ``big`` images as ``keras.utils.image_dataset_from_directory`` loads them at 16x16 (``big_*``).
"""

import os
import sys

import numpy as np


def _moments(sub, x):
    feats = np.asarray(sub(x, training=False), dtype=np.float64)
    return feats.mean(axis=(0, 1, 2)), feats.var(axis=(0, 1, 2))


def main(out: str) -> None:
    import keras
    import tensorflow as tf
    from PIL import Image

    os.makedirs(out)
    rng = np.random.default_rng(7)
    n = 40
    # Channels of different brightness, so that wrong channel handling shows in the statistics.
    images = np.clip(rng.normal([60, 128, 200], 40, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    labels = np.arange(n) // 20
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(out, "images", ("cats", "dogs")[label])
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, f"img_{i:03d}.{'bmp' if i % 5 == 0 else 'png'}"))
    x = images.astype(np.float32)
    np.save(os.path.join(out, "X.npy"), x)

    os.makedirs(os.path.join(out, "shards"))
    for shard in range(2):
        with tf.io.TFRecordWriter(os.path.join(out, "shards", f"part-{shard}.tfrecord")) as w:
            for i in range(shard * 20, shard * 20 + 20):
                feature = {
                    "image": tf.train.Feature(float_list=tf.train.FloatList(value=x[i].ravel())),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
                }
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    os.makedirs(os.path.join(out, "bytes"))
    with tf.io.TFRecordWriter(os.path.join(out, "bytes", "data.tfrecord.gz"), options="GZIP") as w:
        for i in range(n):
            raw = tf.io.serialize_tensor(tf.constant(x[i])).numpy()
            feature = {"pixels": tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

    big = np.clip(rng.normal(128, 60, (6, 20, 24, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.join(out, "big", "a"))
    for i, image in enumerate(big):
        Image.fromarray(image).save(os.path.join(out, "big", "a", f"b{i}.png"))

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    model.save(os.path.join(out, "model.keras"))

    sub = keras.Model(model.input, model.get_layer("bn").input)
    loaded = keras.utils.image_dataset_from_directory(
        os.path.join(out, "big"), labels=None, image_size=(16, 16), shuffle=False, batch_size=64
    )
    big16 = np.concatenate([np.asarray(b) for b in loaded])
    expected = {}
    for name, data in (("all", x), ("first10", x[:10]), ("big", big16)):
        expected[f"{name}_mean"], expected[f"{name}_var"] = _moments(sub, data)
    np.savez(os.path.join(out, "expected.npz"), **expected)


if __name__ == "__main__":
    main(sys.argv[1])
