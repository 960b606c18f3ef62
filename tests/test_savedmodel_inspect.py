"""inspect of SavedModel directories: the variables/ bundle cross-referenced with saved_model.pb.

SavedModels are built by ``savedmodel_inspect_builders.py`` in two subprocesses (tf-keras and
Keras 3 cannot share one): a tf-keras Functional model (``model.save``, with keras_metadata.pb),
the same never trained, a subclassed tf-keras model and two ``tf.Module`` (``tf.saved_model.save``), one with
custom variable names,
a Keras 3 ``model.export``, and a damaged copy of the Functional one.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, run_cli_without_tf

HERE = Path(__file__).parent
KINDS = ("functional", "untrained", "nested", "subclassed", "module", "custom", "stripped", "export")
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

#: Each SavedModel's BN layers (real layer names) and their status.
EXPECTED_BN = {
    "functional": {"bn_a": "ok", "bn_b": "ok", "bn_frozen": "at-init"},
    "untrained": {"bn_a": "at-init", "bn_b": "at-init", "bn_frozen": "at-init"},
    "nested": {"backbone/bn_in": "ok", "frozen/bn_f": "at-init", "bn_top": "ok"},  # paths, as for Keras files
    "subclassed": {"subclassed/norm_in": "ok", "subclassed/norm_out": "ok"},
    "module": {"block": "ok"},
    "custom": {"stem": "at-init"},  # named by no rule: found by its FusedBatchNormV3 op
    "stripped": {"bn_a": "ok", "bn_b": "missing", "bn_frozen": "at-init"},
    "export": {"bn_x": "ok", "bn_y": "ok", "bn_frozen": "at-init"},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("savedmodel-inspect")
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "savedmodel_inspect_builders.py"), which, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        for which in ("tfkeras", "keras3")
    ]  # one process per Keras, one per core
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return root


@pytest.fixture(scope="module")
def reports(built):
    """``{kind: (exit code, JSON report)}`` of ``inspect DIR --format json``."""
    out = {}
    for kind in KINDS:
        proc = run_cli("inspect", built / kind, "--format", "json")
        out[kind] = (proc.returncode, json.loads(proc.stdout))
    return out


def tf_variables(folder: Path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    return {
        name: (dtypes[name].name, list(shape), reader.get_tensor(name))
        for name, shape in reader.get_variable_to_shape_map().items()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_bundle_tensor_is_listed_as_tensorflow_reads_it(built, reports, kind):
    _, report = reports[kind]
    truth = tf_variables(built / kind)
    assert report["checkpoint"] == str(built / kind / "variables" / "variables")
    assert report["graph"].startswith(str(built / kind / "saved_model.pb"))
    assert report["format"] == "tf-saved-model"
    assert {t["name"] for t in report["tensors"]} == set(truth)
    for t in report["tensors"]:
        dtype, shape, value = truth[t["name"]]
        assert (t["dtype"], t["shape"]) == (dtype, shape), t["name"]
        if dtype == "float32":
            assert t["mean"] == pytest.approx(float(np.asarray(value, np.float64).mean()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_bn_layers_have_their_real_names_and_statuses(built, reports, kind):
    code, report = reports[kind]
    rows = {b["layer"]: b for b in report["bn_layers"]}
    assert {name: b["status"] for name, b in rows.items()} == EXPECTED_BN[kind]
    truth = tf_variables(built / kind)
    paths = {t["name"]: t["object_path"] for t in report["tensors"]}
    for name, b in rows.items():
        for stat in ("moving_mean", "moving_variance"):
            key = b[stat]
            assert key.endswith(SUFFIX)
            if b["status"] == "missing":
                assert key not in truth
                continue
            # The key holds this layer's statistic: the SavedModel's variable name says so.
            if kind != "custom":
                assert paths[key].endswith(f"{name.rsplit('/', 1)[-1]}/{stat})") or paths[key].endswith(stat), paths[
                    key
                ]
            value = truth[key][2]
            assert value.shape == (b["channels"],)
            at_init = np.all(value == (0 if stat == "moving_mean" else 1))
            assert at_init == (b["status"] == "at-init"), (name, stat)
    assert code == (1 if kind in ("untrained", "stripped", "custom") else 0)


def test_findings_of_stale_and_damaged_savedmodels(reports):
    _, untrained = reports["untrained"]
    # Never trained: every layer at init is an error, the frozen one too (nothing says the model trained).
    assert sorted((f["code"], f["layer"]) for f in untrained["findings"]) == [
        ("bn-stats-at-init", "bn_a"),
        ("bn-stats-at-init", "bn_b"),
        ("bn-stats-at-init", "bn_frozen"),
    ]
    assert all("ckptdoctor repair" in f["message"] for f in untrained["findings"])
    _, stripped = reports["stripped"]
    got = sorted((f["code"], f["severity"], f["layer"], f["tensor"]) for f in stripped["findings"])
    assert got == sorted(
        [
            ("bn-stats-missing", "error", "bn_b", "layer_with_weights-3/moving_mean" + SUFFIX),
            ("bn-stats-missing", "error", "bn_b", "layer_with_weights-3/moving_variance" + SUFFIX),
            ("bn-frozen-untrained", "warning", "bn_frozen", "layer_with_weights-4/moving_mean" + SUFFIX),
            ("missing-in-checkpoint", "error", None, "layer_with_weights-5/kernel" + SUFFIX),  # trainable
            ("missing-in-checkpoint", "info", None, "optimizer/_variables/1" + SUFFIX),  # an Adam slot
            ("unexpected-in-checkpoint", "warning", None, "extra" + SUFFIX),
        ]
    )
    kernel = next(f for f in stripped["findings"] if f["tensor"] == "layer_with_weights-5/kernel" + SUFFIX)
    assert "head/kernel" in kernel["message"]  # the SavedModel's variable name
    in_graph = {t["name"]: t["in_graph"] for t in stripped["tensors"]}
    assert in_graph["extra" + SUFFIX] is False and in_graph["layer_with_weights-1/gamma" + SUFFIX] is True
    for kind in ("subclassed", "module"):
        assert reports[kind][1]["findings"] == [], kind
    # A BN layer frozen from the start of a model that trained: a warning, not an error. tf-keras says
    # trainable=False in keras_metadata.pb, Keras 3's export through its variables' trainable flags.
    # A layer inside a frozen nested model is frozen too.
    for kind, layer in (("functional", "bn_frozen"), ("export", "bn_frozen"), ("nested", "frozen/bn_f")):
        assert [(f["code"], f["severity"], f["layer"]) for f in reports[kind][1]["findings"]] == [
            ("bn-frozen-untrained", "warning", layer)
        ], kind


def test_bn_layer_found_by_its_fused_batch_norm_op(reports):
    code, custom = reports["custom"]
    (row,) = custom["bn_layers"]
    # stem/running_avg, stem/running_var, stem/scale_w, stem/shift_b feed FusedBatchNormV3 in that order.
    assert (row["moving_mean"], row["moving_variance"], row["gamma"], row["beta"]) == tuple(
        f"{n}{SUFFIX}" for n in ("running_avg", "running_var", "scale_w", "shift_b")
    )
    assert [(f["code"], f["layer"]) for f in custom["findings"]] == [("bn-stats-at-init", "stem")]
    assert any("FusedBatchNorm" in n for n in custom["notes"])


def test_roles_and_readable_names(built, reports):
    _, export = reports["export"]
    tensors = {t["name"]: t for t in export["tensors"]}
    # Keras 3 keys say nothing (variables/4); the role and the object path column do.
    bn_x = next(b for b in export["bn_layers"] if b["layer"] == "bn_x")
    assert tensors[bn_x["moving_mean"]]["role"] == "bn_moving_mean"
    assert tensors[bn_x["moving_mean"]]["object_path"].endswith("(bn_x/moving_mean)")
    assert {t["role"] for t in export["tensors"]} == {
        "other",
        "weight",
        "bn_gamma",
        "bn_beta",
        "bn_moving_mean",
        "bn_moving_variance",
    }
    _, functional = reports["functional"]
    roles = {t["name"]: t["role"] for t in functional["tensors"]}
    assert roles["keras_api/metrics/0/count" + SUFFIX] == "other"  # not trainable, not a weight
    assert roles["layer_with_weights-0/kernel" + SUFFIX] == "weight"
    _, subclassed = reports["subclassed"]
    # Optimizer variables (Adam/m/subclassed/norm_in/gamma) are not BN layers.
    roles = {t["role"] for t in subclassed["tensors"] if t["name"].startswith("optimizer/")}
    assert roles == {"optimizer_slot"}
    # --match sees the variable names behind Keras 3's numbered keys.
    matched = json.loads(run_cli("inspect", built / "export", "--match", "bn_y/moving", "--format", "json").stdout)
    assert {t["name"] for t in matched["tensors"]} == {
        k for b in export["bn_layers"] if b["layer"] == "bn_y" for k in (b["moving_mean"], b["moving_variance"])
    } | {t["name"] for t in export["tensors"] if t["object_path"] and "(bn_y/moving" in t["object_path"]}
    assert len(matched["tensors"]) == 4  # Keras 3 tracks each variable twice (variables/, _all_variables/)
    table = run_cli("inspect", built / "export", "--stats=False").stdout
    bn_section = table.split("BN LAYERS (3)")[1]
    assert "bn_x" in bn_section and "bn_y" in bn_section
    assert "(bn_y/moving_variance)" in table


def test_hdf5_report_holds_the_same_findings_as_json(built, reports, tmp_path):
    out = tmp_path / "r.h5"
    proc = run_cli("inspect", built / "stripped", "--format", "json", "--report", out)
    assert proc.returncode == 1 and out.is_file()
    assert json.loads(proc.stdout)["findings"] == reports["stripped"][1]["findings"]
    stored = json.loads(run_cli("report", out, "--format", "json").stdout)
    assert stored["findings"] == reports["stripped"][1]["findings"]
    assert stored["bn_layers"] == reports["stripped"][1]["bn_layers"]
    assert stored["graph"] == reports["stripped"][1]["graph"]


def test_without_tensorflow_the_same_bn_layers_and_findings(built, reports):
    for kind in ("stripped", "export", "custom"):
        proc = run_cli_without_tf("inspect", built / kind, "--format", "json")
        assert "TF_LOADED=False" in proc.stderr
        doc = json.loads(proc.stdout)
        assert proc.returncode == reports[kind][0]
        assert doc["bn_layers"] == reports[kind][1]["bn_layers"]
        assert doc["findings"] == reports[kind][1]["findings"]


def test_bad_saved_model_pb_is_a_one_line_error(built, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(built / "module", folder)
    original = (folder / "saved_model.pb").read_bytes()
    for damaged in (original[: len(original) // 3], b"\xff\xfe not a protobuf at all \x07" * 4, b""):
        (folder / "saved_model.pb").write_bytes(damaged)
        assert_one_line_error(run_cli("inspect", folder), "saved_model.pb", "--graph False")
    # --graph False lists the bundle alone, as a TF2 checkpoint.
    proc = run_cli("inspect", folder, "--graph", "False", "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["format"] == "tf-v2-bundle"


def test_savedmodel_without_variables_is_a_one_line_error(built, tmp_path):
    folder = tmp_path / "novars"
    shutil.copytree(built / "module", folder)
    shutil.rmtree(folder / "variables")
    assert_one_line_error(run_cli("inspect", folder), "SavedModel without variables", "variables/variables.index")


def test_bad_keras_metadata_falls_back_on_variable_names(built, reports, tmp_path):
    folder = tmp_path / "badmeta"
    shutil.copytree(built / "functional", folder)
    (folder / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff garbage")
    proc = run_cli("inspect", folder, "--format", "json")
    doc = json.loads(proc.stdout)
    assert any("keras_metadata.pb" in n and "variable names" in n for n in doc["notes"])
    assert doc["bn_layers"] == reports["functional"][1]["bn_layers"]
    assert doc["findings"] == reports["functional"][1]["findings"] and proc.returncode == 0


@pytest.mark.parametrize(
    "kind, name", [("custom", "saved_model.pb"), ("functional", "saved_model.pb"), ("functional", "keras_metadata.pb")]
)
def test_mutated_savedmodel_files_give_only_our_errors(built, tmp_path, kind, name):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.inspect import inspect

    folder = tmp_path / kind
    shutil.copytree(built / kind, folder)
    original = (built / kind / name).read_bytes()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["flip", "truncate", "varint"]), st.integers(0, len(original) - 1), st.integers(0, 7)
            ),
            min_size=1,
            max_size=3,
        )
    )
    def check(mutations):
        data = bytearray(original)
        for what, at, bit in mutations:
            at %= max(len(data), 1)
            if what == "flip" and data:
                data[at] ^= 1 << bit
            elif what == "truncate":
                del data[at:]
            elif what == "varint":
                data[at : at + 10] = b"\xff" * 9 + b"\x01"
        (folder / name).write_bytes(bytes(data))
        try:
            report = inspect(str(folder), stats=False)
        except CkptDoctorError:
            return
        assert report.total_tensors == len(report.tensors)

    check()


def test_tf1_savedmodel_is_inspected_as_a_plain_checkpoint(built):
    proc = run_cli("inspect", built / "tf1", "--format", "json")
    doc = json.loads(proc.stdout)
    assert any("no object graph" in n for n in doc["notes"]) and doc["graph"] is None
    assert {t["name"] for t in doc["tensors"]} == set(tf_variables(built / "tf1"))
    assert [(b["layer"], b["status"]) for b in doc["bn_layers"]] == [("tf1_bn", "at-init")]
    assert [f["code"] for f in doc["findings"]] == ["bn-stats-at-init"] and proc.returncode == 1
