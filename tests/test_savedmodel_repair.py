"""repair of SavedModel directories written by tf-keras, and several model inputs from one HDF5 file.

Models are built by ``savedmodel_builders.py`` in one subprocess (tf-keras, BN statistics
stale) and evaluated by ``keras_builders.py evaluate`` in another.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

HERE = Path(__file__).parent
VARIABLES = "variables/variables"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("savedmodels")
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "savedmodel_builders.py"), str(root), kinds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        for kinds in ("dense,lambda", "conv,multi")
    ]  # two at a time: one per core
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return root


def hashes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def variables(folder: Path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(folder / VARIABLES))
    return {k: np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()}


def losses(data, y, *paths):
    proc = subprocess.run(
        [sys.executable, str(HERE / "keras_builders.py"), "evaluate", "tfkeras", str(data), str(y)]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def repair_json(*args):
    proc = run_cli("repair", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def bn_keys(result):
    return {layer["layer"]: (layer["moving_mean"], layer["moving_variance"]) for layer in result["layers"]}


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_repair_rewrites_only_the_statistics_and_fixes_inference(built, tmp_path, kind):
    src = built / kind / "sm"
    before = hashes(src)
    out = tmp_path / "repaired"
    result = repair_json(src, "--data", built / kind / "X.npy", "--batch-size", 512, "--output", out)
    assert hashes(src) == before  # the input is never written
    assert result["output"] == str(out) and not any(p.name.startswith(".ckptdoctor-tmp") for p in tmp_path.iterdir())
    # Every file outside variables/ byte-identical, no file more or less.
    after = hashes(out)
    assert {k for k in after if not k.startswith("variables/")} == {k for k in before if not k.startswith("variables/")}
    for name, digest in before.items():
        if not name.startswith("variables/"):
            assert after[name] == digest, name
    # Every variable bit-identical but the moving statistics of the trainable BN layers.
    keys = bn_keys(result)
    assert set(keys) == ({"bn1", "bn2"})  # bn_frozen (dense) is left as it is
    stats = {k for pair in keys.values() for k in pair}
    assert all(k.startswith("layer_with_weights-") and k.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for k in stats)
    a, b = variables(src), variables(out)
    assert set(a) == set(b)
    for key in a:
        if key not in stats:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    assert result["updated"] == len(stats)
    # The statistics are numpy's mean and population variance of each BN input over all data.
    expected = np.load(built / kind / "stats.npz")
    for layer, (mm, mv) in keys.items():
        np.testing.assert_allclose(
            b[mm], expected[layer + "/mean"], rtol=1e-4, atol=1e-6 * np.abs(expected[layer + "/mean"]).max()
        )
        np.testing.assert_allclose(b[mv], expected[layer + "/var"], rtol=1e-4)
        assert not np.allclose(a[mv], b[mv], rtol=1e-2)  # they were stale
    for layer in result["layers"]:  # all data in one batch: inference mode now gives training mode's outputs
        assert layer["gap_before"] > 0.1 and layer["gap_after"] < 1e-3 * layer["gap_before"], layer
    # tf-keras loads the repaired SavedModel, and inference now matches training mode.
    old, new = losses(built / kind / "X.npy", built / kind / "y.npy", src, out)
    assert old["infer"] > 5 * old["train"], old
    assert new["infer"] / new["train"] < 1.5 and new["train"] / new["infer"] < 1.5, new


def test_dry_run_writes_nothing_and_existing_output_needs_force(built, tmp_path):
    src, data = built / "dense" / "sm", built / "dense" / "X.npy"
    result = repair_json(src, "--data", data, "--dry-run", "--output", tmp_path / "out")
    assert result["dry_run"] and result["output"] is None and len(result["layers"]) == 2
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    proc = run_cli("repair", src, "--data", data, "--output", tmp_path / "out")
    assert_one_line_error(proc, "exists", "--force")
    assert (tmp_path / "out" / "old.txt").exists()
    repair_json(src, "--data", data, "--output", tmp_path / "out", "--force")
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old output is gone, no temporaries


def test_in_place_keeps_a_backup_and_uneven_batches_give_the_same_statistics(built, tmp_path):
    src = tmp_path / "sm"
    shutil.copytree(built / "dense" / "sm", src)
    before = hashes(src)
    result = repair_json(
        src, "--data", built / "dense" / "X.npy", "--in-place", "--batch-size", 96, "--method", "sequential"
    )
    backup = Path(result["backup"])
    assert backup.name.startswith("sm.backup-") and hashes(backup) == before
    mm, mv = bn_keys(result)["bn1"]  # bn1's input does not depend on the batches or the mode
    expected = np.load(built / "dense" / "stats.npz")
    got = variables(src)
    np.testing.assert_allclose(got[mm], expected["bn1/mean"], rtol=1e-4)
    np.testing.assert_allclose(got[mv], expected["bn1/var"], rtol=1e-4)


def test_lambda_refused_without_unsafe_and_exported_savedmodel_refused(built, tmp_path):
    folder = built / "lambda"
    proc = run_cli("repair", folder / "sm", "--data", folder / "X.npy", "--output", tmp_path / "out")
    assert_one_line_error(proc, "Lambda", "double", "--unsafe")
    assert not (tmp_path / "out").exists()
    exported = tmp_path / "exported"
    shutil.copytree(built / "dense" / "sm", exported)
    (exported / "keras_metadata.pb").unlink()  # what Keras 3 model.export / tf.saved_model.save write
    proc = run_cli("repair", exported, "--data", built / "dense" / "X.npy")
    assert_one_line_error(proc, "keras_metadata.pb", "cannot be repaired")
    assert not (tmp_path / "exported-repaired").exists()


def test_lambda_savedmodel_repaired_with_unsafe(built, tmp_path):
    folder = built / "lambda"
    result = repair_json(folder / "sm", "--data", folder / "X.npy", "--output", tmp_path / "out", "--unsafe")
    assert set(bn_keys(result)) == {"bn1", "bn2"} and (tmp_path / "out" / "keras_metadata.pb").is_file()


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_two_inputs_from_one_hdf5_file(built, tmp_path):
    import h5py

    folder = built / "multi"
    out = tmp_path / "out.h5"
    result = repair_json(folder / "model.h5", "--data", folder / "data.h5", "--output", out)
    assert result["inputs"] == ["left", "right"] and len(result["layers"]) == 3
    left = np.load(folder / "data.npz")["left"].astype(np.float64)  # bn_left's input is dl(left)
    with h5py.File(out, "r") as f:
        kernel, bias = f["model_weights/dl/dl/kernel:0"][()], f["model_weights/dl/dl/bias:0"][()]
        mean = f["model_weights/bn_left/bn_left/moving_mean:0"][()]
    np.testing.assert_allclose(mean, (left @ kernel + bias).mean(axis=0), rtol=1e-4, atol=1e-5)
    (after,) = losses(folder / "data.npz", folder / "y.npy", out)
    assert after["infer"] / after["train"] < 1.5 and after["train"] / after["infer"] < 1.5, after
    with h5py.File(tmp_path / "left-only.h5", "w") as f:
        f["left"] = np.zeros((4, 6), np.float32)
    proc = run_cli("repair", folder / "model.h5", "--data", tmp_path / "left-only.h5", "--dry-run")
    assert_one_line_error(proc, "right")


def test_bare_hdf5_for_a_tf1_graph(build, tmp_path):
    import h5py

    built = build("seed-no-update", "v1")
    X = np.load(built.X)
    several = tmp_path / "several.h5"
    with h5py.File(several, "w") as f:
        f["X"], f["y"] = X, np.zeros((len(X), 1), np.float32)
    proc = run_cli("repair", built.prefix, "--data", several, "--dry-run")
    assert_one_line_error(proc, "X, y", "no placeholder named X", "FILE.h5:DATASET")
    named = tmp_path / "named.h5"
    with h5py.File(named, "w") as f:
        f["inp"] = X
    proc = run_cli("repair", built.prefix, "--data", named, "--dry-run")
    assert proc.returncode == 0, proc.stderr
