"""A Keras repair's per-layer gaps are measured on the first ``LAYER_GAP_SAMPLES`` samples of the first batch.

One BN layer right after a Dense layer: its input is the same in inference and BN-training mode, so numpy
computes both of its outputs from the Dense layer's own output. The sample whose gap is largest is placed past
the first 16, so a gap over the whole batch would be a different number; the output check still covers the
whole batch.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from ckptdoctor.runtime.keras_runner import LAYER_GAP_SAMPLES

N = 40  # samples, one batch
BAD_MEAN = 3.0  # the stored moving mean: far from the data's

_BUILD = r"""
import json, sys
import numpy as np
import keras
folder = sys.argv[1]
keras.utils.set_random_seed(0)
inp = keras.Input((4,))
h = keras.layers.Dense(6, name="dense")(inp)
bn = keras.layers.BatchNormalization(name="bn")
out = keras.layers.Dense(2, name="head")(bn(h))
model = keras.Model(inp, out)
bn.moving_mean.assign(np.full(6, %(bad)r, "float32"))
rng = np.random.default_rng(0)
x = rng.normal(size=(%(n)d, 4)).astype("float32")
x[30] *= 12.0  # the largest gap lies past the first samples
np.save(folder + "/X.npy", x)
model.save(folder + "/model.keras")
hidden = np.asarray(model.get_layer("dense")(x), dtype=np.float64)
json.dump({"hidden": hidden.tolist(), "eps": float(bn.epsilon),
           "mean": np.asarray(bn.moving_mean).tolist(), "var": np.asarray(bn.moving_variance).tolist()},
          open(folder + "/expect.json", "w"))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaps")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # Keras 3
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    subprocess.run(
        [sys.executable, "-c", _BUILD % {"bad": BAD_MEAN, "n": N}, str(folder)],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    return folder


def test_layer_gaps_are_on_the_first_samples_and_the_output_check_on_the_whole_batch(built):
    proc = run_cli(
        "repair",
        built / "model.keras",
        "--data",
        built / "X.npy",
        "--batch-size",
        N,
        "--output",
        built / "out.keras",
        "--format",
        "json",
        check_codes=(0,),
    )
    doc = json.loads(proc.stdout)
    expect = json.loads((built / "expect.json").read_text())
    h = np.asarray(expect["hidden"])
    eps = expect["eps"]
    reference = (h - h.mean(axis=0)) / np.sqrt(h.var(axis=0) + eps)  # gamma 1, beta 0
    stored = (h - np.asarray(expect["mean"])) / np.sqrt(np.asarray(expect["var"]) + eps)
    per_sample = np.abs(stored - reference).max(axis=1)
    first, whole = per_sample[:LAYER_GAP_SAMPLES].max(), per_sample.max()
    assert whole > 1.5 * first  # the data make the two figures differ
    (layer,) = doc["layers"]
    assert layer["gap_before"] == pytest.approx(first, rel=1e-4)
    assert layer["gap_after"] < 1e-4 * layer["gap_before"]
    assert doc["output_check"]["samples"] == N
    assert f"first {LAYER_GAP_SAMPLES} samples of the first batch" in doc["gap_note"]
