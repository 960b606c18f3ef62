"""repair on real checkpoints: statistics against an independent computation, bit-identical
untouched tensors, the seed's inference error fixed, and bad input refused with exit 2."""

import hashlib
import os
import pickle

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, tf_reader_values

import ckptdoctor

# The tensors that feed each BN layer, by how the builders name them (independent of our graph analysis).
BN_INPUTS = {
    "seed": ["dense/BiasAdd:0", "dense_1/BiasAdd:0", "dense_2/BiasAdd:0"],
    "convnet": ["conv2d/Conv2D:0", "conv2d_1/Conv2D:0", "conv2d_2/Conv2D:0"],
}
SCOPES = ["batch_normalization", "batch_normalization_1", "batch_normalization_2"]


def digest(folder) -> dict:
    return {
        name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(folder))
    }


def _session(prefix, meta):
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
        sess = tf.compat.v1.Session(graph=g)
        sess.run(tf.compat.v1.global_variables_initializer())
        present = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
        var_list = {v.op.name: v for v in g.get_collection("variables") if v.op.name in present}
        tf.compat.v1.train.Saver(var_list=var_list).restore(sess, prefix)
    return g, sess


def independent_stats(built, batch_size):
    """Mean and population variance of each BN input over all batches, in training mode, with numpy."""
    family = "convnet" if built.info["kind"] == "convnet" else "seed"
    g, sess = _session(built.prefix, built.prefix + ".meta")
    X = np.load(built.X)
    seen = [[] for _ in BN_INPUTS[family]]
    with sess:
        fetches = [g.get_tensor_by_name(n) for n in BN_INPUTS[family]]
        for start in range(0, len(X), batch_size):
            feed = {built.info["input"]: X[start : start + batch_size], built.info["training_flag"]: True}
            for i, v in enumerate(sess.run(fetches, feed)):
                seen[i].append(v.reshape(-1, v.shape[-1]).astype(np.float64))
    out = {}
    for scope, parts in zip(SCOPES, seen):
        values = np.concatenate(parts)
        out[scope] = (values.mean(axis=0), values.var(axis=0))
    return out


def errors(prefix, meta, info, X, y):
    g, sess = _session(prefix, meta)
    with sess:
        feed = {info["input"]: X, info["target"]: y}
        infer = sess.run(info["loss"], {**feed, info["training_flag"]: False})
        train = sess.run(info["loss"], {**feed, info["training_flag"]: True})
        out_infer = sess.run(info["output"], {**feed, info["training_flag"]: False})
        out_train = sess.run(info["output"], {**feed, info["training_flag"]: True})
    return float(infer), float(train), out_infer, out_train


CASES = [(k, cf) for k in ("seed-no-update", "seed-trainables", "seed", "convnet") for cf in ("v1", "v2")]
# Batches of 64 with the v1 graphs: make test-slow runs them (breadth, for make test's time); "all" runs both.
REPAIRS = [
    pytest.param(k, cf, batch, marks=[pytest.mark.slow] if (batch, cf) == (64, "v1") else [])
    for batch in (64, "all")
    for k, cf in CASES
]


@pytest.mark.parametrize("kind,cf,batch", REPAIRS)
def test_repair_matches_independent_statistics_and_keeps_everything_else(build, tmp_path, kind, cf, batch):
    built = build(kind, cf).copy_to(tmp_path / "in")
    before = digest(built.folder)
    n = len(np.load(built.X))
    batch_size = n if batch == "all" else batch
    out = str(tmp_path / "out" / "fixed")
    os.makedirs(tmp_path / "out")
    r = ckptdoctor.repair(built.prefix, built.X, batch_size=batch_size, output=out)

    assert digest(built.folder) == before, "the input changed"
    assert os.path.isfile(out + ".meta") and os.path.isfile(out + ".index")
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".ckptdoctor-tmp")]
    assert len(r.layers) == 3 and r.samples == n

    truth = independent_stats(built, batch_size)
    new = tf_reader_values(out)
    for scope in SCOPES:
        mean, var = truth[scope]
        got_mean, got_var = new[f"{scope}/moving_mean"], new[f"{scope}/moving_variance"]
        assert got_mean.dtype == np.float32 and got_var.dtype == np.float32
        assert np.max(np.abs(got_mean - mean) / np.sqrt(var)) < 1e-3
        assert np.max(np.abs(got_var / var - 1)) < 3e-3

    old = tf_reader_values(built.prefix)
    stats_keys = {f"{s}/{k}" for s in SCOPES for k in ("moving_mean", "moving_variance")}
    assert set(new) == set(old) | stats_keys
    for name, value in old.items():
        if name not in stats_keys:
            assert new[name].dtype == value.dtype and new[name].tobytes() == value.tobytes(), name
    assert r.untouched == len(set(old) - stats_keys) and r.updated == 6


