"""inspect, diff and report never import TensorFlow; without it, inspect says the graph was not checked."""

import json

import numpy as np
import pytest
from conftest import run_cli_without_tf, tf_reader_values


def run_without_tf(*args):
    return run_cli_without_tf(*args)


def test_inspect_json_without_tensorflow_matches_tf_reader(build):
    b = build("seed-no-update", "v2")
    proc = run_without_tf("inspect", b.prefix, "--format", "json")
    assert "TF_LOADED=False" in proc.stderr
    doc = json.loads(proc.stdout)
    assert any("not checked" in n and "ckptdoctor[tf]" in n for n in doc["notes"])
    truth = tf_reader_values(b.prefix)
    assert {t["name"] for t in doc["tensors"]} == set(truth)
    for t in doc["tensors"]:
        v = np.asarray(truth[t["name"]])
        assert t["dtype"] == v.dtype.name and t["shape"] == list(v.shape)
        if v.dtype.kind == "f":
            assert t["mean"] == pytest.approx(v.astype(np.float64).mean(), rel=1e-9, abs=1e-12)
            assert t["max"] == v.max()
    # Without a graph the BN diagnosis falls back on names and still finds the stale statistics.
    assert sum(f["code"] == "bn-stats-at-init" for f in doc["findings"]) == 3
    assert proc.returncode == 1


def test_repair_without_tensorflow_says_what_to_install(build):
    b = build("seed-no-update", "v1")
    proc = run_without_tf("repair", b.prefix, "--data", b.X, "--dry-run")
    assert proc.returncode == 2 and "ckptdoctor[tf]" in proc.stderr and "Traceback" not in proc.stderr


def test_diff_without_tensorflow(build):
    b = build("seed", "v1")
    proc = run_without_tf("diff", b.prefix, b.prefix)
    assert proc.returncode == 0 and "TF_LOADED=False" in proc.stderr and "identical" in proc.stdout
