"""The Keras expectation cache: what Keras said each kind of layer stores, kept on disk per Keras version.

A real Keras 3 model (conv, BN, dense) is saved as ``.keras`` with one BN statistic removed; the first
inspect asks Keras, the next ones, in fresh processes, read the kept answers and import neither Keras
nor TensorFlow, and report the same. Damaged, foreign or disabled caches change nothing; a poisoned
one for the installed Keras does change what is expected (so the answers really come from the file).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import pytest
from conftest import run_cli

_BUILD = """
import sys, keras
keras.utils.set_random_seed(0)
x = keras.Input((8, 8, 3))
y = keras.layers.Conv2D(4, 3, name="conv")(x)
y = keras.layers.BatchNormalization(name="bn")(y)
y = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y))
keras.Model(x, keras.layers.Dense(2, name="dense")(y)).save(sys.argv[1])
"""

_INSPECT = """
import json, sys, ckptdoctor
r = ckptdoctor.inspect(sys.argv[1], stats=False)
print(json.dumps({"report": r.to_dict(), "tf": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def _keras3_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return {**env, **extra}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A .keras whose BN layer lost its moving variance (``vars/3``)."""
    folder = tmp_path_factory.mktemp("expect-cache")
    healthy = folder / "healthy.keras"
    subprocess.run([sys.executable, "-c", _BUILD, healthy], check=True, env=_keras3_env(), timeout=600)
    path = folder / "broken.keras"
    weights = folder / "model.weights.h5"
    with zipfile.ZipFile(healthy) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            if info.filename != "model.weights.h5":
                zout.writestr(info, zin.read(info))
                continue
            weights.write_bytes(zin.read(info))
            with h5py.File(weights, "r+") as f:
                del f["layers/batch_normalization/vars/3" if "layers/batch_normalization" in f else "layers/bn/vars/3"]
            zout.write(weights, "model.weights.h5")
    return path


def _inspect(path, cache) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, path],
        capture_output=True,
        text=True,
        timeout=600,
        env=_keras3_env(CKPTDOCTOR_CACHE_DIR=str(cache)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _checked(report: dict) -> tuple:
    """What the cross-reference decided: findings, tensors and BN layers (the notes say how it was decided)."""
    return report["findings"], report["tensors"], report["bn_layers"]


def _cache_file(cache) -> str:
    files = [f for f in os.listdir(cache) if f.startswith("keras-expect-")]
    assert len(files) == 1, files
    return os.path.join(cache, files[0])


def _kept(cache) -> dict:
    with open(_cache_file(cache)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference(broken, tmp_path_factory):
    """The report of a run that asked Keras (its cache then filled), and that cache's folder."""
    cache = tmp_path_factory.mktemp("cache")
    first = _inspect(broken, cache)
    assert first["keras"] and first["tf"]
    return first["report"], cache


def test_first_inspect_asks_keras_and_the_next_reads_the_kept_answers(broken, reference):
    report, cache = reference
    codes = [f["code"] for f in report["findings"]]
    assert "missing-in-checkpoint" in codes or "bn-stats-missing" in codes, codes
    assert any("checked against Keras 3." in n for n in report["notes"])
    kept = _kept(cache)
    assert kept["keras"] and len(kept["entries"]) >= 3  # conv, bn, dense (at least)
    again = _inspect(broken, cache)
    assert not again["tf"] and not again["keras"]
    assert _checked(again["report"]) == _checked(report)
    assert again["report"]["notes"] == report["notes"]  # one file inspected twice reads the same
    # The CLI too, in its own process.
    proc = run_cli("inspect", broken, "--stats=False", "--format", "json", env=_keras3_env(CKPTDOCTOR_CACHE_DIR=cache))
    assert _checked(json.loads(proc.stdout)) == _checked(report) and proc.returncode == 1


@pytest.mark.parametrize(
    "content",
    [b"\x00\xffnot json at all", b'{"form": "ckptdoctor-keras-expect-1", "keras": "3", "entries": [1, 2]}', b"[]"],
)
def test_a_damaged_cache_is_read_as_empty(broken, reference, tmp_path, content):
    report, cache = reference
    shutil.copyfile(_cache_file(cache), tmp_path / os.path.basename(_cache_file(cache)))
    (tmp_path / os.path.basename(_cache_file(cache))).write_bytes(content)
    got = _inspect(broken, tmp_path)
    assert got["keras"]  # Keras was asked again
    assert _checked(got["report"]) == _checked(report)
    assert len(_kept(tmp_path)["entries"]) >= 3  # and its answers kept


def test_an_empty_cache_dir_setting_turns_the_cache_off(broken, reference, tmp_path):
    report, _ = reference
    xdg = tmp_path / "xdg"
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, broken],
        capture_output=True,
        text=True,
        timeout=600,
        env=_keras3_env(CKPTDOCTOR_CACHE_DIR="", XDG_CACHE_HOME=str(xdg), HOME=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    assert _checked(json.loads(proc.stdout.strip().splitlines()[-1])["report"]) == _checked(report)
    assert not xdg.exists() and not (tmp_path / ".cache").exists()


def _poisoned(cache, version: str) -> dict:
    """The kept answers with the dense layer's kernel declared 99 x 99."""
    kept = _kept(cache)
    hits = 0
    for key, value in kept["entries"].items():
        if value and '"Dense"' in key:
            for part in value:
                for weight in part:
                    if weight[1].endswith("kernel"):
                        weight[2] = [99, 99]
                        hits += 1
    assert hits == 2  # the v3 and the legacy form
    kept["keras"] = version
    return kept


def test_answers_are_those_of_the_file_for_the_installed_keras_only(broken, reference, tmp_path):
    report, cache = reference
    name = os.path.basename(_cache_file(cache))
    version = _kept(cache)["keras"]
    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir()
    other.mkdir()
    (own / name).write_text(json.dumps(_poisoned(cache, version)))
    got = _inspect(broken, own)
    assert not got["keras"]
    mismatched = [f for f in got["report"]["findings"] if f["code"] == "shape-mismatch"]
    assert mismatched and "99" in mismatched[0]["message"]
    # The same answers under another Keras' name are never read: Keras is asked, the report is the reference.
    (other / "keras-expect-0.0.1.json").write_text(json.dumps(_poisoned(cache, "0.0.1")))
    got = _inspect(broken, other)
    assert got["keras"] and _checked(got["report"]) == _checked(report)


_BOUNDS = """
import json, sys, types
from ckptdoctor.formats.keras import expect

expect.MAX_REBUILDS = 3


def dense(path, units):
    build = {"input_shape": [None, 3]}
    item = {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "build_config": build,
            "config": {"name": path, "units": units, "activation": "linear", "use_bias": True}}
    return types.SimpleNamespace(path=path, class_name="Dense", item=item)


layers = [dense("bad1", -7)] + [dense(f"d{i}", i + 1) for i in range(5)] + [dense("bad2", -7)]
config = {"class_name": "Functional", "config": {"layers": [vars(x)["item"] for x in layers]}}
runs = []
for _ in range(2):  # the second time in this process: the kinds are known, the failure too
    out = expect.expect_weights(layers, config, "3", "v3")
    runs.append({"layers": sorted(out.layers), "unchecked": sorted(out.unchecked)})
print(json.dumps(runs))
"""


def test_checked_kinds_bounded_alike_cold_and_warm_and_failures_keep_their_reason(tmp_path):
    # MAX_REBUILDS bounds the kinds checked, whatever the cache holds: a second run, whose cache knows the first
    # run's kinds, checks the same ones (it used to check more, and the report changed from run to run). A kind
    # Keras failed to rebuild keeps its reason for every layer of it and on a second call in the same process
    # (it used to read "no build_config").
    env = _keras3_env(CKPTDOCTOR_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):  # cold, then warm from the first run's cache, each a fresh process
        proc = subprocess.run([sys.executable, "-c", _BOUNDS], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(runs) == 4 and all(run == runs[0] for run in runs)
    assert runs[0]["layers"] == ["d0", "d1"]
    reasons = dict(map(tuple, runs[0]["unchecked"]))
    assert set(reasons) == {"d2", "d3", "d4", "bad1", "bad2"}
    assert reasons["d2"] == reasons["d4"] == "not rebuilt: the config asks for more than 3 kinds of layers"
    assert reasons["bad1"] == reasons["bad2"] and reasons["bad1"].startswith("Keras could not rebuild it")
