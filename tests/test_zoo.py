"""A zoo of published architectures: inspect finds their BN layers, repair makes inference mode give the
training-mode outputs, and leaves every other tensor bit for bit.

Each case is a net from ``keras.applications`` (Keras 3, ``.keras``), ``tf_keras.applications`` (legacy
``.h5``, one SavedModel directory) or TF-Slim (a TF1 graph with an ``is_training`` switch, saved by a
``Saver`` with its ``.meta``, the BN statistics never updated), built by ``zoo_builders.py`` in its own
subprocess (see its docstring) once per test session, trained a few steps so its statistics are stale.

Every test is marked ``zoo``; ``make test`` (plain ``pytest``) runs only the cases marked ``zoo_subset``, one
per kind of file; ``make zoo`` (``pytest -m zoo``) runs them all. Set ``ZOO_TIMINGS=FILE`` to append each
case's timings (build, inspect, repair, evaluation in seconds) to FILE as JSON lines.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, h5_datasets, run_cli, tf_reader_values

BUILDERS = Path(__file__).with_name("zoo_builders.py")
SUBSET = {
    "keras3-MobileNetV3Small",
    "tfkeras-MobileNetV2",
    "slim-inception_v2",
}  # EfficientNetB0 (Keras 3): test_keras_bn_only
CASES = [
    ("keras3", "ResNet50"),
    ("keras3", "MobileNetV2"),
    ("keras3", "DenseNet121"),
    ("keras3", "EfficientNetB0"),  # stochastic depth (Dropout) before BN layers; a Normalization layer
    ("keras3", "MobileNetV3Small"),  # Dropout after the last BN layer (before the classifier); hard-swish
    ("keras3", "NASNetMobile"),
    ("keras3", "ConvNeXtTiny"),  # LayerNormalization only: the negative control, no BN layer
    ("tfkeras", "MobileNetV2"),  # DepthwiseConv2D in a legacy .h5
    ("tfkeras", "MobileNetV3Small"),  # Dropout in a legacy .h5
    ("tfkeras", "EfficientNetB0-savedmodel"),
    ("slim", "resnet_v1_50"),
    ("slim", "inception_v2"),  # separable convolutions, BN without gamma, dropout
]
NO_BN = {"keras3-ConvNeXtTiny"}
# Inference-mode outputs of the repaired model against the training-mode reference, relative to max|ref|.
TOLERANCE = {"keras3": 1e-3, "tfkeras": 1e-3, "slim": 5e-3}


class Case:
    """One built net: its folder, info.json, the model path, and what the tests ran on it (cached)."""

    def __init__(self, family: str, folder: Path):
        self.family, self.folder = family, folder
        self.info = json.loads((folder / "info.json").read_text())
        self.model = Path(self.info["model"])
        self.X = folder / "X.npy"
        self.ref = np.load(folder / "ref.npy")
        self.timings = {"build": self.info["seconds"]}
        self._repair = None
        self._outputs = None

    @property
    def repaired(self) -> Path:
        if self.family == "slim":
            return self.folder / "repaired.ckpt"
        return self.folder / ("repaired" if self.model.is_dir() else "repaired" + self.model.suffix)

    def timed_cli(self, step: str, *args) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        proc = run_cli(*args)
        self.timings[step] = round(time.perf_counter() - started, 1)
        return proc

    def repair(self) -> dict:
        """``repair --data X.npy --batch-size <all samples>`` once; its JSON document."""
        if self._repair is None:
            proc = self.timed_cli(
                "repair",
                "repair",
                self.model,
                "--data",
                self.X,
                "--batch-size",
                self.info["samples"],
                "--output",
                self.repaired,
                "--format",
                "json",
            )
            assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
            self._repair = json.loads(proc.stdout)
        return self._repair

    def outputs(self) -> dict:
        """Inference-mode outputs of the original and the repaired model (one evaluator subprocess)."""
        if self._outputs is None:
            self.repair()
            paths = {"original": self.model, "repaired": self.repaired}
            argv = [sys.executable, str(BUILDERS), "evaluate", self.family, str(self.X), str(self.folder / "info.json")]
            for name, path in paths.items():
                argv += [str(path), str(self.folder / f"out-{name}.npy")]
            started = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            self.timings["evaluate(2 models)"] = round(time.perf_counter() - started, 1)
            assert proc.returncode == 0, proc.stderr[-3000:]
            self._outputs = {name: np.load(self.folder / f"out-{name}.npy") for name in paths}
        return self._outputs


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """``zoo(case)`` -> Case, built on first use (one builder subprocess each) and cached per session."""
    root = tmp_path_factory.mktemp("zoo")
    built: dict = {}

    def _get(case: str) -> Case:
        if case not in built:
            family, net = case.split("-", 1)
            folder = root / case
            proc = subprocess.run(
                [sys.executable, str(BUILDERS), "build", family, net, str(folder)],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            built[case] = Case(family, folder)
        return built[case]

    yield _get
    path = os.environ.get("ZOO_TIMINGS")
    if path:
        with open(path, "a") as f:
            for case, c in built.items():
                f.write(json.dumps({"case": case, "bn_layers": len(c.info["bn_layers"]), **c.timings}) + "\n")


def inspect(c: Case, path, step: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = c.timed_cli(step, "inspect", path, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc, json.loads(proc.stdout)


def errors(report: dict) -> list:
    return [f for f in report["findings"] if f["severity"] == "error"]


def stored(c: Case, path: Path) -> dict:
    """Every stored tensor: HDF5 datasets of Keras files, TensorFlow's reader for checkpoints and SavedModels."""
    if c.family == "slim":
        values = tf_reader_values(str(path))
    elif path.is_dir():
        values = tf_reader_values(str(path / "variables" / "variables"))
    else:
        values = h5_datasets(path)
    return {k: np.asarray(v) for k, v in values.items()}  # TensorFlow's reader gives string tensors as bytes


