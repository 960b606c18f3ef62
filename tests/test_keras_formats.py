"""Keras and TF2 formats: inspect of .keras, .weights.h5, legacy .h5, TF2 checkpoints and SavedModels;
repair of .keras (Keras 3) and legacy .h5 (tf-keras) models with stale BN statistics.

Models are built by ``keras_builders.py`` in one subprocess per Keras (Keras 3 and tf-keras
would share TensorFlow's global state), trained so their BN statistics are stale.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, h5_datasets, run_cli

pytestmark = pytest.mark.slow  # make test-slow (see the README): the breadth of variants, not the core

BUILDERS = Path(__file__).with_name("keras_builders.py")
KINDS = "dense,conv,multi,lambda"
MAIN = {"keras3": "model.keras", "tfkeras": "model.h5"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """root[which] -> folder with one sub-folder per kind (both Keras built in parallel)."""
    root = tmp_path_factory.mktemp("keras")
    procs = {
        w: subprocess.Popen(
            [sys.executable, str(BUILDERS), "build", w, KINDS, str(root / w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in ("keras3", "tfkeras")
    }
    for _w, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return {w: root / w for w in procs}


def losses(which, data, y, *paths):
    proc = subprocess.run(
        [sys.executable, str(BUILDERS), "evaluate", which, str(data), str(y)] + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def inspect_json(*args):
    proc = run_cli("inspect", *args, "--format", "json")
    return proc, json.loads(proc.stdout)


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
@pytest.mark.parametrize("file", ["main", "model.weights.h5"])
def test_inspect_lists_every_weight_and_the_bn_layers(models, which, file):
    folder = models[which] / "dense"
    path = folder / (MAIN[which] if file == "main" else file)
    proc, report = inspect_json(path)
    assert proc.returncode in (0, 1), proc.stderr
    seen = h5_datasets(path)
    assert sorted(t["name"] for t in report["tensors"]) == sorted(seen)
    assert (
        report["format"]
        == {"model.keras": "keras-v3", "model.h5": "keras-legacy-h5", "model.weights.h5": "keras-weights-h5"}[path.name]
    )
    for t in report["tensors"]:
        assert t["shape"] == list(seen[t["name"]].shape)
        if t["size"] and seen[t["name"]].dtype.kind == "f":
            assert t["mean"] == pytest.approx(float(seen[t["name"]].astype(np.float64).mean()), rel=1e-6, abs=1e-9)
    layers = {b["layer"]: b for b in report["bn_layers"]}
    assert len(layers) == 3
    for b in layers.values():
        assert seen[b["moving_mean"]].shape == (16,) and b["channels"] == 16
    codes = {(f["code"], f["layer"]) for f in report["findings"]}
    if file == "main":  # the config names the layers and says which one is frozen
        assert set(layers) == {"bn1", "bn2", "bn_frozen"}
        assert report["graph"]
        assert layers["bn_frozen"]["status"] == "at-init"
        assert {layers["bn1"]["status"], layers["bn2"]["status"]} == {"ok"}
        assert ("bn-frozen-untrained", "bn_frozen") in codes
        assert not any(f["severity"] == "error" for f in report["findings"]), report["findings"]
        assert proc.returncode == 0
        roles = {t["name"]: t["role"] for t in report["tensors"]}
        assert roles[layers["bn1"]["moving_variance"]] == "bn_moving_variance"
        assert all(t["in_graph"] for t in report["tensors"])
    else:  # weights only: found by group name; the frozen layer's initial statistics are an error
        assert sorted(b["status"] for b in layers.values()) == ["at-init", "ok", "ok"]
        assert proc.returncode == 1


def test_weights_checked_against_a_config_given_with_graph(models):
    dense, multi = models["keras3"] / "dense", models["keras3"] / "multi"
    proc, report = inspect_json(dense / "model.weights.h5", "--graph", dense / "model.keras")
    assert {b["layer"] for b in report["bn_layers"]} == {"bn1", "bn2", "bn_frozen"}
    assert not [f for f in report["findings"] if f["code"].endswith("-in-checkpoint")]
    proc, report = inspect_json(dense / "model.weights.h5", "--graph", multi / "model.keras")
    codes = {f["code"] for f in report["findings"]}
    assert {"missing-in-checkpoint", "unexpected-in-checkpoint"} <= codes
    assert proc.returncode == 1


def test_missing_at_init_and_invalid_statistics_in_a_legacy_h5(models, tmp_path):
    path = tmp_path / "broken.h5"
    shutil.copyfile(models["tfkeras"] / "dense" / "model.h5", path)
    with h5py.File(path, "r+") as f:
        del f["model_weights/bn2/bn2/moving_variance:0"]
        f["model_weights/bn1/bn1/moving_mean:0"][...] = 0
        f["model_weights/bn1/bn1/moving_variance:0"][...] = 1
        del f["model_weights/d2/d2/bias:0"]
    proc, report = inspect_json(path)
    assert proc.returncode == 1
    status = {b["layer"]: b["status"] for b in report["bn_layers"]}
    assert status == {"bn1": "at-init", "bn2": "partial", "bn_frozen": "at-init"}
    codes = {(f["code"], f["layer"]) for f in report["findings"]}
    assert ("bn-stats-at-init", "bn1") in codes and ("bn-stats-missing", "bn2") in codes
    assert ("bn-frozen-untrained", "bn_frozen") in codes
    assert any(f["code"] == "missing-in-checkpoint" and f["tensor"] == "d2/bias" for f in report["findings"])
    with h5py.File(path, "r+") as f:
        f["model_weights/bn1/bn1/moving_variance:0"][3] = -1.0
    proc, report = inspect_json(path)
    assert {b["layer"]: b["status"] for b in report["bn_layers"]}["bn1"] == "invalid"


def test_inspect_keras3_archive_with_two_inputs_and_conv(models):
    proc, report = inspect_json(models["keras3"] / "multi" / "model.keras")
    assert {b["layer"] for b in report["bn_layers"]} == {"bn_left", "bn_right", "bn_joint"}
    proc, report = inspect_json(models["tfkeras"] / "conv" / "model.h5")
    assert {b["layer"]: b["channels"] for b in report["bn_layers"]} == {"bn1": 8, "bn2": 8}
    assert proc.returncode == 0


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_inspect_tf2_checkpoint_finds_bn_layers_by_object_path(models, which):
    proc, report = inspect_json(models[which] / "dense" / "tf2" / "ckpt", "--stats=False")
    assert proc.returncode in (0, 1)
    means = [b["moving_mean"] for b in report["bn_layers"]]
    assert len(means) == 3 and all("moving_mean" in m for m in means)


def test_inspect_savedmodel_directory(models):
    folder = models["tfkeras"] / "dense" / "savedmodel"
    proc, report = inspect_json(folder)
    assert report["checkpoint"].endswith("variables/variables")
    assert len(report["bn_layers"]) == 3


# --------------------------------------------------------------------------- repair


def _bn_keys(report):
    return {
        k for b in report["bn_layers"] if b["layer"] != "bn_frozen" for k in (b["moving_mean"], b["moving_variance"])
    }


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_repair_fixes_inference_and_keeps_everything_else(models, tmp_path, which):
    outputs = {}
    for kind in ("dense", "conv", "multi"):
        folder = models[which] / kind
        src = folder / MAIN[which]
        data = folder / ("data.npz" if kind == "multi" else "X.npy")
        out = tmp_path / f"{kind}-{MAIN[which]}"
        before = src.read_bytes()
        proc = run_cli("repair", src, "--data", data, "--batch-size", 64, "--output", out, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert src.read_bytes() == before  # the input is never written
        assert result["output"] == str(out)
        outputs[kind] = (src, out, data, folder / "y.npy")
        assert result["gap_note"] and not any("not measured" in note for note in result["notes"])
        for layer in result["layers"]:  # the inference-vs-training gap on the first batch closes
            assert layer["gap_after"] < layer["gap_before"] / 2, (kind, layer)
        # Every other weight bit-identical, the statistics replaced, the config unchanged.
        _, report = inspect_json(src, "--stats=False")
        stats = _bn_keys(report)
        a, b = h5_datasets(src), h5_datasets(out)
        assert set(a) == set(b)
        for key in a:
            if key in stats:
                assert not np.array_equal(a[key], b[key])
            else:
                assert a[key].tobytes() == b[key].tobytes() and a[key].dtype == b[key].dtype, key
        assert result["updated"] == len(stats) and result["untouched"] == len(a) - len(stats)
        if which == "keras3":
            with zipfile.ZipFile(src) as za, zipfile.ZipFile(out) as zb:
                assert [i.filename for i in za.infolist()] == [i.filename for i in zb.infolist()]
                assert za.read("config.json") == zb.read("config.json")
        else:
            with h5py.File(src, "r") as fa, h5py.File(out, "r") as fb:
                assert fa.attrs["model_config"] == fb.attrs["model_config"]
        if kind == "dense":  # bn1's input is d1(x): check against numpy over the whole data
            X = np.load(data).astype(np.float64)
            d1 = [v for k, v in sorted(a.items()) if "d1" in k or k.startswith("layers/dense/")]
            kernel = next(v for v in d1 if v.ndim == 2)
            bias = next(v for v in d1 if v.ndim == 1)
            pre = X @ kernel + bias
            bn1 = next(x for x in report["bn_layers"] if x["layer"] == "bn1")
            np.testing.assert_allclose(b[bn1["moving_mean"]], pre.mean(axis=0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(b[bn1["moving_variance"]], pre.var(axis=0), rtol=1e-5, atol=1e-5)
    for kind, (src, out, data, y) in outputs.items():
        before, after = losses(which, data, y, src, out)
        assert before["infer"] > 5 * before["train"], (kind, before)  # stale: far off
        assert after["infer"] / after["train"] < 1.5 and after["train"] / after["infer"] < 1.5, (kind, after)


def test_repair_sequential_and_in_place(models, tmp_path):
    src = tmp_path / "model.keras"
    shutil.copyfile(models["keras3"] / "dense" / "model.keras", src)
    proc = run_cli(
        "repair", src, "--data", models["keras3"] / "dense" / "X.npy", "--method", "sequential", "--in-place"
    )
    assert proc.returncode == 0, proc.stderr
    assert "backup of the original" in proc.stdout
    folder = models["keras3"] / "dense"
    (after,) = losses("keras3", folder / "X.npy", folder / "y.npy", src)
    assert after["infer"] / after["train"] < 1.5 and after["train"] / after["infer"] < 1.5, after


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_lambda_layers_are_refused_without_unsafe(models, tmp_path, which):
    folder = models[which] / "lambda"
    proc = run_cli("repair", folder / MAIN[which], "--data", folder / "X.npy", "--output", tmp_path / "out")
    assert_one_line_error(proc, "Lambda", "double", "--unsafe")
    assert not (tmp_path / "out").exists()
    proc, report = inspect_json(folder / MAIN[which])  # inspect reads, never runs code
    assert any("Lambda" in n for n in report["notes"])


def test_lambda_layer_repaired_with_unsafe(models, tmp_path):
    folder = models["keras3"] / "lambda"
    out = tmp_path / "out.keras"
    proc = run_cli("repair", folder / "model.keras", "--data", folder / "X.npy", "--output", out, "--unsafe")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_bad_keras_repairs_are_one_line_errors(models, tmp_path):
    dense, multi = models["keras3"] / "dense", models["keras3"] / "multi"
    proc = run_cli("repair", dense / "model.weights.h5", "--data", dense / "X.npy")
    assert_one_line_error(proc, "weights only", "model.save")
    proc = run_cli("repair", multi / "model.keras", "--data", dense / "X.npy")
    assert_one_line_error(proc, "2 inputs", "left, right")
    np.savez(tmp_path / "wrong.npz", left=np.zeros((4, 6), np.float32))
    proc = run_cli("repair", multi / "model.keras", "--data", tmp_path / "wrong.npz")
    assert_one_line_error(proc, "right")
    proc = run_cli("repair", dense / "model.keras", "--data", dense / "X.npy", "--output", dense / "model.keras")
    assert_one_line_error(proc, "exists", "--force")
