"""``inspect --data``: stale BN statistics (updated, but lagging the weights) are found with data.

The bundled seed sample is the failure of the seed question as written: its statistics
were updated by a moving average that lags the weights, so inspect alone finds nothing
wrong, while its restored inference error is ~3e4x its training error. A Keras 3 model
trained a few steps with momentum 0.99 is the same failure in Keras ("high accuracy in
fit(), low in evaluate()"); after repair, the same check finds nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import assert_one_line_error, run_cli

from ckptdoctor.analysis.staleness import (
    ERROR_RATIO,
    ERROR_SHIFT,
    MIN_SAMPLES,
    STALE_CODE,
    WARN_RATIO,
    WARN_SHIFT,
    stale_findings,
)
from ckptdoctor.reports.results import LayerRepair, RepairReport

SAMPLES = Path(__file__).resolve().parents[1] / "sample_ckpts"


def inspect_json(*args):
    proc = run_cli("inspect", *args, "--format", "json", "--stats=False")
    return proc.returncode, json.loads(proc.stdout)


def test_seed_as_written_is_stale_only_with_data():
    code, doc = inspect_json(SAMPLES / "seed")
    assert code == 0 and not [f for f in doc["findings"] if f["severity"] != "info"]
    code, doc = inspect_json(SAMPLES / "seed", "--data", SAMPLES / "seed" / "X.npy")
    stale = {f["layer"]: f["severity"] for f in doc["findings"] if f["code"] == STALE_CODE}
    assert code == 1 and stale.get("batch_normalization_1") == "error"
    assert any("checked against 1000 samples" in n for n in doc["notes"])
    assert {row["layer"]: row["status"] for row in doc["bn_layers"]} == {
        layer: ("stale" if layer in stale else "ok")
        for layer in ("batch_normalization", "batch_normalization_1", "batch_normalization_2")
    }
    assert doc["summary"]["errors"] == sum(f["severity"] == "error" for f in doc["findings"])


def test_findings_agree_with_the_dry_run_numbers():
    dry = run_cli("repair", SAMPLES / "seed", "--data", SAMPLES / "seed" / "X.npy", "--dry-run", "--format", "json")
    layers = json.loads(dry.stdout)["layers"]
    _, doc = inspect_json(SAMPLES / "seed", "--data", SAMPLES / "seed" / "X.npy")
    stale = {f["layer"]: f["severity"] for f in doc["findings"] if f["code"] == STALE_CODE}
    for layer in layers:
        ratio = max(layer["var_ratio_max"], 1 / layer["var_ratio_min"])
        if layer["max_mean_shift"] > ERROR_SHIFT or ratio > ERROR_RATIO:
            want = "error"
        elif layer["max_mean_shift"] > WARN_SHIFT or ratio > WARN_RATIO:
            want = "warning"
        else:
            want = None
        assert stale.get(layer["layer"]) == want, layer


def test_healthy_and_never_updated_checkpoints_are_not_stale():
    code, doc = inspect_json(SAMPLES / "convnet", "--data", SAMPLES / "convnet" / "X.npy")
    assert code == 0 and not [f for f in doc["findings"] if f["code"] == STALE_CODE]
    # Statistics at their initial values have their own finding; they are not judged twice.
    code, doc = inspect_json(SAMPLES / "seed-no-update", "--data", SAMPLES / "seed-no-update" / "X.npy")
    codes = [f["code"] for f in doc["findings"]]
    assert code == 1 and codes.count("bn-stats-at-init") == 3 and STALE_CODE not in codes


def test_bad_data_is_one_line():
    proc = run_cli("inspect", SAMPLES / "seed", "--data", SAMPLES / "seed" / "missing.npy")
    assert_one_line_error(proc, "missing.npy")


def _layer(shift, lo, hi, status="ok"):
    return LayerRepair(
        "bn", 2, 100, status, "bn/moving_mean", "bn/moving_variance", None, None, (0.0, 0.0), (1.0, 1.0), shift, lo, hi
    )


def _report(layers, samples=100):
    return RepairReport(
        "ckpt", "graph", "X.npy", ("x",), None, "train", 64, samples, tuple(layers), None, None, True, 0, 0
    )


def test_thresholds_and_guards():
    findings, _ = stale_findings(
        _report(
            [
                _layer(0.1, 0.9, 1.1),
                _layer(0.3, 1.0, 1.0),
                _layer(0.0, 0.7, 1.0),
                _layer(1.5, 1.0, 1.0),
                _layer(0.0, 1.0, 2.5),
                _layer(5.0, 0.1, 9.0, status="at-init"),
            ]
        )
    )
    assert [(f.severity, f.message.split("off by up to ")[1][:4]) for f in findings] == [
        ("warning", "0.3 "),
        ("warning", "0 sd"),
        ("error", "1.5 "),
        ("error", "0 sd"),
    ]
    findings, notes = stale_findings(_report([_layer(9.0, 1.0, 1.0)], samples=MIN_SAMPLES - 1))
    assert findings == [] and "too few" in notes[0]


_KERAS = r"""
import sys, numpy as np, keras as K
out = sys.argv[1]
K.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(256, 6)).astype("float32") * 3 + 4
inp = K.Input((6,), name="x")
h = K.layers.BatchNormalization(momentum=0.99, name="bn")(K.layers.Dense(8, name="d")(inp))
m = K.Model(inp, K.layers.Dense(1, name="head")(K.layers.ReLU()(h)))
m.compile(K.optimizers.Adam(0.03), "mse")
m.fit(x, x[:, :1], epochs=2, batch_size=64, verbose=0)
m.save(out + "/model.keras")
np.save(out + "/X.npy", x)
"""


def test_keras_model_stale_then_repaired_through_the_library(tmp_path):
    subprocess.run([sys.executable, "-c", _KERAS, str(tmp_path)], check=True, capture_output=True, timeout=600)
    code, doc = inspect_json(tmp_path / "model.keras", "--data", tmp_path / "X.npy")
    assert code == 1 and [(f["code"], f["layer"]) for f in doc["findings"] if f["severity"] == "error"] == [
        (STALE_CODE, "bn")
    ]
    # The library face: ckptdoctor.repair dispatches Keras files as the CLI does, and
    # ckptdoctor.inspect(..., data=...) returns the same findings as data.
    script = (
        "import sys, ckptdoctor\n"
        "r = ckptdoctor.repair(sys.argv[1] + '/model.keras', sys.argv[1] + '/X.npy')\n"
        "after = ckptdoctor.inspect(r.output, data=sys.argv[1] + '/X.npy', stats=False)\n"
        "print(r.output, after.exit_code, len(after.findings_with('bn-stats-stale')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output, exit_code, stale = proc.stdout.split()[-3:]
    assert output.endswith("model-repaired.keras") and exit_code == "0" and stale == "0"


def test_a_model_that_cannot_run_keeps_its_report_with_a_note(tmp_path):
    # The seed's checkpoint without its .meta has no graph to run: the inspection (BN layers
    # by name) stands, and a note says the statistics were not checked.
    import shutil

    for f in (SAMPLES / "seed").iterdir():
        if f.name.startswith("model.ckpt") and not f.name.endswith(".meta"):
            shutil.copy(f, tmp_path / f.name)
    code, doc = inspect_json(tmp_path / "model.ckpt", "--data", SAMPLES / "seed" / "X.npy")
    assert code == 0 and len(doc["bn_layers"]) == 3
    assert any(n.startswith("BN statistics NOT checked against") for n in doc["notes"])
