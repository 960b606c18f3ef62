"""BN layers inside nested models (a backbone used as a layer): inspect names them by their path, repair
recomputes them in .keras (Keras 3), legacy .h5 and SavedModel directories (tf-keras), leaves a frozen
nested model's BN layer as it is, reports inference-vs-training gaps, and refuses a shared nested model.

The models are built by ``keras_builders.py build {keras3,tfkeras} nested`` (one subprocess per Keras, in
parallel); see ``keras_builders._nested`` for the layout: BN layer paths backbone/bn1,
backbone/block/cell/bn2 (Functional in Sequential in Functional in Functional), frozen/bn3 (its Sequential
has trainable=False) and bn_top.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, cli_command
from test_keras_formats import h5_datasets, inspect_json, losses

BUILDERS = Path(__file__).with_name("keras_builders.py")
MAIN = {"keras3": "model.keras", "tfkeras": "model.h5"}
TRAINABLE = {"backbone/bn1", "backbone/block/cell/bn2", "bn_top"}
FROZEN = "frozen/bn3"


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """which -> the folder ``build_nested`` wrote (both Keras built in parallel)."""
    root = tmp_path_factory.mktemp("nested")
    procs = {
        w: subprocess.Popen(
            [sys.executable, str(BUILDERS), "build", w, "nested", str(root / w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in ("keras3", "tfkeras")
    }
    for _w, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return {w: root / w / "nested" for w in procs}


def sha256(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def variables(folder: Path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    return {k: np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()}


def stored(path: Path) -> dict:
    return variables(path) if path.is_dir() else h5_datasets(path)


def run_cli_parallel(*commands) -> list[subprocess.CompletedProcess]:
    """``ckptdoctor ARGS`` for each ARGS at once (each loads TensorFlow: two cores, half the wait)."""
    procs = [
        subprocess.Popen(
            cli_command() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in commands
    ]
    done = []
    for args, p in zip(commands, procs):
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def repair_json(*commands) -> list[dict]:
    """``ckptdoctor repair ARGS --format json`` for each ARGS, in parallel."""
    results = []
    for proc in run_cli_parallel(*[("repair", *args, "--format", "json") for args in commands]):
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    return results


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize(
    "which", ["keras3", pytest.param("tfkeras", marks=pytest.mark.slow)]
)  # breadth: make test-slow runs it, for make test's time
def test_inspect_names_nested_bn_layers_by_path(nested, which):
    folder = nested[which]
    main, weights = folder / MAIN[which], folder / "model.weights.h5"
    for args in ([main], [weights, "--graph", main]):
        proc, report = inspect_json(*args)
        assert proc.returncode == 0, (args, report["findings"])
        seen = h5_datasets(args[0])
        assert sorted(t["name"] for t in report["tensors"]) == sorted(seen)
        layers = {b["layer"]: b for b in report["bn_layers"]}
        assert set(layers) == TRAINABLE | {FROZEN}
        assert {b["status"] for b in layers.values()} == {"ok"}
        assert not [f for f in report["findings"] if f["severity"] != "info"], report["findings"]
        assert all(t["in_graph"] for t in report["tensors"])
        roles = {t["name"]: t["role"] for t in report["tensors"]}
        for b in layers.values():
            assert seen[b["moving_mean"]].shape == (16,) and b["channels"] == 16
            assert roles[b["moving_mean"]] == "bn_moving_mean" and roles[b["moving_variance"]] == "bn_moving_variance"
        if which == "tfkeras" and args[0] == main:  # the legacy layout keeps nested weights in the top group
            assert layers["backbone/block/cell/bn2"]["moving_mean"] == "model_weights/backbone/bn2/moving_mean:0"
    # Weights only: still four BN layers, each with its own statistics.
    proc, report = inspect_json(weights)
    means = [b["moving_mean"] for b in report["bn_layers"]]
    assert len(set(means)) == 4 and all(m.startswith("layers/") for m in means)
    if which == "keras3":  # Keras 3 records each nested model's name
        assert {b["layer"] for b in report["bn_layers"]} == TRAINABLE | {FROZEN}
    else:  # tf-keras save_weights in the legacy layout: the top-level layer and the variable's own name
        legacy = folder / "legacy_weights.h5"
        proc, report = inspect_json(legacy)
        assert {b["layer"] for b in report["bn_layers"]} == {"backbone/bn1", "backbone/bn2", FROZEN, "bn_top"}
        assert {b["status"] for b in report["bn_layers"]} == {"ok"}
        proc, report = inspect_json(legacy, "--graph", main)
        assert {b["layer"] for b in report["bn_layers"]} == TRAINABLE | {FROZEN}
        assert proc.returncode == 0 and all(t["in_graph"] for t in report["tensors"])
        proc, report = inspect_json(folder / "savedmodel")  # named by path as well, so inspect and repair agree
        assert {b["layer"]: b["status"] for b in report["bn_layers"]} == {name: "ok" for name in TRAINABLE | {FROZEN}}


def test_inspect_legacy_h5_reports_a_missing_nested_statistic(nested, tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes((nested["tfkeras"] / "model.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        del f["model_weights/backbone/bn2/moving_variance:0"]
        f["model_weights/backbone/bn1/moving_mean:0"][...] = 0
        f["model_weights/backbone/bn1/moving_variance:0"][...] = 1
    proc, report = inspect_json(path)
    assert proc.returncode == 1
    status = {b["layer"]: b["status"] for b in report["bn_layers"]}
    assert status == {"backbone/bn1": "at-init", "backbone/block/cell/bn2": "partial", FROZEN: "ok", "bn_top": "ok"}


# --------------------------------------------------------------------------- repair


def check_repair(src: Path, out: Path, result: dict, expected: dict, batch_size: int) -> None:
    """Only the trainable BN layers' statistics changed, as numpy computed them; gaps reported and closed."""
    assert result["output"] == str(out) and result["samples"] == 320
    layers = {layer["layer"]: layer for layer in result["layers"]}
    assert set(layers) == TRAINABLE  # the frozen nested model's BN layer is left as it is
    assert any(FROZEN in note and "frozen" in note for note in result["notes"]), result["notes"]
    assert not any("not measured" in note for note in result["notes"])
    assert result["gap_note"].startswith("gaps:")
    a, b = stored(src), stored(out)
    assert set(a) == set(b)
    stats = {layer[k] for layer in layers.values() for k in ("moving_mean", "moving_variance")}
    assert result["updated"] == len(stats) == 6 and result["untouched"] + 6 == len(a)
    for key in a:
        if key not in stats:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    for name, layer in layers.items():
        mean, var = expected[f"{name}/mean@{batch_size}"], expected[f"{name}/var@{batch_size}"]
        np.testing.assert_allclose(b[layer["moving_mean"]], mean, rtol=1e-4, atol=1e-5 * np.abs(mean).max())
        np.testing.assert_allclose(b[layer["moving_variance"]], var, rtol=1e-4)
        assert not np.allclose(a[layer["moving_variance"]], var, rtol=1e-2)  # they were stale
        assert layer["gap_before"] > 1 and layer["gap_after"] < layer["gap_before"] / 4, (name, layer)


