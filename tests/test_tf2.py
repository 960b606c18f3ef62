"""TF2 object-based checkpoints (tf.train.CheckpointManager of a Keras 3 model with a Keras Applications
backbone, under root names other than ``model``): inspect with and without the model, repair through a
``.keras`` and through a factory, and the errors that fit the format.

The checkpoints are built by ``tf2_builders.py`` in a subprocess; every check of the output is made by
TensorFlow and Keras themselves in another (restore with ``assert_existing_objects_matched``, the model's
inference outputs, ``tf.train.load_checkpoint`` for the bytes of every key).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

HERE = Path(__file__).parent


def _env():
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf2")
    subprocess.run(
        [sys.executable, str(HERE / "tf2_builders.py"), "build", str(out)],
        check=True,
        capture_output=True,
        timeout=900,
        env=_env(),
    )
    info = json.loads((out / "info.json").read_text())
    return out, info


def _json(*args, cwd=None):
    proc = run_cli(*args, "--format", "json", cwd=cwd)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_inspect_without_graph_finds_every_bn_layer_with_gamma_and_beta(built):
    out, info = built
    doc = _json("inspect", out / "ckpts", "--stats=False")
    assert len(doc["bn_layers"]) == len(info["bn_layers"])
    assert all(b["gamma"] and b["beta"] and b["status"] == "ok" for b in doc["bn_layers"])
    stats = {k for b in doc["bn_layers"] for k in (b["moving_mean"], b["moving_variance"])}
    assert stats == set(info["statistics"])
    assert doc["summary"]["errors"] == 0
    roles = {t["name"]: t["role"] for t in doc["tensors"]}
    assert roles["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == "step"
    assert sum(r == "optimizer_slot" for r in roles.values()) >= 2 * len(info["bn_layers"])


@pytest.mark.parametrize("description", ["keras", "factory"])
def test_inspect_with_the_model_names_exactly_its_bn_layers(built, description):
    out, info = built
    graph = str(out / "arch.keras") if description == "keras" else "tf2_factory:build"
    doc = _json("inspect", out / "ckpts", "--graph", graph, cwd=out)
    assert sorted(b["layer"] for b in doc["bn_layers"]) == sorted(info["bn_layers"])
    assert doc["summary"]["errors"] == 0, [f for f in doc["findings"] if f["severity"] == "error"]
    paths = {t["name"]: t["object_path"] for t in doc["tensors"]}
    head = next(b for b in doc["bn_layers"] if b["layer"] == "head_bn")
    assert paths[head["gamma"]] == "head_bn/gamma"  # stored under the optimizer's path, named by the layer
    assert all(t["in_graph"] for t in doc["tensors"] if t["role"].startswith("bn_"))


_ROLES = r"""
import json, sys
from ckptdoctor.formats import open_model

model = open_model(sys.argv[1], graph=json.loads(sys.argv[2]))
description = model.describe()
names = [e.name for e in model.reader.entries()]
print(json.dumps([description.roles(names), [description.role(key) for key in names]]))
"""


@pytest.mark.parametrize("description", ["none", "keras"])
def test_the_roles_of_all_keys_at_once_are_each_keys_role(built, description):
    # Description.roles (a list at a time) stands for role asked key by key: the same list, with and
    # without the model (declared keys are weights), optimizer slots and the step counter among them.
    out, _info = built
    graph = json.dumps(False if description == "none" else str(out / "arch.keras"))
    proc = subprocess.run(
        [sys.executable, "-c", _ROLES, str(out / "ckpts"), graph],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    at_once, one_by_one = json.loads(proc.stdout.splitlines()[-1])
    assert at_once == one_by_one
    if description == "none":  # the model's keys by their names: BN statistics among them
        assert "bn_moving_mean" in at_once
    assert {"step", "optimizer_slot", "weight"} <= set(at_once)


_CANONICAL = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import tensorflow as tf

layers = [keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
model = keras.Sequential([keras.Input((6,)), *layers])
optimizer = keras.optimizers.Adam()
x = np.random.RandomState(0).rand(8, 6).astype("float32")
with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(x, training=True))
optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
tf.train.Checkpoint(model=model, optimizer=optimizer).write(sys.argv[1])
"""


