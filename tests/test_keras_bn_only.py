"""Keras repair puts only the BN layers in training mode: dropout and noise stay in inference mode, so the new
statistics are each BN input's population statistics as the network computes it at inference. Repair checks the
final output against the BN-training reference before it writes, and refuses a repair that does not bring it
closer. The BN variants (synchronized, renorm, center/scale off, axis=1, mixed_float16, virtual_batch_size, NCHW)
are in ``test_keras_bn_variants.py``, built and checked the same way by ``build_repair_check``.

The models are built by ``keras_bn_builders.py build`` (one subprocess per Keras, in parallel); the expected
statistics and outputs come from ``keras_bn_builders.py check``, computed with Keras alone: a sub-model up to each
BN layer's input in inference mode, and the original model with every dropout rate and noise stddev set to 0
called with training=True on all samples in one batch.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_command, h5_datasets, run_cli, run_in_parallel

BUILDERS = Path(__file__).with_name("keras_bn_builders.py")
KINDS = {"keras3": "dropout,nested,refuse", "tfkeras": "dropout"}
EXT = {"keras3": ".keras", "tfkeras": ".h5"}
N_ALL = 256  # samples of every dense and axis1 model: --batch-size N_ALL puts all in one batch

# (which, kind, source, extra options): every repair the tests look at, run once per module.
REPAIRS = {
    "keras3-dropout": ("keras3", "dropout", "model.keras", ()),
    "tfkeras-dropout": ("tfkeras", "dropout", "model.h5", ()),
    "tfkeras-dropout-savedmodel": ("tfkeras", "dropout", "savedmodel", ()),
    "keras3-dropout-sequential": ("keras3", "dropout", "model.keras", ("--method", "sequential", "--batch-size", 64)),
    "keras3-nested": ("keras3", "nested", "model.keras", ()),
    "keras3-refuse": ("keras3", "refuse", "model.keras", ("--batch-size", 512)),
}


def run_two_at_a_time(commands: dict, timeout: int = 600) -> dict:
    """name -> CompletedProcess of ``argv``, at most two processes at once (two cores)."""
    done, queue, running = {}, list(commands.items()), []
    while queue or running:
        while queue and len(running) < 2:
            name, argv = queue.pop(0)
            running.append(
                (
                    name,
                    argv,
                    subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                )
            )
        name, argv, p = running.pop(0)
        out, err = p.communicate(timeout=timeout)
        done[name] = subprocess.CompletedProcess(argv, p.returncode, out, err)
    return done


def check_commands(which: str, triples: list) -> list:
    """``keras_bn_builders.py check`` for (data, original, repaired) triples of one Keras."""
    return [sys.executable, str(BUILDERS), "check", which] + [str(p) for triple in triples for p in triple]


def check_results(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


class Repaired:
    """One repair through the CLI: the process, its JSON report, source, output and the independent check."""

    def __init__(self, which, source, output, proc):
        self.which, self.source, self.output, self.proc = which, source, output, proc
        self.report = json.loads(proc.stdout) if proc.returncode in (0, 1) else None
        self.check = None


def build_repair_check(root: Path, kinds: dict, repairs: dict) -> dict:
    """name -> Repaired for every entry of ``repairs`` (``kinds``: which Keras builds which models, in ``root``)."""
    run_in_parallel({w: [sys.executable, BUILDERS, "build", w, kinds[w], root / w] for w in kinds})
    out_dir = root / "out"
    out_dir.mkdir()
    commands, where = {}, {}
    for name, (which, kind, source, extra) in repairs.items():
        src = root / which / kind / source
        out = out_dir / (name if src.is_dir() else name + EXT[which])
        options = ("--batch-size", N_ALL) + tuple(extra) if "--batch-size" not in extra else tuple(extra)
        commands[name] = cli_command() + [
            "repair",
            src,
            "--data",
            root / which / kind / "X.npy",
            "--output",
            out,
            *options,
            "--format",
            "json",
        ]
        where[name] = (which, src, out)
    done = {name: Repaired(*where[name][:3], proc) for name, proc in run_two_at_a_time(commands).items()}
    names = {w: [n for n, r in done.items() if r.which == w and r.proc.returncode == 0] for w in kinds}
    procs = run_two_at_a_time(
        {
            w: check_commands(w, [(done[n].source.parent / "X.npy", done[n].source, done[n].output) for n in names[w]])
            for w in kinds
            if names[w]
        }
    )
    for w in procs:  # one check process per Keras
        for name, result in zip(names[w], check_results(procs[w])):
            done[name].check = result
    return done


@pytest.fixture(scope="module")
def repaired(tmp_path_factory):
    """name -> Repaired for every entry of REPAIRS (built, repaired and checked once)."""
    return build_repair_check(tmp_path_factory.mktemp("bn_only"), KINDS, REPAIRS)


def stored(path: Path) -> dict:
    """Every tensor of a Keras file (h5py) or SavedModel directory (TensorFlow's reader)."""
    if not path.is_dir():
        return h5_datasets(path)
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    return {k: np.asarray(reader.get_tensor(k)) for k in reader.get_variable_to_shape_map()}


def assert_repaired(r: Repaired, bn: set, rtol: float = 1e-3, out_rtol: float = 1e-3) -> None:
    """Exit 0; the new statistics are the BN inputs' population statistics at inference; the repaired model's
    inference outputs are the reference's; every tensor but the statistics is bit for bit the input's."""
    assert r.proc.returncode == 0, r.proc.stderr
    report, check = r.report, r.check
    assert report["output"] == str(r.output) and not report["refused"] and not report["findings"]
    layers = {layer["layer"]: layer for layer in report["layers"]}
    assert set(layers) == bn == set(check["stats"])
    for name in bn:
        want, have = check["stats"][name], check["stored"][name]
        np.testing.assert_allclose(have["var"], want["var"], rtol=rtol, err_msg=name)
        np.testing.assert_allclose(
            have["mean"], want["mean"], rtol=rtol, atol=rtol * np.abs(want["mean"]).max(), err_msg=name
        )
    assert check["gap_before"] > 0.05, check["gap_before"]  # the stored statistics were stale
    assert check["gap_after"] < out_rtol, check["gap_after"]
    out = report["output_check"]
    assert out["outputs"] == ["model output"] and out["improved"]
    assert out["gap_after"] < out["gap_before"]
    if report["batch_size"] >= report["samples"]:  # one batch: our reference is the independent one
        assert out["samples"] == report["samples"]
        assert out["gap_before"] == pytest.approx(check["gap_before"], rel=1e-2)
    a, b = stored(r.source), stored(r.output)
    assert set(a) == set(b)
    changed = {layer[k] for layer in layers.values() for k in ("moving_mean", "moving_variance")}
    assert report["updated"] == len(changed) == 2 * len(bn) and report["untouched"] == len(a) - len(changed)
    for key in a:
        if key not in changed:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key


# --------------------------------------------------------------------------- dropout and noise held in inference


@pytest.mark.parametrize("name", ["keras3-dropout", "tfkeras-dropout", "tfkeras-dropout-savedmodel"])
def test_dropout_and_noise_stay_in_inference_mode(repaired, name):
    r = repaired[name]
    assert_repaired(r, {"bn1", "bn2"})
    assert r.report["held_in_inference"] == ["drop1", "noise"]
    assert "reference runs the BN layers in training mode" in r.report["gap_note"]
    for layer in r.report["layers"]:  # per layer, on the first (only) batch: closed
        assert layer["gap_before"] > 0.1 and layer["gap_after"] < 1e-4 * layer["gap_before"], layer


def test_sequential_method_measures_in_inference_mode(repaired):
    r = repaired["keras3-dropout-sequential"]  # batches of 64: still each input's population at inference
    assert r.report["method"] == "sequential" and r.report["batch_size"] == 64
    assert_repaired(r, {"bn1", "bn2"})
    assert r.report["held_in_inference"] == ["drop1", "noise"]
    assert r.report["output_check"]["samples"] == 256  # four checked batches of 64


def test_held_layers_inside_a_nested_model_are_named_by_path(repaired):
    r = repaired["keras3-nested"]
    assert r.proc.returncode == 0, r.proc.stderr
    assert r.report["held_in_inference"] == ["backbone/drop1"]
    assert [layer["layer"] for layer in r.report["layers"]] == ["backbone/bn1"]
    assert r.check["gap_before"] > 0.05 and r.check["gap_after"] < 1e-3, r.check  # the independent reference
    assert r.report["output_check"]["gap_before"] == pytest.approx(r.check["gap_before"], rel=1e-2)


# --------------------------------------------------------------------------- the output check refuses


def test_a_repair_that_does_not_shrink_the_output_gap_is_refused(repaired):
    r = repaired["keras3-refuse"]
    assert r.proc.returncode == 1, r.proc.stderr
    report = r.report
    assert report["refused"] and report["output"] is None and report["backup"] is None
    assert not r.output.exists() and not list(r.output.parent.glob("keras3-refuse*"))
    check = report["output_check"]
    assert check["samples"] == 512 and not check["improved"]
    assert check["gap_before"] < 1e-5 < 1e-2 < check["gap_after"], check  # stored: exact for those 512
    (finding,) = report["findings"]
    assert finding["code"] == "repair-not-improved" and finding["severity"] == "error"
    assert f"{check['gap_before']:.3g}" in finding["message"] and f"{check['gap_after']:.3g}" in finding["message"]
    assert "nothing written" in finding["message"]


def test_a_refused_in_place_repair_leaves_the_file_and_makes_no_backup(repaired, tmp_path):
    target = tmp_path / "model.keras"
    shutil.copyfile(repaired["keras3-refuse"].source, target)
    before = target.read_bytes()
    proc = run_cli(
        "repair", target, "--data", repaired["keras3-refuse"].source.parent / "X.npy", "--batch-size", 512, "--in-place"
    )
    assert proc.returncode == 1, proc.stderr
    assert "repair-not-improved" in proc.stdout and "NOT better" in proc.stdout
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


# --------------------------------------------------------------------------- EfficientNetB0


@pytest.fixture(scope="module")
def effnet(tmp_path_factory):
    """keras.applications.EfficientNetB0 (Keras 3, 32x32, 10 classes) after two training steps on 64 samples,
    repaired with all 64 in one batch (each step takes about a minute; the timeouts only guard against a hang)."""
    root = tmp_path_factory.mktemp("effnet")
    build = subprocess.run(
        [sys.executable, str(BUILDERS), "build", "keras3", "effnet", str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    src, out, data = root / "effnet" / "model.keras", root / "repaired.keras", root / "effnet" / "X.npy"
    proc = subprocess.run(
        cli_command()
        + ["repair", str(src), "--data", str(data), "--batch-size", "64", "--output", str(out), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    r = Repaired("keras3", src, out, proc)
    if proc.returncode == 0:
        check = subprocess.run(
            check_commands("keras3", [(data, src, out)]), capture_output=True, text=True, timeout=600
        )
        (r.check,) = check_results(check)
    return r


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_efficientnet_b0_gets_closer_to_the_reference(effnet):
    r = effnet
    assert r.proc.returncode == 0, r.proc.stderr
    report, check = r.report, r.check
    out = report["output_check"]
    assert out["improved"] and out["gap_after"] < out["gap_before"]
    assert check["gap_before"] > 0.1 and check["gap_after"] < 2e-3, check  # independent reference, softmax outputs
    assert len(report["layers"]) == len(check["stats"]) == 49
    assert "top_dropout" in report["held_in_inference"] and "block2b_drop" in report["held_in_inference"]
    for name, want in check["stats"].items():  # each BN input's population statistics at inference
        have = check["stored"][name]
        np.testing.assert_allclose(have["var"], want["var"], rtol=1e-2, atol=1e-4 * np.max(want["var"]), err_msg=name)
