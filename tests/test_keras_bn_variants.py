"""Keras repair of the BN variants: synchronized, renorm, center/scale off, axis=1 and -1, mixed_float16,
virtual_batch_size (refused in one line), channels-first convolutions (which need oneDNN on a CPU).

Built, repaired and checked as ``test_keras_bn_only.py``'s models (``build_repair_check``: the expected statistics
and outputs come from Keras alone). Breadth: ``make test-slow`` runs this file, for ``make test``'s time.
"""

import json
import os

import pytest
from conftest import assert_one_line_error, run_cli
from test_keras_bn_only import N_ALL, assert_repaired, build_repair_check, stored

pytestmark = pytest.mark.slow

KINDS = {
    "keras3": "sync,renorm,centerscale,axis1,mixed,nchw",
    "tfkeras": "renorm,centerscale,axis1,mixed,vbs",
}
# (which, kind, source, extra options): every repair the tests look at, run once per module.
REPAIRS = {
    "keras3-sync": ("keras3", "sync", "model.keras", ()),
    "keras3-renorm": ("keras3", "renorm", "model.keras", ()),
    "tfkeras-renorm": ("tfkeras", "renorm", "model.h5", ()),
    "keras3-centerscale": ("keras3", "centerscale", "model.keras", ()),
    "tfkeras-centerscale": ("tfkeras", "centerscale", "model.h5", ()),
    "keras3-axis1": ("keras3", "axis1", "model.keras", ()),
    "tfkeras-axis1": ("tfkeras", "axis1", "model.h5", ()),
    "keras3-mixed": ("keras3", "mixed", "model.keras", ()),
    "tfkeras-mixed": ("tfkeras", "mixed", "model.h5", ()),
    "tfkeras-vbs": ("tfkeras", "vbs", "model.h5", ()),
    "tfkeras-vbs-savedmodel": ("tfkeras", "vbs", "savedmodel", ()),
}


@pytest.fixture(scope="module")
def repaired(tmp_path_factory):
    """name -> Repaired for every entry of REPAIRS (built, repaired and checked once)."""
    return build_repair_check(tmp_path_factory.mktemp("bn_variants"), KINDS, REPAIRS)


def test_synchronized_batch_normalization(repaired):
    assert_repaired(repaired["keras3-sync"], {"bn1", "bn2"})


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_renorm_is_measured_as_plain_batch_normalization(repaired, which):
    r = repaired[f"{which}-renorm"]
    assert_repaired(r, {"bn1", "bn2"})  # renorm_mean/renorm_stddev among the bit-identical tensors
    # The renorm statistics are stored (tf-keras by name; Keras 3 as the BN group's vars 4-6).
    renorm = ("renorm_mean", "renorm_mean:0") if which == "tfkeras" else ("/vars/5", "/vars/6")
    assert any(k.endswith(renorm) for k in stored(r.output))
    assert any("renorm=True: bn1" in note and "left as they are" in note for note in r.report["notes"])


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_center_and_scale_off(repaired, which):
    r = repaired[f"{which}-centerscale"]
    assert_repaired(r, {"bn1", "bn2"})
    with open(r.source.parent / "info.json") as f:  # gamma, moving mean and variance; beta, moving mean and variance
        assert json.load(f)["bn"] == {"bn1": 3, "bn2": 3}


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_channels_first_axis_1_and_axis_minus_1(repaired, which):
    r = repaired[f"{which}-axis1"]
    assert_repaired(r, {"bn_conv", "bn_dense", "bn_last"})
    channels = {layer["layer"]: layer["channels"] for layer in r.report["layers"]}
    assert channels == {"bn_conv": 8, "bn_dense": 8, "bn_last": 4}
    samples = {layer["layer"]: layer["samples"] for layer in r.report["layers"]}
    assert set(samples.values()) == {N_ALL}


def test_channels_first_convolution_needs_onednn_on_a_cpu(repaired, tmp_path):
    # TensorFlow's own CPU kernels have no channels-first convolution: oneDNN's have, and TensorFlow turns oneDNN on
    # by default only on some Intel CPUs. Off, the repair cannot run the model: one line saying how to turn it on.
    folder = repaired["keras3-sync"].source.parent.parent / "nchw"
    args = ["repair", folder / "model.keras", "--data", folder / "X.npy", "--format", "json", "--output"]
    off = run_cli(*args, tmp_path / "off.keras", env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert_one_line_error(off, "TensorFlow cannot run the model on this CPU", "NHWC", "TF_ENABLE_ONEDNN_OPTS=1")
    assert not list(tmp_path.iterdir())
    on = run_cli(*args, tmp_path / "on.keras", env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert on.returncode == 0, on.stderr
    report = json.loads(on.stdout)
    assert [layer["layer"] for layer in report["layers"]] == ["bn"] and report["output_check"]["improved"]
    assert report["layers"][0]["channels"] == 8


@pytest.mark.parametrize("which", ["keras3", "tfkeras"])
def test_mixed_float16_policy(repaired, which):
    r = repaired[f"{which}-mixed"]
    # float16 BN inputs: the statistics are as exact as the inputs are (3 significant digits)
    assert_repaired(r, {"bn1", "bn2"}, rtol=5e-3, out_rtol=5e-3)
    with open(r.source.parent / "info.json") as f:
        assert json.load(f)["dtypes"]["d1"] == "mixed_float16"


@pytest.mark.parametrize("source", ["model.h5", "savedmodel"])
def test_virtual_batch_size_is_a_one_line_error(repaired, source):
    r = repaired["tfkeras-vbs" + ("-savedmodel" if source == "savedmodel" else "")]
    assert_one_line_error(
        r.proc,
        "BN layer bn1",
        "virtual_batch_size=16",
        "cannot load it back",
        "virtual_batch_size=None",
        "model.load_weights",
    )
    assert not r.output.exists()
