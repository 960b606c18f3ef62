"""--data where users keep their data: a folder of images, TFRecord shards, their own input function.

The model and the data are built by ``data_source_builders.py`` (Keras 3, one subprocess): a model with in-model
rescaling and one BN layer, 40 images as PNG/BMP files in class folders, as TFRecord shards, as X.npy; and the
exact moments of the BN layer's input over those images, computed by a Keras sub-model on all images in one batch.
Every repair runs the real CLI (two at a time) and its written statistics are read back with h5py.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, cli_command, h5_datasets, tf_reader_values

pytestmark = pytest.mark.slow  # make test-slow (see the README): the breadth of variants, not the core

BUILDER = Path(__file__).with_name("data_source_builders.py")

DATASET_MODULE = """
import numpy as np
import tensorflow as tf

HERE = {here!r}


def as_dataset():
    x = np.load(HERE + "/X.npy")
    y = (np.arange(len(x)) // 20).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def unbatched():
    return tf.data.Dataset.from_tensor_slices(np.load(HERE + "/X.npy"))


def in_sevens():
    return as_dataset().unbatch().batch(7)


def raising():
    raise ValueError("the bucket is not reachable")


def wrong_shape():
    return [np.zeros((4, 8, 8, 3), "float32")]


def nothing():
    return iter([])
"""

BROKEN_MODULE = "import numpy as np\nraise RuntimeError('config.yaml is missing')\n"

# name -> (--data, extra options): run once per module, two at a time.
REPAIRS = {
    "npy": ("X.npy", ("--batch-size", 16)),
    "folder": ("images", ("--batch-size", 16)),
    "shards": ("shards/part-*.tfrecord", ("--batch-size", 16)),
    "function": ("userdata:as_dataset", ()),
    "function-unbatched": ("userdata:unbatched", ("--batch-size", 16)),
    "function-rebatched": ("userdata:in_sevens", ("--batch-size", 16)),
    "bytes-gzip": ("bytes/data.tfrecord.gz", ("--batch-size", 16, "--input", "image=pixels")),
    "all-in-one": ("images", ("--batch-size", 64)),
    "max-samples": ("images", ("--batch-size", 4, "--max-samples", 10)),
    "resized": ("big", ()),
    "resize-refused": ("big", ("--resize=False",)),
    "bad-image": ("bad_images", ()),
    "missing-feature": ("shards", ("--input", "image=pixels")),
    "import-fails": ("brokendata:load", ()),
    "function-raises": ("userdata:raising", ()),
    "wrong-shape": ("userdata:wrong_shape", ()),
    "empty-folder": ("empty", ()),
    "empty-function": ("userdata:nothing", ()),
}


def _run_two_at_a_time(commands: dict, cwd: Path) -> dict:
    done, queue, running = {}, list(commands.items()), []
    while queue or running:
        while queue and len(running) < 2:
            name, argv = queue.pop(0)
            p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((name, argv, p))
        name, argv, p = running.pop(0)
        out, err = p.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(argv, p.returncode, out, err)
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The built model and data (``data_source_builders.py``), every repair of ``REPAIRS`` run on it."""
    out = tmp_path_factory.mktemp("sources") / "data"
    proc = subprocess.run([sys.executable, str(BUILDER), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "userdata.py").write_text(textwrap.dedent(DATASET_MODULE.format(here=str(out))))
    (out / "brokendata.py").write_text(BROKEN_MODULE)
    (out / "bad_images" / "a").mkdir(parents=True)
    (out / "bad_images" / "a" / "ok.png").write_bytes((out / "images" / "cats" / "img_001.png").read_bytes())
    (out / "bad_images" / "a" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    (out / "empty" / "cats").mkdir(parents=True)
    commands = {
        name: [*cli_command(), "repair", "model.keras", "--data", data, "--output", f"out-{name}.keras"]
        + [str(a) for a in extra]
        + ["--format", "json"]
        for name, (data, extra) in REPAIRS.items()
    }
    return out, _run_two_at_a_time(commands, out)


def _bn_statistics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The written BN layer's moving mean and variance, read with h5py from the .keras archive."""
    found = h5_datasets(path)
    prefix = "layers/batch_normalization/vars/"
    return found[prefix + "2"], found[prefix + "3"]


def _repaired(built, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    out, runs = built
    proc = runs[name]
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    return (report, *_bn_statistics(out / f"out-{name}.keras"))


@pytest.mark.parametrize(
    "name", ["folder", "shards", "function", "function-unbatched", "function-rebatched", "bytes-gzip"]
)
def test_each_source_gives_the_exact_moments_and_the_npy_repairs_statistics(built, name):
    out, _ = built
    expected = np.load(out / "expected.npz")
    report, mean, var = _repaired(built, name)
    assert report["samples"] == 40
    np.testing.assert_allclose(mean, expected["all_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, expected["all_var"], rtol=1e-5, atol=1e-7)
    # The same images in the same batches of 16: the same statistics as from X.npy, bit for bit.
    _, npy_mean, npy_var = _repaired(built, "npy")
    assert mean.tobytes() == npy_mean.tobytes() and var.tobytes() == npy_var.tobytes()


def test_the_report_names_the_source_and_the_samples(built):
    report, _, _ = _repaired(built, "folder")
    assert report["data"] == "images" and report["samples"] == 40 and report["batch_size"] == 16
    assert any("40 images in 2 folders" in n and "16x16x3 float32 in 0-255" in n for n in report["notes"])
    report, _, _ = _repaired(built, "function")
    assert report["batch_size"] == 16  # the dataset's own batches, used as they come
    assert any("userdata:as_dataset" in n and "tf.data.Dataset" in n for n in report["notes"])


def test_all_images_in_one_batch_match_the_exact_moments_closely(built):
    out, _ = built
    expected = np.load(out / "expected.npz")
    report, mean, var = _repaired(built, "all-in-one")
    assert report["samples"] == 40
    np.testing.assert_allclose(mean, expected["all_mean"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var, expected["all_var"], rtol=1e-6, atol=1e-8)


def test_max_samples_stops_early(built):
    out, _ = built
    expected = np.load(out / "expected.npz")
    report, mean, var = _repaired(built, "max-samples")
    assert report["samples"] == 10
    np.testing.assert_allclose(mean, expected["first10_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, expected["first10_var"], rtol=1e-5, atol=1e-7)


def test_other_sizes_are_resized_as_keras_loads_them_or_refused(built):
    out, runs = built
    expected = np.load(out / "expected.npz")
    report, mean, var = _repaired(built, "resized")
    assert any("6 resized to 16x16 (bilinear" in n for n in report["notes"])
    np.testing.assert_allclose(mean, expected["big_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, expected["big_var"], rtol=1e-5, atol=1e-7)
    assert_one_line_error(runs["resize-refused"], "b0.png is 20x24", "16x16", "--resize=False")


@pytest.mark.parametrize(
    "name,fragments",
    [
        ("bad-image", ("zz_broken.png", "is not a decodable image")),
        ("missing-feature", ("part-0.tfrecord: record 0 has no feature 'pixels'", "image, label")),
        ("import-fails", ("cannot import brokendata", "config.yaml is missing")),
        ("function-raises", ("userdata:raising raised ValueError: the bucket is not reachable",)),
        ("wrong-shape", ("(image)", "[4, 8, 8, 3]", "[None, 16, 16, 3]")),
        ("empty-folder", ("empty holds no image and no *.tfrecord* file",)),
        ("empty-function", ("userdata:nothing yields no batch",)),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(built, name, fragments):
    out, runs = built
    assert_one_line_error(runs[name], *fragments)
    assert not os.path.exists(out / f"out-{name}.keras")
    assert not [f for f in os.listdir(out) if f.startswith(".ckptdoctor-tmp")]


def test_help_says_a_function_runs_your_code():
    proc = subprocess.run([*cli_command(), "repair", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "package.module:function" in text and "this runs your code" in text
    assert "folder of images" in text and "TFRecord" in text and "--compression" in text


def test_a_tf1_graph_repairs_from_a_generator_and_a_tfrecord_as_from_its_npy(build, tmp_path):
    """A TF1 graph fed by a generator of (x, y) batches, or by a TFRecord file whose feature is named like the
    placeholder: the npy repair's statistics, bit for bit."""
    seed = build("seed", "v1").copy_to(tmp_path / "in")
    (tmp_path / "seedbatches.py").write_text(
        "import numpy as np\n\n\ndef batches():\n"
        f"    x = np.load({str(seed.X)!r})\n"
        "    for i in range(0, len(x), 64):\n"
        "        yield x[i : i + 64], np.zeros(len(x[i : i + 64]))\n"
    )
    import tensorflow as tf

    x = np.load(seed.X)
    with tf.io.TFRecordWriter(str(tmp_path / "seed.tfrecord")) as w:
        for i, row in enumerate(x):  # the feature named like the placeholder inp:0; the label matches none
            feature = {
                "inp": tf.train.Feature(float_list=tf.train.FloatList(value=row.ravel())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    outs = {}
    for name, data, method in (
        ("npy", str(seed.X), "train"),
        ("gen", "seedbatches:batches", "train"),
        ("tfrecord", "seed.tfrecord", "train"),
        ("npy-seq", str(seed.X), "sequential"),
        ("gen-seq", "seedbatches:batches", "sequential"),  # a pass per layer: the function is called again
    ):
        os.makedirs(tmp_path / f"fixed-{name}")
        outs[name] = str(tmp_path / f"fixed-{name}" / "model.ckpt")
        cmd = [*cli_command(), "repair", seed.prefix, "--data", data, "--batch-size", "64", "--method", method]
        proc = subprocess.run(
            cmd + ["--output", outs[name], "--format", "json"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["samples"] == len(np.load(seed.X))
    values = {name: tf_reader_values(path) for name, path in outs.items()}
    moving = [k for k in values["npy"] if "moving_" in k]
    assert moving
    for key in moving:
        assert values["gen"][key].tobytes() == values["npy"][key].tobytes(), key
        assert values["tfrecord"][key].tobytes() == values["npy"][key].tobytes(), key
        assert values["gen-seq"][key].tobytes() == values["npy-seq"][key].tobytes(), key
