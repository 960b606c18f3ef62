"""inspect on real checkpoints built by real graphs (control flow v1 and v2), through the library and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, tf_reader_values

import ckptdoctor

CF = ["v1", "v2"]


def codes(report, code):
    return [f for f in report.findings if f.code == code]


@pytest.mark.parametrize("cf", CF)
def test_seed_as_written_is_healthy_with_three_bn_layers(build, cf):
    b = build("seed", cf)
    r = ckptdoctor.inspect(b.prefix)
    assert r.exit_code == 0, [f for f in r.findings if f.severity == "error"]
    assert len(r.bn_layers) == 3 and {layer.status for layer in r.bn_layers} == {"ok"}
    assert r.graph == b.prefix + ".meta"
    # The seed's Saver skips the dense layers' Adam slots: info only.
    infos = codes(r, "missing-in-checkpoint")
    assert infos and {f.severity for f in infos} == {"info"}


@pytest.mark.parametrize(
    "cf", [pytest.param("v1", marks=pytest.mark.slow), "v2"]
)  # breadth: make test-slow runs it, for make test's time
def test_saver_over_trainables_gives_six_bn_stats_missing(build, cf):
    b = build("seed-trainables", cf)
    r = ckptdoctor.inspect(b.prefix)
    missing = codes(r, "bn-stats-missing")
    assert len(missing) == 6
    assert {f.tensor.rsplit("/", 1)[1] for f in missing} == {"moving_mean", "moving_variance"}
    assert {layer.status for layer in r.bn_layers} == {"missing"}
    assert r.exit_code == 1
    proc = run_cli("inspect", b.prefix, "--format", "json")
    assert proc.returncode == 1
    assert sum(f["code"] == "bn-stats-missing" for f in json.loads(proc.stdout)["findings"]) == 6


@pytest.mark.parametrize("cf", CF)
def test_no_update_ops_gives_at_init_and_unused_update_ops(build, cf):
    b = build("seed-no-update", cf)
    r = ckptdoctor.inspect(b.prefix)
    assert len(codes(r, "bn-stats-at-init")) == 3
    assert len(codes(r, "bn-update-ops-unused")) == 1
    assert codes(r, "bn-update-ops-unused")[0].severity == "warning"
    assert {layer.status for layer in r.bn_layers} == {"at-init"}
    assert r.exit_code == 1


@pytest.mark.parametrize("kind,layers", [("convnet", 3), ("nobn", 0), ("custom-scope", 3), ("keras-v1-bn", 3)])
def test_healthy_networks_exit_zero_with_their_bn_layers(build, kind, layers):
    b = build(kind, "v1")
    r = ckptdoctor.inspect(b.prefix)
    assert r.exit_code == 0, [f for f in r.findings if f.severity == "error"]
    assert len(r.bn_layers) == layers
    assert not codes(r, "bn-update-ops-unused")


def test_custom_scope_bn_found_by_structure_not_names(build):
    b = build("custom-scope", "v2")
    r = ckptdoctor.inspect(b.prefix)
    roles = {t.name: t.role for t in r.tensors}
    means = sorted(n for n, role in roles.items() if role == "bn_moving_mean")
    assert len(means) == 3 and all("batch_normalization" not in n for n in means)
    assert r.exit_code == 0


@pytest.mark.parametrize("cf", CF)
def test_every_tensor_listed_with_numpy_statistics(build, cf):
    b = build("seed-full", cf)
    r = ckptdoctor.inspect(b.prefix)
    truth = tf_reader_values(b.prefix)
    assert {t.name for t in r.tensors} == set(truth)
    for t in r.tensors:
        v = np.asarray(truth[t.name])
        assert t.dtype == v.dtype.name and t.shape == v.shape and t.size == v.size
        if v.dtype.kind == "f":
            ref = v.astype(np.float64)
            assert t.min == ref.min() and t.max == ref.max()
            assert t.mean == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
            assert t.std == pytest.approx(ref.std(), rel=1e-9, abs=1e-12)
            assert (t.nan, t.inf) == (0, 0)
        assert t.in_graph is True


def test_without_graph_bn_found_by_name(build, tmp_path):
    b = build("seed-trainables", "v1").copy_to(tmp_path / "nograph")
    (tmp_path / "nograph" / "model.ckpt.meta").unlink()
    r = ckptdoctor.inspect(b.prefix)
    assert r.graph is None and any("no graph" in n for n in r.notes)
    assert len(r.bn_layers) == 3 and len(codes(r, "bn-stats-missing")) == 6
    assert {t.in_graph for t in r.tensors} == {None}


def test_match_limits_listing_not_diagnosis(build):
    b = build("seed-trainables", "v1")
    r = ckptdoctor.inspect(b.prefix, match=r"^dense/")
    assert r.tensors and all(t.name.startswith("dense/") for t in r.tensors)
    assert len(codes(r, "bn-stats-missing")) == 6 and r.total_tensors > len(r.tensors)


def test_stats_false_reads_no_values_but_still_diagnoses(build):
    b = build("seed-no-update", "v1")
    r = ckptdoctor.inspect(b.prefix, stats=False)
    assert all(t.mean is None for t in r.tensors)
    assert len(codes(r, "bn-stats-at-init")) == 3


def test_hdf5_report_holds_the_json_findings_and_report_reprints_it(build, tmp_path):
    import h5py

    b = build("seed-no-update", "v2")
    out = tmp_path / "r.h5"
    proc = run_cli("inspect", b.prefix, "--format", "json", "--report", out)
    doc = json.loads(proc.stdout)
    with h5py.File(out, "r") as f:
        for key in ("ckptdoctor_version", "checkpoint", "format", "graph", "created"):
            assert key in f.attrs
        stored = [
            {k: f["findings"][k][i].decode() for k in ("code", "severity", "tensor", "message")}
            for i in range(f["findings"].shape[0])
        ]
        assert f["tensors"].shape[0] == len(doc["tensors"])
        assert set(f["tensors"]["in_graph"]) == {1}
        assert json.loads(f["tensors"]["shape"][0].decode()) == doc["tensors"][0]["shape"]
        assert f["bn_layers"].shape[0] == 3
    assert [(d["code"], d["severity"], d["tensor"] or "", d["message"]) for d in doc["findings"]] == [
        (s["code"], s["severity"], s["tensor"], s["message"]) for s in stored
    ]
    again = run_cli("report", out, "--format", "json")
    assert json.loads(again.stdout) == doc and again.returncode == proc.returncode
    table = run_cli("inspect", b.prefix)
    assert run_cli("report", out).stdout == table.stdout
    # Refuses to overwrite without --force.
    assert_one_line_error(run_cli("inspect", b.prefix, "--report", out), "--force")
    assert run_cli("inspect", b.prefix, "--report", out, "--force").returncode == 1


def test_empty_tables_are_present_with_zero_rows(build, tmp_path):
    import h5py

    b = build("nobn", "v1")
    out = tmp_path / "nobn.h5"
    assert run_cli("inspect", b.prefix, "--report", out).returncode == 0
    with h5py.File(out, "r") as f:
        assert f["bn_layers"].shape == (0,) and "findings" in f


def test_table_output_has_header_tables_and_findings(build):
    b = build("seed-trainables", "v1")
    proc = run_cli("inspect", b.prefix)
    assert proc.returncode == 1
    for text in (
        "checkpoint:",
        "graph:",
        "TENSORS",
        "BN LAYERS (3)",
        "FINDINGS",
        "bn-stats-missing",
        "batch_normalization/moving_mean",
    ):
        assert text in proc.stdout


def test_bad_inputs_exit_2_with_one_line(tmp_path, build):
    assert_one_line_error(run_cli("inspect", tmp_path / "nope.ckpt"), "no checkpoint at")
    assert_one_line_error(run_cli("report", tmp_path / "nope.h5"), "no report")
    (tmp_path / "not.h5").write_bytes(b"\x89PNG not hdf5")
    assert_one_line_error(run_cli("report", tmp_path / "not.h5"), "not an HDF5 file")
    b = build("seed", "v1")
    garbage = tmp_path / "garbage.meta"
    garbage.write_bytes(b"\x00\x01garbage" * 10)
    assert_one_line_error(run_cli("inspect", b.prefix, "--graph", garbage), "garbage.meta")
    assert_one_line_error(run_cli("inspect", b.prefix, "--match", "("), "regular expression")


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("inspect", tmp_path / "nope.ckpt", "--debug", check_codes=(1, 2))
    assert "Traceback" in proc.stderr


def test_diff_identical_and_different(build):
    a = build("seed", "v1")
    b = build("nobn", "v1")  # same dense shapes, other values, no BN tensors
    same = run_cli("diff", a.prefix, a.prefix, "--format", "json")
    assert same.returncode == 0 and json.loads(same.stdout)["identical"] is True
    d = run_cli("diff", a.prefix, b.prefix, "--format", "json")
    doc = json.loads(d.stdout)
    assert d.returncode == 1
    changed = {c["name"]: c for c in doc["changed"]}
    assert "batch_normalization/moving_mean" in doc["only_in_a"]
    ta, tb = tf_reader_values(a.prefix), tf_reader_values(b.prefix)
    name = "dense/kernel"
    expected = np.abs(ta[name].astype(np.float64) - tb[name]).max()
    assert changed[name]["max_abs_diff"] == pytest.approx(expected)
    assert set(doc["only_in_b"]) == set(tb) - set(ta)
    assert set(doc["only_in_a"]) == set(ta) - set(tb)


def test_tf2_checkpoint_shows_object_paths_in_json_table_and_hdf5(tmp_path):
    import subprocess
    import sys

    import h5py

    script = (
        "import os; os.environ['TF_USE_LEGACY_KERAS']='1'\n"
        "import tensorflow as tf, sys\n"
        "m = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(2,)), tf.keras.layers.BatchNormalization()])\n"
        "tf.train.Checkpoint(model=m).write(sys.argv[1])\n"
    )
    prefix = str(tmp_path / "tf2")
    subprocess.run([sys.executable, "-c", script, prefix], check=True, capture_output=True, timeout=300)
    proc = run_cli("inspect", prefix, "--format", "json", "--report", tmp_path / "r.h5")
    doc = json.loads(proc.stdout)
    paths = {t["name"]: t["object_path"] for t in doc["tensors"]}
    key = "model/layer_with_weights-1/moving_mean/.ATTRIBUTES/VARIABLE_VALUE"
    assert paths[key] == "model/layer_with_weights-1/moving_mean"
    assert len(doc["bn_layers"]) == 1 and doc["bn_layers"][0]["status"] == "at-init"
    assert "object path" in run_cli("inspect", prefix).stdout
    with h5py.File(tmp_path / "r.h5", "r") as f:
        stored = {r["name"].decode(): r["object_path"].decode() for r in f["tensors"][()]}
    assert stored[key] == paths[key]


def test_unknown_option_is_one_line_and_no_flag_means_false(tmp_path):
    seed = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed"
    proc = run_cli("inspect", seed, "--bogus", "1")
    assert_one_line_error(proc, "unknown option --bogus for inspect", "--match")
    proc = run_cli("repair", seed, "--data", seed / "X.npy", "--in_place_typo")
    assert_one_line_error(proc, "unknown option --in_place_typo for repair")
    # --no-stats (a common spelling) and fire's own --nostats both turn statistics off.
    for flag in ("--no-stats", "--nostats"):
        doc = json.loads(run_cli("inspect", seed, flag, "--format", "json").stdout)
        assert all(t["mean"] is None for t in doc["tensors"]), flag
    doc = json.loads(run_cli("inspect", seed, "--format", "json").stdout)
    assert any(t["mean"] is not None for t in doc["tensors"])


def _json_as_before(report) -> str:
    """The JSON document as inspect wrote it before streaming: ``asdict`` of every row, the indenting encoder."""
    import dataclasses

    from ckptdoctor.reports.table import to_json

    return to_json(
        {
            "checkpoint": report.checkpoint,
            "format": report.format,
            "graph": report.graph,
            "tensors": [dict(dataclasses.asdict(t), shape=list(t.shape)) for t in report.tensors],
            "bn_layers": [dataclasses.asdict(b) for b in report.bn_layers],
            "findings": [dataclasses.asdict(f) for f in report.findings],
            "summary": dict(report.summary),
            "notes": list(report.notes),
        }
    )


@pytest.mark.parametrize("options", [(), ("--stats=False",), ("--match", "nopath-at-all")])
def test_streamed_json_equals_the_document_written_whole(tmp_path, options):
    import subprocess
    import sys

    script = (
        "import os; os.environ['TF_USE_LEGACY_KERAS']='1'\n"
        "import numpy as np, tensorflow as tf, sys\n"
        "m = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(2,)), tf.keras.layers.BatchNormalization()])\n"
        "bad = tf.Variable(np.array([1.0, np.nan, np.inf, -np.inf], np.float32))\n"
        "tf.train.Checkpoint(model=m, poids_\u00e9t\u00e9=bad, n=tf.Variable(np.int64(7))).write(sys.argv[1])\n"
    )
    prefix = str(tmp_path / "tf2")
    subprocess.run([sys.executable, "-c", script, prefix], check=True, capture_output=True, timeout=300)
    proc = run_cli("inspect", prefix, "--format", "json", *options)
    streamed = json.loads(proc.stdout)
    stats = "--stats=False" not in options
    match = options[1] if options[:1] == ("--match",) else None
    report = ckptdoctor.inspect(prefix, stats=stats, match=match)
    assert streamed == json.loads(_json_as_before(report))
    assert proc.stdout.count("\n") > len(streamed["tensors"])  # one row a line, not one long line
    if stats and not match:
        # The NaN/Inf tensor: its counts as numpy says, and still valid JSON (the statistics as strings or null).
        row = next(t for t in streamed["tensors"] if t["name"].startswith("poids_\u00e9t\u00e9"))
        assert (row["nan"], row["inf"]) == (1, 2)
        assert "non-finite" in {f["code"] for f in streamed["findings"]}
    if match:
        assert streamed["tensors"] == [] and streamed["summary"]["tensors"] == report.total_tensors > 0


def test_statistics_with_several_jobs_are_bit_identical_to_one_job(tmp_path, monkeypatch):
    import subprocess
    import sys

    import ckptdoctor.pipelines.inspect as pipeline

    # Tensors of many sizes (one over two 16 MiB chunks), dtypes, a NaN/Inf one, and a constant one.
    script = (
        "import numpy as np, tensorflow as tf, sys\n"
        "rng = np.random.default_rng(3)\n"
        "v = {f'w{i:02d}': tf.Variable(rng.standard_normal(int(rng.integers(1, 5000))).astype(np.float32) * 10**i)\n"
        "     for i in range(-3, 30)}\n"
        "v['big'] = tf.Variable(rng.standard_normal(9_000_000).astype(np.float32) + 1e4)\n"
        "v['half'] = tf.Variable(rng.standard_normal((64, 33)).astype(np.float16))\n"
        "v['ints'] = tf.Variable(rng.integers(-9, 9, 777))\n"
        "v['bad'] = tf.Variable(np.array([1.0, np.nan, np.inf, 2.0], np.float64))\n"
        "v['same'] = tf.Variable(np.full(100, 0.1, np.float32))\n"
        "tf.train.Checkpoint(**v).write(sys.argv[1])\n"
    )
    prefix = str(tmp_path / "many")
    subprocess.run([sys.executable, "-c", script, prefix], check=True, capture_output=True, timeout=300)
    one = ckptdoctor.inspect(prefix, jobs=1)
    for jobs in (2, 3, 8):
        assert ckptdoctor.inspect(prefix, jobs=jobs).tensors == one.tensors  # floats compared exactly
    monkeypatch.setattr(pipeline, "_BATCH_TENSORS", 1)  # one tensor a task: every tensor on any thread
    assert ckptdoctor.inspect(prefix, jobs=2).tensors == one.tensors
    # And the single-job statistics are numpy's over TensorFlow's own reading of the values.
    for name, value in tf_reader_values(prefix).items():
        value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            continue
        row = next(t for t in one.tensors if t.name == name)
        x = value.astype(np.float64).reshape(-1)
        finite = x[np.isfinite(x)]
        assert (row.nan, row.inf) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
        assert row.min == finite.min() and row.max == finite.max()
        assert row.mean == pytest.approx(finite.mean(), rel=1e-12, abs=1e-12 * np.abs(finite).max())
        assert row.std == pytest.approx(finite.std(), rel=1e-9, abs=1e-12 * np.abs(finite).max())
    # The CLI: --jobs 1 and --jobs 2 write the same bytes; a bad --jobs is one line.
    outputs = {j: run_cli("inspect", prefix, "--format", "json", "--jobs", j).stdout for j in (1, 2)}
    assert outputs[1] == outputs[2] and json.loads(outputs[1])["tensors"]
    assert_one_line_error(run_cli("inspect", prefix, "--jobs", "0"), "--jobs must be 1 or more")


def test_other_threads_go_on_while_one_thread_reads_a_tensor_ahead_of_them(monkeypatch):
    """A big tensor first must not leave the other threads idle once a few tasks wait behind it: here the
    first tensor's read finishes only after the 31st tensor's has begun, on the other thread."""
    import threading

    import ckptdoctor.pipelines.inspect as pipeline
    from ckptdoctor.readers.bundle import BundleReader

    later_read = threading.Event()
    seen_in_time: list[bool] = []

    class FirstWaits(BundleReader):
        def iter_chunks(self, name, chunk_bytes=1 << 20):
            if name == names[0]:
                seen_in_time.append(later_read.wait(timeout=30))
            elif name == names[30]:
                later_read.set()
            return super().iter_chunks(name, chunk_bytes)

    monkeypatch.setattr(pipeline, "_BATCH_TENSORS", 1)
    prefix = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed-no-update" / "model.ckpt"
    with FirstWaits(prefix) as reader:
        entries = [e for e in reader.entries() if e.dtype == "float32"]
        names = [e.name for e in entries]
        assert len(names) > 30
        threaded = list(pipeline.iter_stats(reader, entries, jobs=2))
        assert seen_in_time == [True]
        assert threaded == list(pipeline.iter_stats(reader, entries, jobs=1))


@pytest.mark.parametrize("name", ["seed", "seed-trainables"])
def test_streamed_tensor_table_is_laid_out_as_tabulate_lays_it_out(name):
    from tabulate import tabulate

    from ckptdoctor.reports.table import _tensor_rows

    ckpt = Path(__file__).resolve().parents[1] / "sample_ckpts" / name
    out = run_cli("inspect", ckpt, "--match", ".", env={**__import__("os").environ, "COLUMNS": "300"}).stdout
    report = ckptdoctor.inspect(str(ckpt), match=".")
    headers = ["name", "dtype", "shape", "size", "bytes", "min", "max", "mean", "std", "nan", "inf", "in graph", "role"]
    expected = tabulate(
        list(_tensor_rows(report.tensors, False)), headers=headers, tablefmt="simple", disable_numparse=True
    )
    assert "\n" + expected + "\n\nBN LAYERS" in out
    assert len(report.tensors) == report.total_tensors and all(t.name in out for t in report.tensors)


def test_hdf5_report_written_and_read_back_in_blocks(build, tmp_path, monkeypatch):
    """Blocks smaller than the tables: every row lands once, in order, as h5py itself reads it."""
    import h5py

    from ckptdoctor.reports import hdf5

    b = build("seed-no-update", "v2")
    r = ckptdoctor.inspect(b.prefix)
    monkeypatch.setattr(hdf5, "BLOCK_ROWS", 3)
    assert len(r.tensors) > 3 * 2 and len(r.findings) > 3
    out = hdf5.write_report(r, str(tmp_path / "blocks.h5"))
    with h5py.File(out, "r") as f:
        assert f["tensors"].chunks == (3,)
        names = [n.decode() for n in f["tensors"]["name"]]
        means = list(f["tensors"]["mean"])
        messages = [m.decode() for m in f["findings"]["message"]]
    assert names == [t.name for t in r.tensors]
    assert means == [t.mean for t in r.tensors]
    assert messages == [x.message for x in r.findings]
    assert hdf5.read_report(out).to_dict() == r.to_dict()
    with h5py.File(out, "a") as f:  # a table that is not one: refused in one line, not read as empty
        del f["bn_layers"]
        f["bn_layers"] = 7
    with pytest.raises(ckptdoctor.CkptDoctorError, match="is not a table"):
        hdf5.read_report(out)


def test_role_from_name_equals_the_patterns_searched_on_every_key():
    # is_optimizer_slot and the step test search their pattern only for keys holding one of its words: the
    # roles must be those of the patterns searched on every key, over keys built to be near misses too.
    import itertools
    import random

    from ckptdoctor import constants as C
    from ckptdoctor.analysis.diagnose import (
        _BN_ROLES,
        is_optimizer_slot,
        logical_name,
        role_from_name,
        roles_from_names,
    )

    def oracle(key):
        name = logical_name(key)
        if C.OPTIMIZER_SLOT_PATTERN.search(key):
            return "optimizer_slot"
        if C.STEP_PATTERN.search(name):
            return "step"
        role = _BN_ROLES.get(name.rpartition("/")[2])
        return role or ("other" if key == C.OBJECT_GRAPH_KEY else "weight")

    words = [
        "Adam",
        "Adam_1",
        "Adam_x",
        "adam",
        "Momentum",
        "RMSProp_2",
        "Adagrad",
        "Adadelta_10",
        "Ftrl",
        "Ftr",
        "ExponentialMovingAverage",
        "beta1_power",
        "beta2_power",
        "beta3_power",
        ".OPTIMIZER_SLOT",
        "optimizer",
        "optimizers",
        "global_step",
        "step",
        "steps",
        "iter",
        "iterations",
        "save_counter",
        "kernel",
        "moving_mean",
        "gamma",
        "x\n",
        "Adam\n",
        "step\n",
        "beta1_power\n",
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        ".ATTRIBUTES",
        "VARIABLE_VALUE",
    ]
    rng = random.Random(0)
    keys = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(words[:12] + words[16:24], repeat=n)][:6000]
    keys += ["/".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(6000)]
    keys += [k + C.TF2_VALUE_SUFFIX for k in keys[::3]] + [C.OBJECT_GRAPH_KEY, "optimizer/x", "a/optimizer/x"]
    for key in keys:
        assert is_optimizer_slot(key) == bool(C.OPTIMIZER_SLOT_PATTERN.search(key)), key
        assert role_from_name(key) == oracle(key), key
    # A list at a time: the whole list, and short lists, most of which hold no special word (each test of all
    # keys at once then passes), some a word spanning two keys ("a/optimizer" + "/x").
    assert roles_from_names(keys) == [oracle(k) for k in keys]
    for i in range(0, len(keys), 7):
        part = keys[i : i + 7]
        assert roles_from_names(part) == [oracle(k) for k in part], part
    zero = ["a\0b/gamma", "c/moving_mean" + C.TF2_VALUE_SUFFIX, "\0", C.TF2_VALUE_SUFFIX + "\0x", "iter\0"]
    for part in (["a/optimizer", "/x"], ["x/.OPTIMIZER_", "SLOT/y"], ["Ad", "am"], ["step", "\n"], [], zero):
        assert roles_from_names(part) == [oracle(k) for k in part], part
    assert {oracle(k) for k in keys} >= {"optimizer_slot", "step", "bn_moving_mean", "bn_gamma", "weight", "other"}


def test_tensor_rows_written_as_the_encoder_writes_them(monkeypatch):
    # tensor_json writes a row without its dict: each must be the C encoder's text of tensor_row, byte for
    # byte, for every kind of value (NaN/Inf as strings, None, bools, non-ASCII and surrogate-escaped names,
    # float and int subclasses); and the rows batched into pieces must read as one row a line.
    import numpy as np

    import ckptdoctor.reports.table as table
    from ckptdoctor.reports.results import InspectReport, TensorReport, TensorTable, tensor_row

    class Name(str):
        pass

    def clean(x):
        return str(x) if isinstance(x, float) and not np.isfinite(x) else x

    base = dict(name="w/.ATTRIBUTES/VARIABLE_VALUE", dtype="float32", shape=(16, 16), size=256, nbytes=1024)
    variants = [
        {},
        dict(min=-1.5, max=2.0, mean=1e-300, std=0.1, nan=0, inf=3, in_graph=True, role="weight", object_path="w"),
        dict(min=float("nan"), max=float("inf"), mean=-float("inf"), std=None, nan=2, inf=0, in_graph=False),
        dict(name='poids_\u00e9t\u00e9 "quoted" \\ \n\t\x01 \udcff', object_path="a/\u00e9"),
        dict(name=Name("sub"), min=np.float64(0.25), max=0.5, nan=1, shape=()),
        dict(shape=(3,), size=True),
        # Rows without statistics take a way of their own: each kind of value in it, and shapes that only look
        # like a cached one (equal tuples of other element types, an unhashable element).
        dict(in_graph=True, role="optimizer_slot", object_path=None),
        dict(in_graph=False, role=Name("weight"), object_path=Name("w")),
        dict(shape=(True, 16)),
        dict(shape=(16.0, 16)),
        dict(shape=([16], 16)),
        dict(shape=(16, 16), nbytes=1024.0, dtype='f"32\u00e9'),
        dict(shape=(2**70,), size=2**70),
    ]
    tensors = [TensorReport(**{**base, **v}) for v in variants]
    for t in tensors:
        row = tensor_row(t)
        expected = json.dumps({k: clean(v) for k, v in row.items()}, ensure_ascii=False, default=int)
        if all(type(v) in (str, int, float, bool, tuple, type(None)) for v in vars_of(t)):
            assert table.tensor_json(t) == expected
        assert json.loads(table.tensor_json(t)) == json.loads(expected)
    monkeypatch.setattr(table, "_JSON_BATCH", 3)
    plain = [t for t in tensors if all(type(v) in (str, int, float, bool, tuple, type(None)) for v in vars_of(t))]
    for n in range(8):
        rows = (plain * 3)[:n]
        report = InspectReport("c", "f", None, tuple(rows), (), (), summary={"tensors": n})
        text = "".join(table.iter_json(report.json_items()))
        # inspect's reports hold a TensorTable, whose rows are written from its columns: the same text.
        columnar = InspectReport("c", "f", None, TensorTable.of(rows), (), (), summary={"tensors": n})
        assert "".join(table.iter_json(columnar.json_items())) == text
        lines = [table.tensor_json(t) for t in rows]
        body = "[]" if not rows else "[\n    " + ",\n    ".join(lines) + "\n  ]"
        assert f'"tensors": {body},\n' in text, n
        expected_rows = [{k: clean(v) for k, v in tensor_row(t).items()} for t in rows]
        assert json.loads(text)["tensors"] == json.loads(json.dumps(expected_rows))
    # A table of rows without statistics is written a column at a time (table._listed_rows), in blocks: the same
    # text as row by row, for every kind of row (a shape of other than ints, written row by row), and a table
    # holding a value of another type (a str subclass, a float nbytes) is written row by row.
    monkeypatch.setattr(table, "_LISTED_BLOCK", 4)
    listed = [t for t in tensors if t.min is None and t.nan is None and t.mean is None]
    exact = [
        t
        for t in listed
        if all(type(v) is c for v, c in zip(vars_of(t), (str, str, tuple, int, int)))
        and type(t.role) is str
        and type(t.object_path) in (str, type(None))
    ]
    extra = [
        TensorReport(f"n{i}", "int64", (i % 3,), i % 3, 8 * (i % 3), in_graph=(None, True, False)[i % 3])
        for i in range(9)
    ]
    assert all(shape in [t.shape for t in exact] for shape in [(True, 16), (16.0, 16), ([16], 16), (2**70,)])
    for rows, columnar in ((exact, True), (extra, True), (extra + exact, True), (listed, False), ([], True)):
        assert table._listed(TensorTable.of(rows).columns) == columnar
        assert "".join(table._json_rows(TensorTable.of(rows))) == "".join(map(table.tensor_json, rows))


def test_tensor_table_is_the_sequence_of_its_rows():
    # inspect keeps its rows as columns: the table must behave as the tuple of TensorReport it stands for
    # (indexing, slices, iteration, equality and hash both ways), and refuse columns that do not make rows.
    from ckptdoctor.reports.results import TENSOR_FIELDS, TensorReport, TensorTable

    rows = tuple(
        TensorReport(f"t{i}", "float32", (i,), i, 4 * i, mean=0.5 * i if i % 2 else None, role="weight")
        for i in range(5)
    )
    table = TensorTable.of(rows)
    assert len(table) == 5 and tuple(table) == rows and list(table) == list(rows)
    assert table == rows and rows == table and hash(table) == hash(rows) and table != rows[:4]
    assert table[0] == rows[0] and table[-1] == rows[-1] and table[1:4] == rows[1:4] and table[::-2] == rows[::-2]
    assert isinstance(table[1:4], TensorTable) and table[1:4] == TensorTable.of(rows[1:4])
    assert table.column("mean") == tuple(r.mean for r in rows) and table.column("name")[2] == "t2"
    assert TensorTable.of(()) == () and len(TensorTable.of(())) == 0 and list(TensorTable.of(())) == []
    assert table != TensorTable.of(rows[:4] + (TensorReport("t4", "float32", (4,), 4, 17),))
    with pytest.raises(IndexError):
        table[5]
    with pytest.raises(ValueError, match="columns of one length"):
        TensorTable([("a",)] * (len(TENSOR_FIELDS) - 1))
    with pytest.raises(ValueError, match="columns of one length"):
        TensorTable([("a",)] * (len(TENSOR_FIELDS) - 1) + [()])


def vars_of(t):
    from dataclasses import astuple

    return astuple(t)
