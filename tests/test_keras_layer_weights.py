"""The weights each built-in Keras layer class stores, checked against Keras itself (keras_expect).

``keras_layer_builders.py`` builds, in one subprocess per Keras, a model holding every class of
``keras.layers`` (``tf_keras.layers``) that builds on a simple input, and MobileNetV2; every file
saved healthy must inspect without an error, a missing or an unexpected weight, and removing one
weight must give exactly one ``missing-in-checkpoint`` for it.
"""

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import h5_datasets, run_cli, run_cli_without_tf, run_in_parallel

BUILDERS = Path(__file__).with_name("keras_layer_builders.py")
#: Classes the enumeration must reach (in both Keras); the weighted ones must hold weights.
NAMED = {
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "SimpleRNNCell",
    "Bidirectional",
    "Embedding",
    "LayerNormalization",
    "GroupNormalization",
    "MultiHeadAttention",
    "Normalization",
    "PReLU",
    "TimeDistributed",
    "ConvLSTM2D",
    "Attention",
    "BatchNormalization",
    "UnitNormalization",
    "Discretization",
    "Dense",
    "Conv2D",
    "EinsumDense",
    "StackedRNNCells",
}
WEIGHTLESS = {"UnitNormalization", "Discretization"}
HEALTHY = {
    "keras3": [("layers.keras",), ("layers.weights.h5", "--graph", "layers.keras"), ("mobilenet.keras",)],
    "tfkeras": [("layers.h5",), ("layers.legacy-weights.h5", "--graph", "layers.h5"), ("mobilenet.h5",)],
}
CHECKED_BY = {"keras3": "checked against Keras 3.", "tfkeras": "checked against tf-keras 2."}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """which -> (folder, info.json), both Keras built side by side."""
    root = tmp_path_factory.mktemp("layers")
    run_in_parallel({w: [sys.executable, BUILDERS, w, root / w] for w in ("keras3", "tfkeras")})
    return {w: (root / w, json.loads((root / w / "info.json").read_text())) for w in ("keras3", "tfkeras")}


