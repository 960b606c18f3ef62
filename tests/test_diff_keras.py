"""``diff`` of Keras files: .keras archives, Keras 3 .weights.h5, legacy full .h5 and save_weights .h5.

The files are written by Keras 3 and by tf-keras in two parallel subprocesses; the
expected differences are computed here with h5py and numpy over the same datasets.
"""

import json
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, h5_datasets, run_cli, run_cli_without_tf, run_in_parallel

# Writes a.{keras|h5} and its save_weights file, b.* (the same model trained one more
# step) and renamed.* (the same weights, one layer renamed in the config).
_BUILD = r"""
import os, sys
which, out = sys.argv[1], sys.argv[2]
if which == "tfkeras":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as K
    ext, weights = ".h5", "a-weights.h5"
else:
    import keras as K
    ext, weights = ".keras", "a.weights.h5"
import numpy as np
K.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 5)).astype("float32") * 2 + 1
y = x[:, :1] * 3

def model(name):
    inp = K.Input((5,), name="x")
    h = K.layers.BatchNormalization(name="bn")(K.layers.Dense(4, name="d1")(inp))
    return K.Model(inp, K.layers.Dense(1, name=name)(h))

m = model("head")
m.compile(optimizer=K.optimizers.Adam(0.01), loss="mse")
m.fit(x, y, epochs=1, batch_size=32, verbose=0)
m.save(os.path.join(out, "a" + ext))
m.save_weights(os.path.join(out, weights))
r = model("head2")
r.compile(optimizer=K.optimizers.Adam(0.01), loss="mse")
r.fit(x[:1], y[:1], epochs=1, verbose=0)  # optimizer variables of the same shapes
r.set_weights(m.get_weights())
r.save(os.path.join(out, "renamed" + ext))
m.fit(x, y, epochs=1, batch_size=64, verbose=0)
m.save(os.path.join(out, "b" + ext))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffkeras")
    for which in ("keras3", "tfkeras"):
        (root / which).mkdir()
    run_in_parallel({w: [sys.executable, "-c", _BUILD, w, root / w] for w in ("keras3", "tfkeras")})
    return {w: root / w for w in ("keras3", "tfkeras")}


def diff_json(a, b):
    proc = run_cli("diff", a, b, "--format", "json")
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("which,ext", [("keras3", ".keras"), ("tfkeras", ".h5")])
def test_identical_and_retrained_files(files, which, ext):
    a, b = files[which] / f"a{ext}", files[which] / f"b{ext}"
    code, doc = diff_json(a, a)
    assert code == 0 and doc["identical"] and doc["config_changed"] is False
    assert doc["compared"] == len(h5_datasets(a))

    code, doc = diff_json(a, b)
    assert code == 1 and not doc["identical"] and doc["config_changed"] is False
    da, db = h5_datasets(a), h5_datasets(b)
    assert doc["compared"] == len(set(da) & set(db))
    want = {n for n in set(da) & set(db) if not np.array_equal(da[n], db[n])}
    changed = {c["name"]: c for c in doc["changed"]}
    assert set(changed) == want and want  # every weight that moved, and nothing else
    for name, c in changed.items():
        assert c["what"] == "value"
        expected = np.abs(da[name].astype(np.float64) - db[name].astype(np.float64)).max()
        assert c["max_abs_diff"] == pytest.approx(expected)
    assert any("moving_mean" in n or n.endswith("vars/2") for n in changed)  # BN statistics moved too


@pytest.mark.parametrize(
    "which,full,weights", [("keras3", "a.keras", "a.weights.h5"), ("tfkeras", "a.h5", "a-weights.h5")]
)
def test_full_model_against_its_save_weights_file(files, which, full, weights):
    code, doc = diff_json(files[which] / full, files[which] / weights)
    # Same weights under the same names (a legacy full model's model_weights/ prefix ignored).
    # tf-keras' save_weights leaves the optimizer state out: only that is one-sided. Keras 3's
    # save_weights keeps it, so the two files are identical.
    assert doc["changed"] == [] and doc["only_in_b"] == []
    assert doc["compared"] == len(h5_datasets(files[which] / weights)) > 0
    assert all(n.split("/")[0] == "optimizer_weights" for n in doc["only_in_a"])
    assert bool(doc["only_in_a"]) == (which == "tfkeras")
    assert doc["config_changed"] is None and code == (1 if which == "tfkeras" else 0)


@pytest.mark.parametrize("which,ext", [("keras3", ".keras"), ("tfkeras", ".h5")])
def test_a_different_config_makes_files_differ(files, which, ext):
    code, doc = diff_json(files[which] / f"a{ext}", files[which] / f"renamed{ext}")
    assert doc["config_changed"] is True and code == 1
    table = run_cli("diff", files[which] / f"a{ext}", files[which] / f"renamed{ext}").stdout
    assert "model config: DIFFERENT" in table


def test_keras3_against_legacy_layout_says_names_cannot_match(files):
    code, doc = diff_json(files["keras3"] / "a.keras", files["tfkeras"] / "a.h5")
    assert code == 1 and doc["compared"] == 0
    assert any("different weight layouts" in n for n in doc["notes"])


def test_keras_diff_never_imports_tensorflow(files):
    proc = run_cli_without_tf("diff", files["keras3"] / "a.keras", files["keras3"] / "b.keras")
    assert proc.returncode == 1 and "TF_LOADED=False" in proc.stderr and "DIFFERENT" in proc.stdout


def test_a_damaged_keras_named_file_is_one_line_for_every_command(files, tmp_path):
    good = files["keras3"] / "a.keras"
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes(good.read_bytes()[:500])  # a zip cut short: no central directory
    renamed = tmp_path / "model.h5"
    renamed.write_bytes(b"not hdf5 at all" * 10)
    for command in (
        ["inspect", truncated],
        ["diff", good, truncated],
        ["inspect", renamed],
        ["repair", truncated, "--data", tmp_path / "X.npy"],
    ):
        proc = run_cli(*command)
        name = "cut.keras" if truncated in command else "model.h5"
        assert_one_line_error(proc, name, "named like a Keras file", "model.save()")
        assert "sstable" not in proc.stderr  # not mistaken for a TensorFlow checkpoint
