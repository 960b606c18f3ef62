"""Write the fuzzers' seed corpus: small real files, written by TensorFlow, Keras 3, tf-keras, numpy and h5py.

    .venv/bin/python fuzz/make_corpus.py        # rewrites fuzz/corpus/<harness>/ (a few hundred kB in all)

Each writer runs in its own process (Keras 3 and tf-keras cannot share one). The files are
committed; rerun this only to refresh them (their bytes change with the library versions, so
the corpus is not rebuilt by ``make fuzz``). The models are tiny on purpose: a Dense layer and a
BatchNormalization of two or three units, so that each seed is a few kB and mutations are fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tiny_model(K):
    inp = K.Input((3,), name="x")
    h = K.layers.Dense(2, name="dense")(inp)
    out = K.layers.BatchNormalization(name="bn")(h)
    model = K.Model(inp, out)
    model.compile(optimizer="adam", loss="mse")
    import numpy as np

    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    model.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
    return model


def write_keras3(out: Path) -> None:
    """A ``.keras`` archive (HDF5 weights, and npz weights: pickled members), its ``.weights.h5`` and a Keras 3
    legacy ``.h5``."""
    import keras as K
    from keras.src.saving import saving_lib

    K.utils.set_random_seed(0)
    model = _tiny_model(K)
    model.save(out / "keras_archive" / "tiny.keras")
    saving_lib.save_model(model, out / "keras_archive" / "tiny-npz.keras", weights_format="npz")
    write_npz_pickles(out / "keras_archive" / "tiny-npz.keras", out / "npz_pickle")
    model.save_weights(out / "keras_h5" / "keras3.weights.h5")
    model.save(out / "keras_h5" / "keras3-legacy.h5")


def write_npz_pickles(archive: Path, out: Path) -> None:
    """The pickles of an npz-weights ``.keras``, each member's bytes after its ``.npy`` header."""
    import io
    import zipfile

    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z, z.open("model.weights.npz") as f, zipfile.ZipFile(f) as npz:
        for name in ("__root__.npy", "layers/dense.npy", "layers/batch_normalization.npy", "optimizer.npy"):
            stream = io.BytesIO(npz.read(name))
            np.lib.format.read_magic(stream)
            np.lib.format.read_array_header_1_0(stream)
            (out / (name.replace("/", "-")[: -len(".npy")] + ".pickle")).write_bytes(stream.read())


def write_tfkeras(out: Path) -> None:
    """A legacy full ``.h5``, a legacy ``save_weights`` ``.h5`` and a SavedModel's two protobufs."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as K

    K.utils.set_random_seed(0)
    model = _tiny_model(K)
    model.save(out / "keras_h5" / "tfkeras-full.h5")
    model.save_weights(str(out / "keras_h5" / "tfkeras-weights.h5"))
    with tempfile.TemporaryDirectory() as d:
        sm = Path(d, "sm")
        model.save(str(sm))
        (out / "saved_model" / "tfkeras-saved_model.pb").write_bytes(b"\x00" + (sm / "saved_model.pb").read_bytes())
        (out / "saved_model" / "tfkeras-keras_metadata.pb").write_bytes(
            b"\x01" + (sm / "keras_metadata.pb").read_bytes()
        )
        fixture = FIXTURES / "savedmodel"
        shutil.rmtree(fixture, ignore_errors=True)
        (fixture / "variables").mkdir(parents=True)
        for name in ("saved_model.pb", "keras_metadata.pb"):
            shutil.copyfile(sm / name, fixture / name)
        for part in ("index", "data-00000-of-00001"):
            shutil.copyfile(sm / "variables" / f"variables.{part}", fixture / "variables" / f"variables.{part}")
        _bundle_seed(out, "savedmodel", str(sm / "variables" / "variables"))


def _bundle_seed(out: Path, name: str, prefix: str) -> None:
    """An sstable seed: the checkpoint's index and its one data file, as ``fuzz.sstable.join`` packs them."""
    from fuzz.sstable import join

    index = Path(prefix + ".index").read_bytes()
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    (out / "sstable" / name).write_bytes(join(index, data))