@pytest.mark.parametrize(
    "which", ["keras3", pytest.param("tfkeras", marks=pytest.mark.slow)]
)  # breadth: make test-slow runs it, for make test's time
def test_repair_nested_bn_layers_fixes_inference(nested, tmp_path, which):
    folder = nested[which]
    expected = np.load(folder / "stats.npz")
    sources = [folder / MAIN[which]] + ([folder / "savedmodel"] if which == "tfkeras" else [])
    outputs = [tmp_path / ("repaired" if src.is_dir() else "repaired" + src.suffix) for src in sources]
    before = [sha256(src) for src in sources]
    results = repair_json(
        *[(src, "--data", folder / "X.npy", "--batch-size", 64, "--output", out) for src, out in zip(sources, outputs)]
    )
    pairs = []
    for src, out, digest, result in zip(sources, outputs, before, results):
        assert sha256(src) == digest  # the input is never written
        check_repair(src, out, result, expected, 64)
        if src.suffix == ".keras":
            import zipfile

            with zipfile.ZipFile(src) as za, zipfile.ZipFile(out) as zb:
                assert za.read("config.json") == zb.read("config.json")
        elif src.suffix == ".h5":
            with h5py.File(src, "r") as fa, h5py.File(out, "r") as fb:
                assert fa.attrs["model_config"] == fb.attrs["model_config"]
        else:
            assert (src / "keras_metadata.pb").read_bytes() == (out / "keras_metadata.pb").read_bytes()
        pairs += [src, out]
    results = losses(which, folder / "X.npy", folder / "y.npy", *pairs)
    for old, new in zip(results[::2], results[1::2]):
        assert old["infer"] > 5 * old["train"], old  # stale: far off
        assert new["infer"] / new["train"] < 1.5 and new["train"] / new["infer"] < 1.5, new


def test_sequential_method_with_one_batch_closes_the_gaps(nested, tmp_path):
    folder = nested["keras3"]
    src, out = folder / "model.keras", tmp_path / "seq.keras"
    (result,) = repair_json(
        (src, "--data", folder / "X.npy", "--method", "sequential", "--batch-size", 512, "--output", out)
    )
    check_repair(src, out, result, np.load(folder / "stats.npz"), 320)
    for layer in result["layers"]:  # all data in one batch: inference mode gives training mode's outputs
        assert layer["gap_after"] < 1e-3 * layer["gap_before"], layer


@pytest.mark.parametrize(
    "which", ["keras3", pytest.param("tfkeras", marks=pytest.mark.slow)]
)  # breadth: make test-slow runs it, for make test's time
def test_shared_nested_model_and_all_frozen_are_refused(nested, tmp_path, which):
    folder = nested[which]
    ext = ".keras" if which == "keras3" else ".h5"
    out = tmp_path / ("out" + ext)
    shared, frozen = run_cli_parallel(
        ("repair", folder / ("shared" + ext), "--data", folder / "ab.npz", "--output", out),
        ("repair", folder / ("allfrozen" + ext), "--data", folder / "X.npy", "--output", out),
    )
    assert_one_line_error(shared, "base/bn", "runs 2 times per forward pass", "shared")
    assert_one_line_error(
        frozen,
        "no trainable BatchNormalization layer",
        "base/bn",
        "trainable=False",
        "leaves frozen BN layers as they are",
    )
    assert not out.exists()