@pytest.mark.parametrize("kind", ["seed-no-update", "seed-trainables", "seed"])
@pytest.mark.parametrize("cf", ["v1", "v2"])
def test_seed_inference_error_fixed_with_whole_batch(build, tmp_path, kind, cf):
    built = build(kind, cf).copy_to(tmp_path / "in")
    X, y = np.load(built.X), np.load(str(built.folder / "y.npy"))
    infer0, train0, _, out_train0 = errors(built.prefix, built.prefix + ".meta", built.info, X, y)
    assert infer0 > 10 * train0  # the seed's symptom
    proc = run_cli("repair", built.prefix, "--data", built.X, "--batch-size", len(X))
    assert proc.returncode == 0, proc.stderr
    out = built.prefix + "-repaired"
    infer1, train1, out_infer1, _ = errors(out, out + ".meta", built.info, X, y)
    assert infer1 <= 1.5 * train0 and train0 <= 1.5 * infer1
    # Batch = all data: the repaired inference outputs are the original's training outputs.
    np.testing.assert_allclose(out_infer1, out_train0, rtol=1e-4, atol=1e-4)
    assert "gap" in proc.stdout and "written:" in proc.stdout


def test_sequential_equals_train_with_one_batch(build, tmp_path):
    built = build("seed-no-update", "v2")
    n = len(np.load(built.X))
    a = ckptdoctor.repair(built.prefix, built.X, batch_size=n, dry_run=True)
    b = ckptdoctor.repair(built.prefix, built.X, batch_size=n, dry_run=True, method="sequential")
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(la.mean_after, lb.mean_after, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(la.variance_after, lb.variance_after, rtol=1e-5)


def test_dry_run_writes_nothing_and_report_holds_arrays(build, tmp_path):
    import h5py

    built = build("convnet", "v2").copy_to(tmp_path / "in")
    before = digest(built.folder)
    rep = tmp_path / "repair.h5"
    r = ckptdoctor.repair(built.prefix, built.X, dry_run=True, report=str(rep), max_samples=300)
    assert digest(built.folder) == before and r.output is None and r.samples == 300
    with h5py.File(rep, "r") as f:
        assert f.attrs["samples"] == 300 and f.attrs["method"] == "train"
        for layer in r.layers:
            g = f["layers"][layer.layer]
            np.testing.assert_array_equal(g["mean_after"][()], layer.mean_after)
            np.testing.assert_array_equal(g["variance_before"][()], layer.variance_before)


def test_in_place_keeps_a_verified_backup(build, tmp_path):
    built = build("seed-no-update", "v1").copy_to(tmp_path / "in")
    original = tf_reader_values(built.prefix)
    r = ckptdoctor.repair(built.prefix, built.X, in_place=True)
    assert r.backup and os.path.isfile(r.backup + ".index")
    backup = tf_reader_values(r.backup)
    assert all(backup[k].tobytes() == v.tobytes() for k, v in original.items())
    now = tf_reader_values(built.prefix)
    assert not np.all(now["batch_normalization/moving_mean"] == 0)


def test_bad_data_is_refused_before_any_work(build, tmp_path):
    built = build("seed-no-update", "v1")
    X = np.load(built.X)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 3), np.float32))
    assert_one_line_error(run_cli("repair", built.prefix, "--data", wrong, "--dry-run"), "shape [10, 3]")
    nan = tmp_path / "nan.npy"
    bad = X.copy()
    bad[5, 1] = np.nan
    np.save(nan, bad)
    assert_one_line_error(run_cli("repair", built.prefix, "--data", nan, "--dry-run"), "row 5, column 1")
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 2), np.float32))
    assert_one_line_error(run_cli("repair", built.prefix, "--data", empty, "--dry-run"), "no samples")
    strings = tmp_path / "s.npy"
    np.save(strings, np.array([["a", "b"]] * 4))
    assert_one_line_error(run_cli("repair", built.prefix, "--data", strings, "--dry-run"), "dtype")
    assert_one_line_error(run_cli("repair", built.prefix, "--data", tmp_path / "none.npy"), "no data file")
    assert_one_line_error(run_cli("repair", tmp_path / "none.ckpt", "--data", built.X), "no checkpoint")


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_never_run(build, tmp_path):
    built = build("seed-no-update", "v1")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npy"
    arr = np.empty((2,), dtype=object)
    arr[0], arr[1] = _Payload(str(marker)), 1
    np.save(evil, arr, allow_pickle=True)
    assert_one_line_error(run_cli("repair", built.prefix, "--data", evil, "--dry-run"), "pickle")
    assert not marker.exists()
    assert pickle  # the payload class is pickled by np.save above


def test_existing_output_needs_force(build, tmp_path):
    built = build("seed-no-update", "v1").copy_to(tmp_path / "in")
    assert run_cli("repair", built.prefix, "--data", built.X).returncode == 0
    assert_one_line_error(run_cli("repair", built.prefix, "--data", built.X), "--force")
    assert run_cli("repair", built.prefix, "--data", built.X, "--force").returncode == 0


def test_missing_graph_and_wrong_training_name(build, tmp_path):
    built = build("seed-no-update", "v1")
    assert_one_line_error(
        run_cli("repair", built.prefix, "--data", built.X, "--graph", tmp_path / "x.meta", "--dry-run"), "x.meta"
    )
    assert_one_line_error(run_cli("repair", built.prefix, "--data", built.X, "--training", "nope", "--dry-run"), "nope")