# --------------------------------------------------------------------------- the tests of one case
# One class per case (made below): --dist loadscope (make zoo) keeps a class on one worker, so each net is built
# once. (pytest-xdist's --dist loadgroup did not group parametrized tests here: pytest 9, xdist 3.8.)


class ZooCase:
    case = ""

    def test_inspect_finds_exactly_the_models_bn_layers(self, zoo):
        c = zoo(self.case)
        proc, report = inspect(c, c.model, "inspect")
        names = [b["layer"] for b in report["bn_layers"]]
        assert len(names) == len(set(names))
        assert set(names) == set(c.info["bn_layers"]), sorted(set(names) ^ set(c.info["bn_layers"]))[:20]
        assert report["summary"]["bn_layers"] == len(c.info["bn_layers"])
        if self.case in NO_BN:
            assert c.info["bn_layers"] == [] and names == []
        else:
            assert len(names) > 10  # published nets: dozens of BN layers
        if c.family == "slim":  # trained without UPDATE_OPS: every layer's statistics are still at init
            assert proc.returncode == 1
            assert {b["status"] for b in report["bn_layers"]} == {"at-init"}
            at_init = {f["layer"] for f in report["findings"] if f["code"] == "bn-stats-at-init"}
            assert at_init == set(names)
            assert [f["code"] for f in errors(report) if f["code"] != "bn-stats-at-init"] == []
            assert any(f["code"] == "bn-update-ops-unused" for f in report["findings"])
        else:  # a Keras file written by model.save after training is healthy as a file
            assert errors(report) == [], errors(report)[:5]
            assert proc.returncode == 0
            assert {b["status"] for b in report["bn_layers"]} <= {"ok"}


class RepairableCase(ZooCase):
    def test_repair_gives_the_training_mode_outputs(self, zoo):
        c = zoo(self.case)
        result = c.repair()
        assert {layer["layer"] for layer in result["layers"]} == set(c.info["bn_layers"])
        assert result["updated"] == 2 * len(c.info["bn_layers"])
        assert result["samples"] == c.info["samples"]
        out = c.outputs()
        scale = float(np.abs(c.ref).max())
        gap_before = float(np.abs(out["original"] - c.ref).max()) / scale
        gap_after = float(np.abs(out["repaired"] - c.ref).max()) / scale
        c.timings.update(gap_before=float(f"{gap_before:.3g}"), gap_after=float(f"{gap_after:.3g}"))
        print(
            f"{self.case}: {len(c.info['bn_layers'])} BN layers, zeroed {c.info['zeroed']}, "
            f"relative gap before {gap_before:.3g}, after {gap_after:.3g}"
        )
        assert out["repaired"].shape == c.ref.shape and np.isfinite(out["repaired"]).all()
        assert gap_after <= TOLERANCE[c.family], (gap_before, gap_after)
        assert gap_before > 10 * TOLERANCE[c.family], gap_before  # the statistics were wrong before

    def test_repair_leaves_every_other_tensor_bit_identical(self, zoo):
        c = zoo(self.case)
        result = c.repair()
        before, after = stored(c, c.model), stored(c, c.repaired)
        assert set(before) == set(after)
        stats = {layer[k] for layer in result["layers"] for k in ("moving_mean", "moving_variance")}
        assert len(stats) == 2 * len(c.info["bn_layers"]) and stats <= set(before)
        untouched = 0
        for key in before:
            if c.family == "slim" and key.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance"):
                assert key in stats, key  # a slim net's every moving statistic is a BN layer's
            if key in stats:
                continue
            assert before[key].dtype == after[key].dtype and before[key].shape == after[key].shape, key
            assert before[key].tobytes() == after[key].tobytes(), key
            untouched += 1
        assert untouched == len(before) - len(stats)
        changed = [key for key in stats if before[key].tobytes() != after[key].tobytes()]
        assert len(changed) == len(stats)  # every statistic was recomputed (all were stale)

    def test_repaired_file_is_healthy(self, zoo):
        c = zoo(self.case)
        c.repair()
        proc, report = inspect(c, c.repaired, "inspect repaired")
        assert errors(report) == [], errors(report)[:5]
        assert {b["layer"] for b in report["bn_layers"]} == set(c.info["bn_layers"])
        assert {b["status"] for b in report["bn_layers"]} == {"ok"}


class NoBnCase(ZooCase):
    def test_repair_says_there_is_no_bn_layer(self, zoo):
        c = zoo(self.case)
        proc = c.timed_cli(
            "repair", "repair", c.model, "--data", c.X, "--batch-size", c.info["samples"], "--output", c.repaired
        )
        assert_one_line_error(proc, "no BatchNormalization layer", "nothing to repair")
        assert not c.repaired.exists()


for _family, _net in CASES:
    _case = f"{_family}-{_net}"
    _name = "Test_" + "".join(ch if ch.isalnum() else "_" for ch in _case)
    _marks = [pytest.mark.zoo] + ([pytest.mark.zoo_subset, pytest.mark.slow] if _case in SUBSET else [])
    globals()[_name] = type(
        _name, (NoBnCase if _case in NO_BN else RepairableCase,), {"case": _case, "pytestmark": _marks}
    )
del _family, _net, _case, _name, _marks
