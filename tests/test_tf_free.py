"""inspect, diff and report never import TensorFlow; without it, inspect says the graph was not checked."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import tf_reader_values

# Runs the real CLI with TensorFlow made unimportable (a None entry in sys.modules makes
# every `import tensorflow` raise ImportError) and reports whether anything loaded it.
WRAPPER = (
    "import sys; sys.modules['tensorflow'] = None; "
    "from ckptdoctor.cli import main; code = main(sys.argv[1:]); "
    "sys.stderr.write('TF_LOADED=%s\\n' % any(m.startswith('tensorflow.') for m in sys.modules)); sys.exit(code)"
)


def run_without_tf(*args):
    return subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


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