def test_model_weights_saved_under_the_optimizers_route_are_weights(tmp_path):
    # tf.train.Checkpoint(model=..., optimizer=...), TensorFlow's own example: the saver's first route to a Keras 3
    # model's kernel is optimizer/_trainable_variables/N, a key that reads as optimizer state. The object graph
    # says it is the model's: listed without the model, it is a weight (a BN one by its layer), not a slot.
    prefix = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-c", _CANONICAL, str(prefix)], check=True, timeout=600, env=_env())
    doc = _json("inspect", prefix, "--stats=False", "--graph=False")
    rows = {t["name"]: t for t in doc["tensors"]}
    routed = [t for name, t in rows.items() if name.startswith("optimizer/_trainable_variables/")]
    assert len(routed) == 6  # two kernels, two biases, gamma and beta
    assert all(t["object_path"].startswith("model/") for t in routed)
    assert sorted(t["role"] for t in routed) == ["bn_beta", "bn_gamma", "weight", "weight", "weight", "weight"]
    slots = [t for t in rows.values() if t["object_path"] and t["object_path"].startswith("optimizer/_variables/")]
    assert len(slots) == 12 and all(t["role"] == "optimizer_slot" for t in slots)
    assert rows["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]["role"] == "step"
    proc = subprocess.run(
        [sys.executable, "-c", _ROLES, str(prefix), "false"], capture_output=True, text=True, timeout=600, env=_env()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    at_once, one_by_one = json.loads(proc.stdout.splitlines()[-1])
    assert at_once == one_by_one


def _check(out, prefix, tmp_path):
    outputs = tmp_path / "outputs.npy"
    proc = subprocess.run(
        [sys.executable, str(HERE / "tf2_builders.py"), "check", str(out), str(prefix), str(outputs)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(outputs)


def _values(prefix):
    code = (
        "import sys, json, numpy as np, tensorflow as tf; r = tf.train.load_checkpoint(sys.argv[1]); "
        "np.savez(sys.argv[2], **{k.replace('/', '|'): np.asarray(r.get_tensor(k)) for k in "
        "r.get_variable_to_shape_map()})"
    )
    target = str(prefix) + "-values.npz"
    subprocess.run([sys.executable, "-c", code, str(prefix), target], check=True, capture_output=True, timeout=300)
    with np.load(target, allow_pickle=True) as z:
        return {k.replace("|", "/"): z[k] for k in z.files}


@pytest.mark.parametrize("description", ["keras", pytest.param("factory", marks=pytest.mark.slow)])
def test_repair_restores_matched_keeps_every_other_key_and_fixes_the_outputs(built, description, tmp_path):
    out, info = built
    graph = str(out / "arch.keras") if description == "keras" else "tf2_factory:build"
    target = tmp_path / "ckpt-repaired"
    proc = run_cli(
        "repair",
        out / "ckpts",
        "--data",
        out / "X.npy",
        "--graph",
        graph,
        "--batch-size",
        "64",
        "--output",
        target,
        "--format",
        "json",
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["updated"] == len(info["statistics"]) and report["output_check"]["improved"]
    state, outputs = _check(out, target, tmp_path)
    assert state["step"] == info["step"]  # the step counter restored unchanged
    ref = np.load(out / "ref.npy")
    assert np.max(np.abs(outputs - ref)) <= 2e-3 * np.max(np.abs(ref))
    before, after = _values(info["prefix"]), _values(target)
    assert set(before) == set(after)
    for key in before:
        if key in info["statistics"]:
            assert not np.array_equal(before[key], after[key]), key
        else:
            assert before[key].tobytes() == after[key].tobytes(), key


def test_repair_without_the_model_says_what_to_pass(built):
    out, _info = built
    proc = run_cli("repair", out / "ckpts", "--data", out / "X.npy", "--dry-run")
    assert_one_line_error(proc, ".keras", "config .json", "package.module:function")
    assert "MetaGraphDef" not in proc.stderr


@pytest.mark.parametrize(
    "source, expected",
    [
        ("nowhere_module:build", "cannot import it (ModuleNotFoundError"),
        ("bad_factory:raises", "the factory raised RuntimeError: no model today"),
        ("bad_factory:not_a_model", "returned a dict, not a Keras model"),
    ],
)
def test_factories_that_fail_are_one_line_errors(built, tmp_path, source, expected):
    out, _info = built
    (tmp_path / "bad_factory.py").write_text(
        "def raises():\n    raise RuntimeError('no model today')\n\n\ndef not_a_model():\n    return {}\n"
    )
    proc = run_cli("inspect", out / "ckpts", "--graph", source, "--stats=False", cwd=tmp_path)
    assert_one_line_error(proc, expected)


def test_a_model_that_does_not_match_lists_what_differs(built, tmp_path):
    out, _info = built
    (tmp_path / "other_model.py").write_text(
        "import keras\n\n\ndef build():\n"
        "    inp = keras.Input((32, 32, 3), name='image')\n"
        "    x = keras.layers.Conv2D(3, 3, name='stem')(inp)\n"
        "    x = keras.layers.BatchNormalization(name='stem_bn')(x)\n"
        "    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))\n"
    )
    proc = run_cli(
        "repair", out / "ckpts", "--data", out / "X.npy", "--graph", "other_model:build", "--dry-run", cwd=tmp_path
    )
    assert_one_line_error(proc, "does not match", "stem/kernel [3, 3, 3, 3]", "encoder")


def test_a_model_that_differs_in_one_layer_lists_the_differences(built, tmp_path):
    out, _info = built
    factory = (out / "tf2_factory.py").read_text().replace('Dense(16, name="fc")', 'Dense(8, name="fc")')
    assert "Dense(8" in factory
    (tmp_path / "narrow.py").write_text(factory)
    inspected = _json("inspect", out / "ckpts", "--graph", "narrow:build", "--stats=False", cwd=tmp_path)
    mismatched = sorted(
        f["message"].split(" (")[1].split(")")[0] for f in inspected["findings"] if f["code"] == "shape-mismatch"
    )
    # fc's kernel and bias, head_bn's four weights, the logits' kernel: 16 channels stored, 8 built
    assert mismatched == [
        "fc/bias",
        "fc/kernel",
        "head_bn/beta",
        "head_bn/gamma",
        "head_bn/moving_mean",
        "head_bn/moving_variance",
        "logits/kernel",
    ]
    proc = run_cli(
        "repair", out / "ckpts", "--data", out / "X.npy", "--graph", "narrow:build", "--dry-run", cwd=tmp_path
    )
    assert_one_line_error(proc, "does not match", "fc/kernel has shape [", ", 16] in the checkpoint")


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_in_place_repair_of_a_manager_directory_keeps_its_state_file_and_a_backup(built, tmp_path):
    import shutil

    out, info = built
    ckpts = tmp_path / "ckpts"
    shutil.copytree(out / "ckpts", ckpts)
    state = (ckpts / "checkpoint").read_bytes()
    prefix = ckpts / Path(info["prefix"]).name
    proc = run_cli(
        "repair",
        ckpts,
        "--data",
        out / "X.npy",
        "--graph",
        out / "arch.keras",
        "--batch-size",
        "64",
        "--in-place",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (ckpts / "checkpoint").read_bytes() == state
    assert any("'checkpoint' file still names it" in n for n in report["notes"])
    backup = report["backup"]
    assert backup and os.path.isfile(backup + ".index")
    assert _values(backup).keys() == _values(prefix).keys()
    restored, outputs = _check(out, prefix, tmp_path)
    assert restored["step"] == info["step"]
    ref = np.load(out / "ref.npy")
    assert np.max(np.abs(outputs - ref)) <= 2e-3 * np.max(np.abs(ref))


def test_the_bundled_tf2_sample_repairs_with_its_factory_as_make_demo_runs_it(tmp_path):
    sample = HERE.parent / "sample_ckpts" / "tf2-manager"
    proc = run_cli(
        "repair",
        "ckpts",
        "--data",
        "X.npy",
        "--graph",
        "model_factory:build",
        "--batch-size",
        "256",
        "--output",
        tmp_path / "out",
        "--format",
        "json",
        cwd=sample,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [layer["layer"] for layer in report["layers"]] == ["bn1", "bn2"]
    check = report["output_check"]
    assert check["improved"] and check["gap_after"] < 1e-4 < check["gap_before"]
    assert report["held_in_inference"] == ["drop"]