def write_tf(out: Path) -> None:
    """TF2 and TF1 bundles (an object graph, strings, a partitioned variable) and a SavedModel of a tf.Module."""
    import tensorflow as tf

    from ckptdoctor.readers.bundle import OBJECT_GRAPH_KEY, BundleReader
    from ckptdoctor.readers.sstable import read_table

    with tempfile.TemporaryDirectory() as d:
        module = tf.Module()
        module.v = tf.Variable([1.0, 2.0, 3.0])
        module.names = tf.Variable([b"a", b"bc"])
        module.step = tf.Variable(3, dtype=tf.int64)
        prefix = tf.train.Checkpoint(model=module).write(os.path.join(d, "tf2", "ckpt"))
        _bundle_seed(out, "tf2", prefix)
        for key, value in read_table(prefix + ".index"):
            name = "header" if not key else key.decode().replace("/", "_").replace(".", "")[:40]
            (out / "protowire" / f"entry-{name}").write_bytes(value)
        with BundleReader(prefix) as reader:
            (out / "protowire" / "object-graph").write_bytes(reader.read(OBJECT_GRAPH_KEY).reshape(-1)[0])
        tf.saved_model.save(module, os.path.join(d, "sm"))
        (out / "saved_model" / "module-saved_model.pb").write_bytes(
            b"\x00" + Path(d, "sm", "saved_model.pb").read_bytes()
        )

        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.get_variable(
                "part", shape=[6, 2], partitioner=tf.compat.v1.fixed_size_partitioner(3), dtype=tf.float32
            )
            tf.compat.v1.get_variable("plain", shape=[2], dtype=tf.float64)
            saver = tf.compat.v1.train.Saver()
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                path = saver.save(sess, os.path.join(d, "tf1", "model.ckpt"), write_meta_graph=False)
        _bundle_seed(out, "tf1-partitioned", path)
        for key, value in read_table(path + ".index"):
            if key[:1] == b"\x00":
                (out / "protowire" / "entry-slice-piece").write_bytes(value)
                break
    for sample in ("seed", "nobn"):
        _bundle_seed(out, sample, str(ROOT / "sample_ckpts" / sample / "model.ckpt"))


def write_data(out: Path) -> None:
    """``--data`` files: the first byte says which loader (0 ``.npy``, 1 ``.npz``, 2 ``.h5``), the rest is the file."""
    import io

    import h5py
    import numpy as np

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    buf = io.BytesIO()
    np.save(buf, x)
    (out / "data" / "x.npy").write_bytes(b"\x00" + buf.getvalue())
    for name, save in (("x.npz", np.savez), ("x-compressed.npz", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, inp=x, other=x[:2].astype(np.float64))
        (out / "data" / name).write_bytes(b"\x01" + buf.getvalue())
    with tempfile.TemporaryDirectory() as d:
        with h5py.File(os.path.join(d, "x.h5"), "w") as f:
            f["inp"] = x
            f["chunked"] = np.ones((4, 2), np.float32)
            f.create_dataset("gz", data=np.zeros((8, 2), np.float32), compression="gzip", chunks=(4, 2))
        (out / "data" / "x.h5").write_bytes(b"\x02" + Path(d, "x.h5").read_bytes())


WRITERS = {"keras3": write_keras3, "tfkeras": write_tfkeras, "tf": write_tf, "data": write_data}


def main(argv: list[str]) -> int:
    if argv:  # one writer, in this process
        WRITERS[argv[0]](Path(argv[1]))
        return 0
    for harness in ("sstable", "protowire", "saved_model", "keras_h5", "keras_archive", "npz_pickle", "data"):
        shutil.rmtree(CORPUS / harness, ignore_errors=True)
        (CORPUS / harness).mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in WRITERS:
        subprocess.run([sys.executable, __file__, name, str(CORPUS)], check=True, env=env)
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(CORPUS)}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
