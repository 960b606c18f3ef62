"""TF1 graphs whose training switch is shared with dropout, and graphs fixed to training mode.

Expected statistics and outputs are computed with numpy by the builder from the saved weights
(tests/graph_mode_builders.py): each BN input's mean and population variance over all samples at
inference (dropout off), and the network's inference output with them.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, run_in_parallel, tf_reader_values

pytestmark = pytest.mark.slow  # make test-slow (see the README): the breadth of variants, not the core

BUILDER = Path(__file__).with_name("graph_mode_builders.py")

# (kind, control flow, fused, switch, layers)
CASES = [
    ("dropout-switch", "v1", 1, "placeholder", "tf-layers"),
    ("dropout-switch", "v1", 0, "placeholder", "tf-layers"),
    ("dropout-switch", "v2", 1, "placeholder", "tf-layers"),
    ("dropout-switch", "v2", 0, "placeholder", "tf-layers"),
    # A placeholder_with_default switch with tf.compat.v1.keras layers; the switch through the user's tf.identity.
    ("dropout-switch", "v1", 1, "with-default", "keras"),
    ("dropout-switch", "v2", 1, "identity", "tf-layers"),
    ("training-only", "v1", 1, "placeholder", "tf-layers"),
    ("training-only", "v2", 0, "placeholder", "tf-layers"),
    ("training-only-raw", "v2", 1, "placeholder", "tf-layers"),
    ("training-only-raw", "v1", 0, "placeholder", "tf-layers"),
    ("training-only-dropout", "v2", 1, "placeholder", "tf-layers"),
]
IDS = [
    f"{k}-{cf}-{'fused' if f else 'nonfused'}"
    + ("" if sw == "placeholder" else f"-{sw}")
    + ("" if ly == "tf-layers" else f"-{ly}")
    for k, cf, f, sw, ly in CASES
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph-modes")
    commands = {
        name: [
            sys.executable,
            BUILDER,
            kind,
            root / name,
            "--control-flow",
            cf,
            "--fused",
            str(fused),
            "--switch",
            switch,
            "--layers",
            layers,
        ]
        for name, (kind, cf, fused, switch, layers) in zip(IDS, CASES)
    }
    names = list(commands)
    for i in range(0, len(names), 2):  # two at a time: two cores
        run_in_parallel({n: commands[n] for n in names[i : i + 2]})
    return {name: root / name for name in names}


def _info(folder):
    return json.loads((folder / "info.json").read_text())


@pytest.mark.parametrize("case", IDS)
def test_inspect_finds_every_bn_layer_and_their_init_stats(built, case):
    folder = built[case]
    proc = run_cli("inspect", folder, "--stats=False", "--format", "json")
    report = json.loads(proc.stdout)
    info = _info(folder)
    assert sorted(b["layer"] for b in report["bn_layers"]) == info["bn_layers"]
    assert {b["status"] for b in report["bn_layers"]} == {"at-init"}
    codes = [f["code"] for f in report["findings"] if f["severity"] == "error"]
    assert codes == ["bn-stats-at-init"] * len(info["bn_layers"]), report["findings"]
    assert proc.returncode == 1


# Sequential runs the layers in inference mode: graphs fixed to training mode have none.
REPAIRS = [(case, "train") for case in IDS if "dropout" not in case or case.startswith("dropout")] + [
    (case, "sequential") for case in IDS if case.startswith("dropout")
]


@pytest.mark.parametrize("case,method", REPAIRS)
def test_repair_gives_the_inference_moments(built, case, method, tmp_path):
    folder = built[case]
    info = _info(folder)
    out = tmp_path / "repaired"
    proc = run_cli(
        "repair",
        folder,
        "--data",
        folder / "X.npy",
        "--batch-size",
        1000,
        "--method",
        method,
        "--output",
        out,
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    values = tf_reader_values(str(out))
    for layer in info["bn_layers"]:
        want_mean = np.array(info["expected"][layer]["mean"])
        want_var = np.array(info["expected"][layer]["variance"])
        got_mean = values[f"{layer}/moving_mean"].astype(np.float64)
        got_var = values[f"{layer}/moving_variance"].astype(np.float64)
        np.testing.assert_allclose(got_var, want_var, rtol=1e-3)
        assert np.max(np.abs(got_mean - want_mean) / np.sqrt(want_var)) < 1e-3
    before = tf_reader_values(str(folder / "model.ckpt"))
    stats = {f"{layer}/{s}" for layer in info["bn_layers"] for s in ("moving_mean", "moving_variance")}
    assert set(values) == set(before)
    for name in set(before) - stats:
        assert values[name].dtype == before[name].dtype and values[name].tobytes() == before[name].tobytes(), name

    if info["kind"] == "dropout-switch":
        assert report["held_in_inference"] == ["drop0/cond", "drop1/cond"]
        check = report["output_check"]
        assert check["improved"] and check["gap_after"] < 1e-4 < check["gap_before"], check
        assert check["outputs"] == [info["output"]]
        # The repaired network at inference equals numpy's inference with the exact statistics.
        proc = subprocess.run(
            [sys.executable, BUILDER, "x", folder, "--evaluate", out], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
        want = np.load(folder / "expected_output.npy")
        assert np.max(np.abs(got - want)) < 1e-3 * np.max(np.abs(want))
    else:
        assert report["inputs"] == ["IteratorGetNext:0"]
        assert report["output_check"] is None
        assert any("no inference mode" in n for n in report["notes"])


def test_dropout_shared_switch_is_wrong_without_the_separation(built, tmp_path):
    """The defect the separation fixes, measured: with dropout on, the variances are far off (so the
    exact-moment test above would fail if the dropout ran in training mode)."""
    folder = built["dropout-switch-v1-fused"]
    info = _info(folder)
    code = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        "tf.compat.v1.disable_eager_execution()\n"
        f"info = json.load(open({str(folder / 'info.json')!r}))\n"
        "g = tf.Graph()\n"
        "with g.as_default():\n"
        f"    saver = tf.compat.v1.train.import_meta_graph({str(folder / 'model.ckpt.meta')!r})\n"
        "    sess = tf.compat.v1.Session(graph=g)\n"
        f"    saver.restore(sess, {str(folder / 'model.ckpt')!r})\n"
        f"    x = np.load({str(folder / 'X.npy')!r})\n"
        "    h = sess.run('drop0/cond/Merge:0', {info['input']: x, info['training_flag']: True})\n"
        "print(json.dumps(h.reshape(-1, h.shape[-1]).var(axis=0).tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with_dropout = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    ratio = with_dropout / np.array(info["expected"]["bn0"]["variance"])
    assert np.median(ratio) > 1.5, ratio


def test_training_only_graph_with_dropout_says_it_cannot_be_sure(built):
    """Dropout fixed to training mode cannot be held off: the repair says so in one line."""
    folder = built["training-only-dropout-v2-fused"]
    proc = run_cli("repair", folder, "--data", folder / "X.npy", "--batch-size", 1000, "--dry-run", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    [note] = [n for n in report["notes"] if "random ops" in n]
    assert "cannot be sure" in note and "drop0/" in note and "--graph" in note
    # Without dropout, no such note.
    folder = built["training-only-v1-fused"]
    proc = run_cli("repair", folder, "--data", folder / "X.npy", "--dry-run", "--format", "json")
    assert not [n for n in json.loads(proc.stdout)["notes"] if "random ops" in n]


def test_input_names_an_iterator_output(built, tmp_path):
    folder = built["training-only-v1-fused"]
    proc = run_cli(
        "repair", folder, "--data", folder / "X.npy", "--input", "IteratorGetNext:0", "--dry-run", "--format", "json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inputs"] == ["IteratorGetNext:0"]
    proc = run_cli("repair", folder, "--data", folder / "X.npy", "--input", "IteratorGetNext:7", "--dry-run")
    assert proc.returncode == 2 and "has no tensor (--input) named" in proc.stderr


def test_a_repair_that_makes_the_outputs_worse_is_refused(tmp_path):
    """Healthy statistics, data whose first batches are the training data and whose bulk is shifted:
    the new statistics fit the bulk, not the training data, so the output check must refuse them."""
    import ckptdoctor

    sample = Path(__file__).resolve().parents[1] / "sample_ckpts" / "convnet"
    X = np.load(sample / "X.npy")
    rng = np.random.default_rng(1)
    mixed = np.concatenate([X[:256], X[rng.integers(0, len(X), 1500)] * 3 + 5]).astype(np.float32)
    data = tmp_path / "mixed.npy"
    np.save(data, mixed)
    out = tmp_path / "repaired"
    proc = run_cli("repair", sample, "--data", data, "--batch-size", 64, "--output", out, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["refused"] and report["output"] is None
    [finding] = report["findings"]
    check = report["output_check"]
    assert finding["code"] == "repair-not-improved" and finding["severity"] == "error"
    assert f"{check['gap_before']:.3g}" in finding["message"] and f"{check['gap_after']:.3g}" in finding["message"]
    assert check["gap_after"] > 5 * check["gap_before"]
    assert not list(tmp_path.glob("repaired*")) and not list(tmp_path.glob(".ckptdoctor-tmp*"))
    # The table says so too, and the library returns the same verdict.
    proc = run_cli("repair", sample, "--data", data, "--batch-size", 64, "--output", out)
    assert proc.returncode == 1 and "error: repair-not-improved: repair refused, nothing written" in proc.stdout
    result = ckptdoctor.repair(str(sample), str(data), batch_size=64, output=str(out))
    assert result.refused and result.exit_code == 1 and not list(tmp_path.glob("repaired*"))
