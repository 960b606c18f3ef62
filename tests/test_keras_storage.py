"""Keras 3 storage variants: unzipped model directories (and the Hugging Face Hub layout), npz weights, and sharded
``.weights.json`` weights, against the zipped ``.keras`` form of the same model.

The models are built by ``keras_storage_builders.py`` (one subprocess for the small nested model in every form, one
for the Keras Applications backbone, in parallel). What the zipped ``model.keras`` gives is the reference: the other
forms must inspect to the same tensors and BN layers, and repair to the same statistics, bit for bit; Keras must
load what repair wrote (``load_model``, ``load_weights``).
"""

import hashlib
import io
import json
import os
import pickletools
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, cli_command, h5_datasets, run_cli, run_cli_without_tf

BUILDERS = Path(__file__).with_name("keras_storage_builders.py")
BN = {"backbone/bn1", "backbone/block/bn2", "bn_top"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The folder ``build`` and ``backbone`` wrote (built side by side)."""
    folder = tmp_path_factory.mktemp("storage")
    procs = [
        subprocess.Popen(
            [sys.executable, str(BUILDERS), what, str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for what in ("build", "backbone")
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    return folder


def parallel(*commands, cwd=None) -> list[subprocess.CompletedProcess]:
    """``ckptdoctor ARGS`` for each ARGS at once (two cores: each loads TensorFlow)."""
    procs = [
        subprocess.Popen(
            cli_command() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
        )
        for args in commands
    ]
    done = []
    for args, p in zip(commands, procs):
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def one_line_error_without_tf(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """``assert_one_line_error`` for ``run_cli_without_tf``, whose TF_LOADED line must say False."""
    assert "TF_LOADED=False" in proc.stderr, proc.stderr[-2000:]
    proc = subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout, proc.stderr.replace("TF_LOADED=False", "")
    )
    assert_one_line_error(proc, *fragments)


def as_json(proc: subprocess.CompletedProcess, codes=(0,)) -> dict:
    assert proc.returncode in codes, (proc.args, proc.stderr[-2000:])
    return json.loads(proc.stdout)


def check(root: Path, original: str, *items: str, data: Path | None = None) -> list[dict]:
    """``keras_storage_builders.py check``: Keras loads each item; gaps to the reference, outputs, statistics."""
    proc = subprocess.run(
        [sys.executable, str(BUILDERS), "check", str(root), str(data or root / "X.npy"), original, *items],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def tensors(report: dict) -> dict:
    """Each tensor's row without what names the file (the object path)."""
    return {t["name"]: {k: v for k, v in t.items() if k != "object_path"} for t in report["tensors"]}


def findings(report: dict) -> list:
    return sorted((f["code"], f["severity"], f["layer"], f["tensor"]) for f in report["findings"])


def digest(path: Path) -> dict:
    """Every file below ``path`` (symlinks followed) -> sha256."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(path) if path.is_dir() else p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def weights_of(path: Path) -> dict:
    """Every stored tensor of a .keras, a model directory or a sharded manifest (read with h5py)."""
    if path.is_dir():
        return h5_datasets(path / "model.weights.h5")
    if path.name.endswith(".weights.json"):
        out = {}
        for shard in shards_of(json.loads(path.read_text())):
            out.update(h5_datasets(path.parent / shard))
        return out
    return h5_datasets(path)


def shards_of(manifest: dict) -> set:
    """The shard names of a manifest (Keras writes one name as a string, several as a list)."""
    return {f for files in manifest["weight_map"].values() for f in ([files] if isinstance(files, str) else files)}


def only_statistics_changed(src: dict, out: dict, stats: set) -> None:
    assert set(src) == set(out)
    for key in src:
        if key in stats:
            assert not np.array_equal(src[key], out[key]), key
        else:
            assert src[key].dtype == out[key].dtype and src[key].tobytes() == out[key].tobytes(), key


# --------------------------------------------------------------------------- model directories


def test_model_directory_and_hub_layout_inspect_like_the_archive(root):
    zipped, folder, hub = root / "model.keras", root / "model_dir", root / "hub" / "snapshot"
    ref, report = (as_json(p) for p in parallel(*[("inspect", p, "--format", "json") for p in (zipped, folder)]))
    assert {b["layer"] for b in ref["bn_layers"]} == BN and ref["format"] == "keras-v3"
    assert set(tensors(ref)) == set(h5_datasets(zipped)) and all(t["in_graph"] for t in ref["tensors"])
    assert report["format"] == "keras-v3-dir" and report["checkpoint"] == str(folder)
    assert tensors(report) == tensors(ref) and report["bn_layers"] == ref["bn_layers"]
    assert findings(report) == findings(ref) and report["graph"] == f"{folder} (model config)"
    assert report["notes"] == ref["notes"]  # checked against Keras alike
    # Listing and the config cross-reference need no TensorFlow: the Hub snapshot without it.
    bare = run_cli_without_tf("inspect", hub, "--format", "json")
    assert "TF_LOADED=False" in bare.stderr, bare.stderr[-2000:]
    report = json.loads(bare.stdout)
    assert report["format"] == "keras-v3-dir" and report["checkpoint"] == str(hub)
    assert tensors(report) == tensors(ref) and report["bn_layers"] == ref["bn_layers"]
    assert findings(report) == findings(ref)
    diff = run_cli_without_tf("diff", zipped, hub)
    assert diff.returncode == 0 and "identical" in diff.stdout, diff.stdout


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_model_directory_repairs_to_the_archive_repair_exactly(root, tmp_path):
    zipped, folder, hub = root / "model.keras", root / "model_dir", root / "hub" / "snapshot"
    before = {p: digest(p) for p in (zipped, folder, hub, root / "hub" / "blobs")}
    outs = [tmp_path / "zipped.keras", tmp_path / "dir", tmp_path / "hub"]
    procs = parallel(
        *[
            ("repair", src, "--data", root / "X.npy", "--batch-size", 512, "--output", out, "--format", "json")
            for src, out in zip((zipped, folder, hub), outs)
        ]
    )
    results = [as_json(p) for p in procs]
    assert {p: digest(p) for p in before} == before  # the inputs (and the Hub cache's blobs) are never written
    stats = {b[k] for b in results[0]["layers"] for k in ("moving_mean", "moving_variance")}
    assert len(stats) == 6 and {b["layer"] for b in results[0]["layers"]} == BN
    ref = weights_of(outs[0])
    only_statistics_changed(weights_of(zipped), ref, stats)
    for src, out, result in zip((folder, hub), outs[1:], results[1:]):
        assert result["output"] == str(out) and (result["updated"], result["untouched"]) == (6, len(ref) - 6)
        assert [layer["layer"] for layer in result["layers"]] == [layer["layer"] for layer in results[0]["layers"]]
        got = weights_of(out)
        assert set(got) == set(ref)
        for key in ref:  # the zipped form's repair, bit for bit
            assert got[key].dtype == ref[key].dtype and got[key].tobytes() == ref[key].tobytes(), key
        # Every other file is the input's own (a Hub snapshot's symlinks become the files they point to).
        assert {k: v for k, v in digest(out).items() if k != "model.weights.h5"} == {
            k: v for k, v in digest(src).items() if k != "model.weights.h5"
        }
        assert not any(p.is_symlink() for p in out.rglob("*"))
    # Keras loads the repaired directories, to the same model as the repaired archive; all samples were in one
    # batch, so inference gives the BN-training reference (dropout off).
    stale, *loaded = check(root, str(zipped), str(zipped), *map(str, outs))
    assert stale["gap"] > 0.1 and loaded[0]["gap"] < 2e-3, (stale["gap"], loaded[0]["gap"])
    for row in loaded[1:]:
        assert row["stats"] == loaded[0]["stats"] and row["outputs"] == loaded[0]["outputs"]
        assert set(row["stats"]) == BN


def test_model_directory_in_place_keeps_a_backup(root, tmp_path):
    folder = tmp_path / "model_dir"
    shutil.copytree(root / "model_dir", folder)
    original = digest(folder)
    for output, why in ((folder, "pass --in-place"), (folder / "fixed", "inside the input directory")):
        proc = run_cli_without_tf("repair", folder, "--data", root / "X.npy", "--output", output)
        one_line_error_without_tf(proc, why)
    result = as_json(run_cli("repair", folder, "--data", root / "X.npy", "--in-place", "--format", "json"))
    assert result["output"] == str(folder) and result["backup"].startswith(f"{folder}.backup-")
    assert digest(Path(result["backup"])) == original
    assert digest(folder)["config.json"] == original["config.json"] and digest(folder) != original
    proc = run_cli("inspect", folder, "--stats=False")
    assert proc.returncode == 0, proc.stdout


def test_hub_clone_without_git_lfs_is_a_one_line_error(root, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(root / "model_dir", clone)
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 61272\n".format("0" * 64)
    (clone / "model.weights.h5").write_text(pointer)
    one_line_error_without_tf(
        run_cli_without_tf("inspect", clone), "model.weights.h5", "Git LFS pointer", "git lfs pull"
    )


# --------------------------------------------------------------------------- npz weights


def npz_members(path: Path) -> dict:
    """The members of a .keras archive's model.weights.npz, name -> bytes."""
    with zipfile.ZipFile(path) as z, z.open("model.weights.npz") as f, zipfile.ZipFile(f) as npz:
        return {name: npz.read(name) for name in npz.namelist()}


def pickle_ops(member: bytes) -> list:
    """A pickled .npy member disassembled (pickletools: nothing runs): [(opcode name, argument)]."""
    stream = io.BytesIO(member)
    major, _ = np.lib.format.read_magic(stream)
    (np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0)(stream)
    return [(op.name, arg) for op, arg, _ in pickletools.genops(stream)]


def evil_keras(root: Path, path: Path, payload, rename: tuple[bytes, bytes] = (b"", b"")) -> Path:
    """model.keras's config with an npz whose one member pickles ``{"0": payload}`` (as Keras' members do);
    ``rename``: (old, new) module names of the same length, replaced in the pickle's bytes."""
    member, npz = io.BytesIO(), io.BytesIO()
    np.save(member, np.array({"0": payload}, dtype=object), allow_pickle=True)
    assert len(rename[0]) == len(rename[1])
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("layers/dense.npy", member.getvalue().replace(*rename) if rename[0] else member.getvalue())
    with zipfile.ZipFile(root / "model.keras") as z, zipfile.ZipFile(path, "w") as out:
        out.writestr("config.json", z.read("config.json"))
        out.writestr("model.weights.npz", npz.getvalue())
    return path


def test_npz_weights_keras_inspects_like_the_archive(root):
    zipped, npz_archive, npz_dir = root / "model.keras", root / "model_npz.keras", root / "npz_dir"
    # What Keras writes: every member a pickle (a 0-d object array) of a dict of Keras variables.
    members = npz_members(npz_archive)
    assert "layers/functional/layers/batch_normalization.npy" in members
    for name, data in members.items():
        ops = pickle_ops(data)
        assert ops[-1][0] == "STOP", name
    layer_ops = pickle_ops(members["layers/batch_normalization.npy"])
    assert ("SHORT_BINUNICODE", "keras.src.backend") in layer_ops and ("SHORT_BINUNICODE", "Variable") in layer_ops
    ref = as_json(run_cli_without_tf("inspect", zipped, "--format", "json"))
    for path, fmt in ((npz_archive, "keras-v3-npz"), (npz_dir, "keras-v3-dir-npz")):
        proc = run_cli_without_tf("inspect", path, "--format", "json")
        assert "TF_LOADED=False" in proc.stderr, proc.stderr[-2000:]
        report = as_json(proc)
        assert report["format"] == fmt and report["checkpoint"] == str(path)
        assert tensors(report) == tensors(ref) and len(tensors(ref)) == 44
        assert report["bn_layers"] == ref["bn_layers"] and {b["layer"] for b in ref["bn_layers"]} == BN
        assert findings(report) == findings(ref) and report["notes"] == ref["notes"]
        diff = run_cli_without_tf("diff", zipped, path)
        assert diff.returncode == 0 and "identical: 44 tensors" in diff.stdout, diff.stdout


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_npz_weights_keras_repairs_to_the_archive_repair_exactly(root, tmp_path):
    zipped, npz_archive = root / "model.keras", root / "model_npz.keras"
    before = {p: digest(p) for p in (zipped, npz_archive)}
    outs = [tmp_path / "zipped.keras", tmp_path / "npz.keras"]
    results = [
        as_json(p)
        for p in parallel(
            *[
                ("repair", src, "--data", root / "X.npy", "--batch-size", 512, "--output", out, "--format", "json")
                for src, out in zip((zipped, npz_archive), outs)
            ]
        )
    ]
    assert {p: digest(p) for p in before} == before
    assert results[1]["output"] == str(outs[1]) and (results[1]["updated"], results[1]["untouched"]) == (6, 38)
    assert results[1]["layers"] == results[0]["layers"] and results[1]["output_check"] == results[0]["output_check"]
    ref = weights_of(outs[0])
    stats = {b[k] for b in results[0]["layers"] for k in ("moving_mean", "moving_variance")}
    # Every other byte is the input's: the archive's members but the npz, the npz's members but those holding
    # statistics, and in those, every pickle opcode but the six whose bytes are the statistics (disassembled by
    # pickletools, independent of ckptdoctor's unpickler): the zipped form's repair, bit for bit.
    with zipfile.ZipFile(npz_archive) as a, zipfile.ZipFile(outs[1]) as b:
        assert a.namelist() == b.namelist()
        assert all(a.read(n) == b.read(n) for n in a.namelist() if n != "model.weights.npz")
    old, new = npz_members(npz_archive), npz_members(outs[1])
    assert list(old) == list(new)
    changed = {}
    for name in old:
        a_ops, b_ops = pickle_ops(old[name]), pickle_ops(new[name])
        assert len(a_ops) == len(b_ops), name
        for i, (x, y) in enumerate(zip(a_ops, b_ops)):
            if x != y:
                assert x[0] == y[0] == "SHORT_BINBYTES" and len(x[1]) == len(y[1]), (name, i, x[0])
                changed[(name, i)] = y[1]
    assert sorted(changed.values()) == sorted(ref[key].tobytes() for key in stats)
    # Keras loads it (its npz store's two defects worked around, see keras_storage_builders.py), to the zipped
    # repair's model; stock Keras refuses the output exactly as it refuses the npz file it wrote itself.
    stale, zipped_fixed, npz_fixed = check(root, str(zipped), str(npz_archive), *map(str, outs))
    assert stale["gap"] > 0.1 and zipped_fixed["gap"] < 2e-3, (stale["gap"], zipped_fixed["gap"])
    assert npz_fixed["stats"] == zipped_fixed["stats"] and npz_fixed["outputs"] == zipped_fixed["outputs"]
    assert set(npz_fixed["stats"]) == BN
    assert npz_fixed["stock_refusal"] == stale["stock_refusal"] and "allow_pickle=False" in stale["stock_refusal"]


def test_npz_model_directory_repair_is_a_one_line_error(root, tmp_path):
    proc = run_cli("repair", root / "npz_dir", "--data", root / "X.npy", "--output", tmp_path / "out")
    assert_one_line_error(proc, "model.weights.h5", "cannot load", "HDF5 weights")
    assert not (tmp_path / "out").exists()


def test_hostile_npz_pickle_is_refused_without_running(root, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = evil_keras(root, tmp_path / "evil.keras", Payload())
    for args in (("inspect", evil), ("diff", evil, root / "model.keras")):
        one_line_error_without_tf(
            run_cli_without_tf(*args), "layers/dense.npy", "would import posix.system", "nothing of it was"
        )
    proc = run_cli("repair", evil, "--data", root / "X.npy", "--output", tmp_path / "out.keras")
    assert_one_line_error(proc, "posix.system")
    assert not marker.exists() and not (tmp_path / "out.keras").exists()
    # A real Keras file pickling more than arrays and variables (a constraint object) is refused alike.
    one_line_error_without_tf(
        run_cli_without_tf("inspect", root / "constraint_npz.keras"),
        "would import keras.src.constraints.constraints.MaxNorm",
    )
    # What numpy itself does with it: runs the command (the reason ckptdoctor never calls it).
    with zipfile.ZipFile(evil) as z, z.open("model.weights.npz") as f:
        np.load(f, allow_pickle=True)["layers/dense"]
    assert marker.exists()


def test_npz_pickle_declaring_huge_arrays_is_bounded(root, tmp_path):
    class Huge:  # numpy's own reduce of an array, with a shape of 2**40 floats and 12 bytes of data
        def __reduce__(self):
            return (
                np.ndarray.__reduce__(np.zeros(3, "f4"))[0],
                (np.ndarray, (0,), b"b"),
                (1, (1 << 40,), np.dtype("float32"), False, b"\0" * 12),
            )

    huge = evil_keras(root, tmp_path / "huge.keras", Huge())
    one_line_error_without_tf(run_cli_without_tf("inspect", huge), "declaring 1099511627776 values of float32")
    # An object array declared of 2**40 elements in its .npy header, and a member inflating 1000:1.
    headers = {}
    for shape in ((1 << 40,), ()):
        headers[shape] = io.BytesIO()
        np.lib.format.write_array_header_1_0(headers[shape], {"descr": "|O", "fortran_order": False, "shape": shape})
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("layers/big.npy", headers[(1 << 40,)].getvalue() + b"\x80\x04N.")
        z.writestr("layers/bomb.npy", headers[()].getvalue() + bytes(32 << 20))
    for member, fragment in (
        ("layers/big.npy", "object array of shape [1099511627776]"),
        ("layers/bomb.npy", "a decompression bomb"),
    ):
        path = tmp_path / f"{member[7:-4]}.keras"
        with zipfile.ZipFile(npz) as z, zipfile.ZipFile(path, "w") as out, zipfile.ZipFile(root / "model.keras") as m:
            out.writestr("config.json", m.read("config.json"))
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as one:
                one.writestr(member, z.read(member))
            out.writestr("model.weights.npz", inner.getvalue())
        one_line_error_without_tf(run_cli_without_tf("inspect", path), member, fragment)


def test_npz_keras_variable_without_its_state_is_refused(root, tmp_path, monkeypatch):
    # fuzz/regressions/npz_pickle/variable-without-state: a Keras variable made by NEWOBJ with no BUILD after it
    # (an AttributeError, a traceback). Pickled from a stand-in class whose module name is then renamed.
    stand_in = types.ModuleType("kerasXsrcXbackend")
    stand_in.Variable = type("Variable", (), {"__module__": "kerasXsrcXbackend"})
    monkeypatch.setitem(sys.modules, "kerasXsrcXbackend", stand_in)
    path = evil_keras(
        root, tmp_path / "stateless.keras", stand_in.Variable(), (b"kerasXsrcXbackend", b"keras.src.backend")
    )
    one_line_error_without_tf(
        run_cli_without_tf("inspect", path), "layers/dense.npy", "a Keras variable with no pickled state"
    )


def test_plain_array_npz_reads_like_hdf5(root, tmp_path):
    """No Keras writes npz weights without pickles; an npz of plain arrays named like the HDF5 datasets (made here
    from model.keras) reads from its .npy headers: the same tensors, BN layers (matched by class and order: an npz
    records no names) and values."""
    plain = tmp_path / "plain.keras"
    zipped = root / "model.keras"
    with zipfile.ZipFile(zipped) as z, zipfile.ZipFile(plain, "w") as out:
        for name in ("metadata.json", "config.json"):
            out.writestr(name, z.read(name))
        with out.open("model.weights.npz", "w") as member:
            np.savez(member, **h5_datasets(zipped))
    ref, got = (json.loads(run_cli_without_tf("inspect", p, "--format", "json").stdout) for p in (zipped, plain))
    assert got["format"] == "keras-v3-npz"

    def rows(report):  # an npz member's bytes are its data's, an HDF5 dataset's its storage's
        return {k: {f: v for f, v in t.items() if f != "nbytes"} for k, t in tensors(report).items()}

    assert rows(got) == rows(ref)
    assert got["bn_layers"] == ref["bn_layers"] and findings(got) == findings(ref)
    proc = run_cli_without_tf("diff", zipped, plain)
    assert proc.returncode == 0 and "identical" in proc.stdout, proc.stdout
    out = tmp_path / "plain-fixed.keras"
    result = as_json(run_cli("repair", plain, "--data", root / "X.npy", "--output", out, "--format", "json"))
    assert result["updated"] == 6 and npz_members(out).keys() == npz_members(plain).keys()


# --------------------------------------------------------------------------- directories of no known format


def test_unknown_directory_says_what_it_holds_and_what_is_accepted(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "data").mkdir()
    shutil.copyfile(Path(__file__), tmp_path / "model.keras")  # a file a Keras user would name
    for command in ("inspect", "diff"):
        proc = run_cli_without_tf(command, tmp_path, *([tmp_path] if command == "diff" else []))
        one_line_error_without_tf(proc, "data/", "notes.txt", "SavedModel", "Keras model directory", ".weights.json")
    keras_dir = tmp_path / "keras_dir"
    keras_dir.mkdir()
    (keras_dir / "config.json").write_text("{}")
    (keras_dir / "metadata.json").write_text('{"keras_version": "3.15.1"}')
    one_line_error_without_tf(run_cli_without_tf("inspect", keras_dir), "no model.weights.h5", "metadata.json")


# --------------------------------------------------------------------------- sharded weights


def test_sharded_weights_inspect_and_diff_like_the_unsharded_file(root):
    sharded, single = root / "sharded" / "w.weights.json", root / "model.weights.h5"
    shards = json.loads((root / "info.json").read_text())["shards"]
    assert len(shards) >= 2
    ref, got = (as_json(run_cli_without_tf("inspect", p, "--format", "json")) for p in (single, sharded))
    assert got["format"] == "keras-weights-sharded" and tensors(got) == tensors(ref)
    assert set(tensors(got)) == set(weights_of(sharded))
    assert got["bn_layers"] == ref["bn_layers"] and {b["layer"] for b in got["bn_layers"]} == BN
    assert not got["findings"]
    proc = run_cli_without_tf("diff", sharded, single)
    assert proc.returncode == 0 and "TF_LOADED=False" in proc.stderr and "identical" in proc.stdout
    # Against the model's config (from a .keras, or from the factory that builds it): every tensor is the model's.
    for proc in parallel(
        *[
            ("inspect", sharded, "--graph", g, "--format", "json")
            for g in (root / "model.keras", "storage_factory:nested")
        ],
        cwd=root,
    ):
        report = as_json(proc)
        assert all(t["in_graph"] for t in report["tensors"]) and not report["findings"]
        assert {b["layer"]: b["status"] for b in report["bn_layers"]} == {name: "ok" for name in BN}


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_weights_only_files_repair_with_graph_to_the_archive_repair(root, tmp_path):
    """Sharded weights with a factory, and a .weights.h5 with a model directory, as --graph (the backbone test
    gives sharded weights a .keras)."""
    sharded = root / "sharded" / "w.weights.json"
    data = ("--data", root / "X.npy", "--batch-size", 64, "--format", "json")
    outs = {
        "zipped": tmp_path / "model.keras",
        "factory": tmp_path / "f.weights.json",
        "single": tmp_path / "s.weights.h5",
    }
    procs = parallel(
        ("repair", root / "model.keras", *data, "--output", outs["zipped"]),
        ("repair", sharded, *data, "--graph", "storage_factory:nested", "--output", outs["factory"]),
        ("repair", root / "model.weights.h5", *data, "--graph", root / "model_dir", "--output", outs["single"]),
        cwd=root,
    )
    results = dict(zip(outs, map(as_json, procs)))
    ref = weights_of(outs["zipped"])
    for name in ("factory", "single"):
        assert results[name]["output"] == str(outs[name]) and results[name]["updated"] == 6
        assert results[name]["graph"].startswith(("storage_factory:nested", str(root / "model_dir")))
        got = weights_of(outs[name])
        assert set(got) == set(ref)
        for key in got:  # the zipped form's repair, bit for bit
            assert got[key].tobytes() == ref[key].tobytes() and got[key].dtype == ref[key].dtype, (name, key)
    # Same split, shards renamed after the output; a shard holding no statistic is the input's bytes.
    manifest, new = json.loads(sharded.read_text()), json.loads(outs["factory"].read_text())
    assert new["metadata"] == manifest["metadata"]
    assert new["weight_map"] == {
        g: [f.replace("w_", "f_", 1) for f in files] if isinstance(files, list) else files.replace("w_", "f_", 1)
        for g, files in manifest["weight_map"].items()
    }
    stats = {layer[k] for layer in results["factory"]["layers"] for k in ("moving_mean", "moving_variance")}
    for shard in shards_of(manifest):
        src, out = sharded.parent / shard, tmp_path / shard.replace("w_", "f_", 1)
        with h5py.File(src) as f:
            holds_stats = any(key in f for key in stats)
        assert holds_stats or src.read_bytes() == out.read_bytes(), shard
    # Keras loads them (load_weights), to the repaired archive's model.
    loaded = check(
        root,
        str(root / "model.keras"),
        str(outs["zipped"]),
        f"storage_factory:nested={outs['factory']}",
        f"storage_factory:nested={outs['single']}",
    )
    for row in loaded[1:]:
        assert row["outputs"] == loaded[0]["outputs"] and row["stats"] == loaded[0]["stats"]


def test_weights_only_repair_refuses_a_model_that_does_not_fit(root, tmp_path):
    sharded = root / "sharded" / "w.weights.json"
    other = root / "backbone" / "sharded" / "w.weights.json"
    wrong, missing = parallel(
        ("repair", other, "--data", root / "backbone" / "X.npy", "--graph", root / "model.keras"),
        ("repair", sharded, "--data", root / "X.npy", "--graph", "storage_factory:nowhere"),
        cwd=root,
    )
    assert_one_line_error(
        wrong, "does not match", "are not in the file", "belong to none of its variables", "pass the model that wrote"
    )
    assert_one_line_error(missing, "storage_factory:nowhere", "cannot import")
    proc = run_cli("repair", sharded, "--data", root / "X.npy", "--graph", root / "model.keras", "--output", "x.h5")
    assert_one_line_error(proc, ".weights.json")
    assert not list(root.glob("backbone/sharded/w-repaired*"))


def test_missing_or_damaged_shard_is_a_finding_or_a_one_line_error(root, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(root / "sharded", folder)
    manifest = folder / "w.weights.json"
    shards = json.loads((root / "info.json").read_text())["shards"]
    kept, lost = shards[0], shards[1]
    for damage in ("missing", "garbage"):
        if damage == "missing":
            (folder / lost).unlink()
        else:
            (folder / lost).write_bytes(b"not hdf5 at all" * 100)
        proc = run_cli_without_tf("inspect", manifest, "--format", "json")
        report = as_json(proc, codes=(1,))
        [finding] = [f for f in report["findings"] if f["code"] == "shard-unreadable"]
        assert finding["severity"] == "error" and finding["tensor"] == lost
        assert ("is missing" if damage == "missing" else "not a readable HDF5 file") in finding["message"]
        assert set(tensors(report)) == set(h5_datasets(folder / kept))  # what the other shards hold is listed
        for args in (
            ("diff", manifest, root / "model.weights.h5"),
            ("repair", manifest, "--data", root / "X.npy", "--graph", root / "model.keras"),
        ):
            one_line_error_without_tf(run_cli_without_tf(*args), f"shard {lost}", "every shard is needed")
    manifest.write_text("{not json")
    one_line_error_without_tf(run_cli_without_tf("inspect", manifest), "w.weights.json", "not a readable JSON manifest")


def test_sharded_in_place_keeps_every_input_file_as_a_backup(root, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(root / "sharded", folder)
    manifest, before = folder / "w.weights.json", digest(folder)
    args = ("repair", manifest, "--graph", "storage_factory:nested", "--data", root / "X.npy")
    assert_one_line_error(run_cli(*args, "--output", manifest, cwd=root), "is the input", "--in-place")
    result = as_json(run_cli(*args, "--in-place", "--format", "json", cwd=root))
    assert result["output"] == str(manifest) and result["updated"] == 6
    suffix = result["backup"][len(str(manifest)) :]
    assert suffix.startswith(".backup-") and any(suffix in note for note in result["notes"])
    after = digest(folder)
    assert set(after) == set(before) | {name + suffix for name in before}
    assert all(after[name + suffix] == sha for name, sha in before.items())  # every input file kept as it was
    assert after["w.weights.json"] == before["w.weights.json"]  # the same shard names: the same manifest
    assert [n for n in before if after[n] != before[n]]  # the shards holding statistics were rewritten
    proc = run_cli_without_tf("inspect", manifest, "--stats=False")
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow  # breadth: make test-slow runs it, for make test's time
def test_sharded_backbone_weights_inspect_and_repair(root, tmp_path):
    """The acceptance case: a Keras Applications backbone (MobileNetV2) nested in a model with its own head."""
    folder = root / "backbone"
    sharded, info = folder / "sharded" / "w.weights.json", json.loads((folder / "info.json").read_text())
    assert len(info["shards"]) >= 3 and len(info["bn"]) == 53
    report = as_json(run_cli_without_tf("inspect", sharded, "--format", "json"))
    single = as_json(run_cli_without_tf("inspect", folder / "w.weights.h5", "--format", "json"))
    stored = weights_of(sharded)
    assert set(tensors(report)) == set(stored) and tensors(report) == tensors(single)
    assert sorted(b["layer"] for b in report["bn_layers"]) == sorted(info["bn"])
    assert {b["status"] for b in report["bn_layers"]} == {"ok"} and not report["findings"]
    for b in report["bn_layers"]:
        assert b["gamma"] and b["beta"] and stored[b["moving_mean"]].shape == (b["channels"],)
    data = ("--data", folder / "X.npy", "--batch-size", 64, "--format", "json")
    outs = [tmp_path / "f.weights.json", tmp_path / "a.weights.json"]
    checked, by_factory, by_keras = parallel(
        ("inspect", sharded, "--graph", folder / "arch.keras", "--stats=False", "--format", "json"),
        ("repair", sharded, *data, "--graph", "storage_factory:backbone", "--output", outs[0]),
        ("repair", sharded, *data, "--graph", folder / "arch.keras", "--output", outs[1]),
        cwd=root,
    )
    checked = as_json(checked)
    assert sorted(b["layer"] for b in checked["bn_layers"]) == sorted(info["bn"])
    assert not [f for f in checked["findings"] if f["severity"] == "error"] and all(
        t["in_graph"] for t in checked["tensors"]
    )
    for proc in (by_factory, by_keras):
        result = as_json(proc)
        assert sorted(layer["layer"] for layer in result["layers"]) == sorted(info["bn"])
        assert result["held_in_inference"] == ["drop"] and result["output_check"]["improved"]
        stats = {layer[k] for layer in result["layers"] for k in ("moving_mean", "moving_variance")}
        only_statistics_changed(stored, weights_of(Path(result["output"])), stats)
    rows = check(
        root,
        f"storage_factory:backbone={sharded}",
        f"storage_factory:backbone={sharded}",
        *[f"storage_factory:backbone={out}" for out in outs],
        data=folder / "X.npy",
    )
    assert rows[0]["gap"] > 0.05  # stale before
    for row in rows[1:]:  # all samples in one batch: inference gives the BN-training reference
        assert row["gap"] < 2e-3, row["gap"]
        assert row["stats"] == rows[1]["stats"] and row["outputs"] == rows[1]["outputs"]


# ----------------------------------------------------------------------------- the spliced copy of a stored .keras


def new_statistics(reader) -> dict:
    """Other values for every BN moving mean and variance of a Keras file, as a repair hands them to the writer."""
    from ckptdoctor.formats.keras.layout import describe_keras_file

    out = {}
    for layer in describe_keras_file(reader, reader.model_config).bn_layers:
        for role, shift in (("moving_mean", 0.25), ("moving_variance", 1.5)):
            key = layer.weights[role]
            value = reader.read(key)
            out[key] = (value * 1.5 + shift).astype(value.dtype)
    return out


def member(path: Path, name: str = "model.weights.h5") -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(name)


def written_by_h5py(reader, source: Path, target: Path, replacements: dict, monkeypatch) -> None:
    """The copy as h5py writes it (the member extracted, the datasets overwritten): the splice turned off."""
    from ckptdoctor.formats.keras import store

    with monkeypatch.context() as m:
        m.setattr(store, "_patches", lambda *args: None)
        assert store._copy_with(reader, str(source), str(target), reader.format, replacements) is None


@pytest.mark.parametrize("name", ["model.keras", "backbone/arch.keras"])
def test_stored_keras_is_copied_with_the_statistics_spliced_in_as_h5py_writes_them(root, tmp_path, name, monkeypatch):
    """A stored weights member is copied byte for byte with the statistics' bytes spliced in: the member is the
    same, byte for byte, as h5py's own overwrite of an extracted copy; h5py reads the new values back and every
    other dataset as it was; the other members are the input's own."""
    from ckptdoctor.formats.keras import store
    from ckptdoctor.formats.keras.files import open_keras_reader

    source = root / name
    reader = open_keras_reader(str(source))
    try:
        replacements = new_statistics(reader)
        assert len(replacements) >= 6
        plan = store._copy_with(reader, str(source), str(tmp_path / "spliced.keras"), reader.format, replacements)
        assert plan is not None and len(plan[3]) == len(replacements)  # the splice ran, one patch per dataset
        written_by_h5py(reader, source, tmp_path / "h5py.keras", replacements, monkeypatch)
        counts = store.write_keras(reader, str(source), str(tmp_path / "out.keras"), replacements, in_place=False)
    finally:
        reader.close()
    assert member(tmp_path / "spliced.keras") == member(tmp_path / "h5py.keras") == member(tmp_path / "out.keras")
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(tmp_path / "out.keras") as b:
        assert b.testzip() is None and a.namelist() == b.namelist()
        assert all(a.read(n) == b.read(n) for n in a.namelist() if n != "model.weights.h5")
    before, after = h5_datasets(source), h5_datasets(tmp_path / "out.keras")
    assert set(before) == set(after)
    for key in before:
        want = replacements.get(key, before[key])
        assert after[key].dtype == want.dtype and after[key].tobytes() == want.tobytes(), key
    assert (counts.updated, counts.untouched) == (len(replacements), len(before) - len(replacements))


def test_deflated_or_chunked_weights_are_written_through_h5py(root, tmp_path):
    """No splice where the bytes are not one stored run: a deflated weights member, or a statistic stored
    chunked and compressed. The copy is then h5py's, and reads back the same."""
    from ckptdoctor.formats.keras import store
    from ckptdoctor.formats.keras.files import open_keras_reader

    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(root / "model.keras") as z, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info), zipfile.ZIP_DEFLATED)
    chunked = tmp_path / "chunked.keras"
    weights = tmp_path / "w.h5"
    weights.write_bytes(member(root / "model.keras"))
    reader = open_keras_reader(str(root / "model.keras"))
    key = next(iter(new_statistics(reader)))
    reader.close()
    with h5py.File(weights, "r+") as f:
        value = f[key][()]
        del f[key]
        f.create_dataset(key, data=value, chunks=value.shape, compression="gzip")
    with zipfile.ZipFile(root / "model.keras") as z, zipfile.ZipFile(chunked, "w") as out:
        for info in z.infolist():
            out.writestr(info, weights.read_bytes() if info.filename == "model.weights.h5" else z.read(info))
    for source in (deflated, chunked):
        reader = open_keras_reader(str(source))
        try:
            replacements = new_statistics(reader)
            assert (
                store._copy_with(reader, str(source), str(tmp_path / "probe.keras"), reader.format, replacements)
                is None
            )
            store.write_keras(reader, str(source), str(tmp_path / "out.keras"), replacements, in_place=False)
        finally:
            reader.close()
        before, after = h5_datasets(source), h5_datasets(tmp_path / "out.keras")
        assert set(before) == set(after)
        for name in before:
            assert after[name].tobytes() == replacements.get(name, before[name]).tobytes(), (source.name, name)


def test_spliced_copy_that_is_not_the_intended_one_fails_verification(root, tmp_path):
    """The verification compares the written member with the source's bytes and the patches: a member that
    differs from the intended copy by one byte is refused (here the plan, not the file, holds the other byte)."""
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.formats.keras import store
    from ckptdoctor.formats.keras.files import open_keras_reader

    source, written = root / "model.keras", tmp_path / "spliced.keras"
    reader = open_keras_reader(str(source))
    try:
        replacements = new_statistics(reader)
        source_path, start, size, patches = store._copy_with(
            reader, str(source), str(written), reader.format, replacements
        )
        assert store._verify(reader, str(written), replacements, (source_path, start, size, patches))["updated"]
        offset, data = patches[0]
        other = [(offset, bytes([data[0] ^ 1]) + data[1:])] + patches[1:]
        with pytest.raises(CkptDoctorError, match="verification failed"):
            store._verify(reader, str(written), replacements, (source_path, start, size, other))
        with pytest.raises(CkptDoctorError, match="verification failed"):  # the source read one byte off
            store._verify(reader, str(written), replacements, (source_path, start + 1, size, patches))
    finally:
        reader.close()


def test_spliced_copy_verification_reads_the_new_statistics_back_and_checks_the_crc(root, tmp_path):
    """With a splice plan only the replaced tensors are read back (with h5py, from the written member): a value
    other than the one intended is refused, and so is a member whose recorded CRC-32 does not match its bytes."""
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.formats.keras import store
    from ckptdoctor.formats.keras.files import open_keras_reader

    source, written = root / "model.keras", tmp_path / "spliced.keras"
    reader = open_keras_reader(str(source))
    try:
        replacements = new_statistics(reader)
        plan = store._copy_with(reader, str(source), str(written), reader.format, replacements)
        assert store._verify(reader, str(written), replacements, plan) == {
            "untouched": len(reader.entries()) - len(replacements),
            "updated": len(replacements),
        }
        key = sorted(replacements)[0]
        intended = {**replacements, key: replacements[key] + 1}  # not what the file holds at that dataset
        with pytest.raises(CkptDoctorError, match=f"verification failed: {key} does not read back"):
            store._verify(reader, str(written), intended, plan)
        with zipfile.ZipFile(written) as z:
            info = z.getinfo("model.weights.h5")
        data = bytearray(written.read_bytes())
        recorded = info.CRC.to_bytes(4, "little")
        assert data.count(recorded) == 2  # the local header and the central directory
        bad = tmp_path / "bad-crc.keras"
        bad.write_bytes(bytes(data).replace(recorded, ((info.CRC ^ 1) & 0xFFFFFFFF).to_bytes(4, "little")))
        with pytest.raises(CkptDoctorError, match="verification failed: the written model.weights.h5"):
            store._verify(reader, str(bad), replacements, plan)
    finally:
        reader.close()