def inspect_json(*args, without_tf=False):
    run = run_cli_without_tf if without_tf else run_cli
    proc = run("inspect", *args, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc, json.loads(proc.stdout)


def cross_reference(report):
    return [
        f
        for f in report["findings"]
        if f["code"] in ("missing-in-checkpoint", "unexpected-in-checkpoint", "shape-mismatch")
        or f["severity"] == "error"
    ]


def rebuilt(report, which) -> int:
    notes = [n for n in report["notes"] if CHECKED_BY[which] in n]
    assert len(notes) == 1, report["notes"]
    return int(re.search(r"rebuilt (\d+) layers", notes[0]).group(1))


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_every_layer_class_is_enumerated(built, which):
    _, info = built[which]
    classes, weighted = set(info["classes"]), set(info["weighted"])
    print(
        f"{which} {info['keras_version']}: {len(classes)} classes in the model, {len(weighted)} with weights; "
        f"left out: {info['skipped']}"
    )
    assert classes >= NAMED, sorted(NAMED - classes)
    assert weighted >= NAMED - WEIGHTLESS, sorted(NAMED - WEIGHTLESS - weighted)
    assert len(weighted) >= 35 and len(classes) >= 100
    # The same class stores differently named weights in the two Keras: no single table fits both.
    depthwise = {w.rsplit("/", 1)[-1].split(":")[0] for w in info["weights"][info["classes"]["DepthwiseConv2D"][0]]}
    assert depthwise == ({"kernel", "bias"} if which == "keras3" else {"depthwise_kernel", "bias"})


@pytest.mark.parametrize(
    "which,args",
    [(w, a) for w, cases in HEALTHY.items() for a in cases],
    ids=lambda v: v if isinstance(v, str) else "+".join(v).replace("--graph+", "graph-"),
)
def test_healthy_files_inspect_clean(built, which, args):
    folder, info = built[which]
    path = folder / args[0]
    proc, report = inspect_json(path, *[folder / a if a.endswith((".keras", ".h5")) else a for a in args[1:]])
    assert cross_reference(report) == [], cross_reference(report)[:5]
    assert proc.returncode == 0, proc.stderr
    seen = h5_datasets(path)
    assert {t["name"]: t["shape"] for t in report["tensors"]} == {k: list(v.shape) for k, v in seen.items()}
    if args[0].startswith("layers"):  # every layer with weights was rebuilt by Keras, not skipped
        assert rebuilt(report, which) >= sum(1 for w in info["weights"].values() if w)
        assert len(report["bn_layers"]) == len(info["classes"]["BatchNormalization"])
    else:
        assert rebuilt(report, which) > 150  # MobileNetV2: 156 layers, 17 of them DepthwiseConv2D
        assert len(report["bn_layers"]) == 52


def test_weights_file_alone_is_not_cross_referenced(built):
    folder, _ = built["keras3"]
    proc, report = inspect_json(folder / "layers.weights.h5")
    assert cross_reference(report) == [] and proc.returncode == 0
    assert not any("checked against" in n for n in report["notes"])


# --------------------------------------------------------------------------- a weight removed


def copy_keras_archive(src: Path, dst: Path, edit) -> None:
    """A copy of a .keras archive whose model.weights.h5 was changed by ``edit(h5py.File)``."""
    weights = dst.with_suffix(".weights-tmp.h5")
    with zipfile.ZipFile(src) as z:
        weights.write_bytes(z.read("model.weights.h5"))
        with h5py.File(weights, "r+") as f:
            edit(f)
        with zipfile.ZipFile(dst, "w") as out:
            for member in z.namelist():
                out.writestr(member, weights.read_bytes() if member == "model.weights.h5" else z.read(member))
    weights.unlink()


def missing(report):
    return [(f["layer"], f["tensor"]) for f in report["findings"] if f["code"] == "missing-in-checkpoint"]


def unexpected(report):
    return [f["tensor"] for f in report["findings"] if f["code"] == "unexpected-in-checkpoint"]


@pytest.mark.parametrize(
    "cls,index,weight",
    [("LSTM", 2, "cell/bias"), ("DepthwiseConv2D", 0, "kernel"), ("MultiHeadAttention", 1, "value_dense/bias")],
)
def test_keras3_weight_removed_is_missing_once(built, tmp_path, cls, index, weight):
    folder, info = built["keras3"]
    layer = info["classes"][cls][0]
    sub = weight.rsplit("/", 1)[0] + "/" if "/" in weight else ""
    with zipfile.ZipFile(folder / "layers.keras") as z, z.open("model.weights.h5") as m, h5py.File(m, "r") as f:
        groups = [g for g in f["layers"] if f["layers"][g]["vars"].attrs.get("name") == layer]
    assert len(groups) == 1
    key = f"layers/{groups[0]}/{sub}vars/{index}"
    path = tmp_path / "broken.keras"
    copy_keras_archive(folder / "layers.keras", path, lambda f: f.__delitem__(key))
    proc, report = inspect_json(path)
    assert missing(report) == [(layer, f"{layer}/{weight}")]
    assert unexpected(report) == []
    assert proc.returncode == 1
    assert key not in {t["name"] for t in report["tensors"]}


@pytest.mark.parametrize(
    "also_unlisted", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["listed", "unlisted"]
)  # breadth: make test-slow runs it, for make test's time
def test_legacy_weight_removed_is_missing_once(built, tmp_path, also_unlisted):
    """Removed from the datasets only, the file still names it (weight_names); removed from both, only
    tf-keras rebuilding the layer knows it should be there."""
    folder, info = built["tfkeras"]
    layer = info["classes"]["DepthwiseConv2D"][0]
    path = tmp_path / "broken.h5"
    shutil.copyfile(folder / "layers.h5", path)
    with h5py.File(path, "r+") as f:
        group = f[f"model_weights/{layer}"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        gone = [n for n in names if n.endswith("depthwise_kernel:0")]
        assert len(gone) == 1
        del group[gone[0]]
        if also_unlisted:
            group.attrs["weight_names"] = [n.encode() for n in names if n != gone[0]]
    proc, report = inspect_json(path)
    assert missing(report) == [(layer, f"{layer}/depthwise_kernel")]
    assert unexpected(report) == []
    assert proc.returncode == 1


# --------------------------------------------------------------------------- without Keras


@pytest.mark.parametrize("which,name", [("keras3", "layers.keras"), ("tfkeras", "layers.h5")])
def test_without_tensorflow_nothing_is_falsely_missing(built, which, name, monkeypatch):
    folder, _ = built[which]
    monkeypatch.setenv("CKPTDOCTOR_CACHE_DIR", "")  # no answers kept from the runs with Keras: none to ask
    proc, report = inspect_json(folder / name, without_tf=True)
    assert "TF_LOADED=False" in proc.stderr
    assert cross_reference(report) == [], cross_reference(report)[:5]
    assert proc.returncode == 0
    assert any("not checked against Keras" in n for n in report["notes"]), report["notes"]
    assert len(report["bn_layers"]) == 2


def test_without_tensorflow_a_listed_weight_removed_is_still_missing(built, tmp_path):
    folder, info = built["tfkeras"]
    layer = info["classes"]["LSTM"][0]
    path = tmp_path / "broken.h5"
    shutil.copyfile(folder / "layers.h5", path)
    with h5py.File(path, "r+") as f:
        del f[f"model_weights/{layer}/{layer}/lstm_cell/recurrent_kernel:0"]
    proc, report = inspect_json(path, without_tf=True)
    assert missing(report) == [(layer, f"{layer}/lstm_cell/recurrent_kernel")]
    assert proc.returncode == 1


def test_legacy_weight_of_the_wrong_shape_is_a_shape_mismatch(built, tmp_path):
    folder, info = built["tfkeras"]
    layer = info["classes"]["SeparableConv2D"][0]
    path = tmp_path / "reshaped.h5"
    shutil.copyfile(folder / "layers.h5", path)
    with h5py.File(path, "r+") as f:
        group = f[f"model_weights/{layer}/{layer}"]
        shape = group["pointwise_kernel:0"].shape
        del group["pointwise_kernel:0"]
        group.create_dataset("pointwise_kernel:0", data=np.zeros(shape[:-1] + (shape[-1] + 1,), "float32"))
    proc, report = inspect_json(path)
    found = [(f["code"], f["layer"], f["tensor"]) for f in cross_reference(report)]
    assert found == [("shape-mismatch", layer, f"model_weights/{layer}/{layer}/pointwise_kernel:0")]
    assert proc.returncode == 1
