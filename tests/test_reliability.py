"""Damaged checkpoints, hostile data and interrupted runs: diagnose, refuse, lose nothing.

Each case runs the real CLI on a copy of a checkpoint TensorFlow wrote (the bundled seed
sample) and checks the exit code, the one-line message, that no input changed and that no
partial output is left.
"""

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, cli_command, run_cli, tf_reader_values

from ckptdoctor.readers import protowire, sstable

SEED = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed-no-update"
DATA = "model.ckpt.data-00000-of-00001"


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(SEED, folder)
    return folder


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def entry(folder: Path, name: str):
    items = dict(sstable.read_table(str(folder / "model.ckpt.index")))
    return protowire.decode_bundle_entry(items[name.encode()])


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- damaged checkpoints


def test_flipped_byte_is_a_checksum_finding_and_everything_else_is_listed(ckpt):
    e = entry(ckpt, "dense/kernel")
    flip(ckpt / DATA, e.offset + 3)
    before = digest(ckpt)
    proc = run_cli("inspect", ckpt / "model.ckpt", "--format", "json")
    import json

    doc = json.loads(proc.stdout)
    assert proc.returncode == 1 and digest(ckpt) == before
    bad = [f for f in doc["findings"] if f["code"] == "checksum-mismatch"]
    assert [f["tensor"] for f in bad] == ["dense/kernel"] and DATA in bad[0]["message"]
    assert len(doc["tensors"]) == doc["summary"]["tensors"] == 44
    others = [t for t in doc["tensors"] if t["name"] != "dense/kernel" and t["dtype"] == "float32"]
    assert all(t["mean"] is not None for t in others)


def test_truncated_shard_lists_every_tensor_and_names_sizes(ckpt):
    size = (ckpt / DATA).stat().st_size
    with open(ckpt / DATA, "r+b") as f:
        f.truncate(size // 2)
    proc = run_cli("inspect", ckpt / "model.ckpt", "--format", "json")
    import json

    doc = json.loads(proc.stdout)
    unreadable = [f for f in doc["findings"] if f["code"] == "tensor-unreadable"]
    assert proc.returncode == 1 and unreadable and len(doc["tensors"]) == 44
    assert DATA in unreadable[0]["message"] and str(size // 2) in unreadable[0]["message"]
    readable = {t["name"] for t in doc["tensors"] if t["mean"] is not None}
    assert readable and not readable & {f["tensor"] for f in unreadable}


@pytest.mark.parametrize(
    "damage,fragment",
    [
        ("zero-footer", "model.ckpt.index"),
        ("empty-index", "model.ckpt.index"),
        ("png-index", "model.ckpt.index"),
        ("missing-shard", DATA),
        ("garbage-meta", "model.ckpt.meta"),
        ("truncated-index", "model.ckpt.index"),
    ],
)
def test_unreadable_checkpoints_exit_2_with_one_line(ckpt, damage, fragment):
    index = ckpt / "model.ckpt.index"
    if damage == "zero-footer":
        data = bytearray(index.read_bytes())
        data[-48:] = bytes(48)
        index.write_bytes(bytes(data))
    elif damage == "empty-index":
        index.write_bytes(b"")
    elif damage == "png-index":
        index.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif damage == "missing-shard":
        (ckpt / DATA).unlink()
    elif damage == "garbage-meta":
        (ckpt / "model.ckpt.meta").write_bytes(os.urandom(3000))
    elif damage == "truncated-index":
        index.write_bytes(index.read_bytes()[:-20])
    before = digest(ckpt)
    assert_one_line_error(run_cli("inspect", ckpt / "model.ckpt"), fragment)
    assert digest(ckpt) == before


# ----------------------------------------------------------------------------- hostile data


def test_hostile_data_is_refused_before_work(ckpt, tmp_path):
    prefix = ckpt / "model.ckpt"
    npz = tmp_path / "objects.npz"
    np.savez(npz, inp=np.array([object(), 1], dtype=object))
    assert_one_line_error(run_cli("repair", prefix, "--data", npz, "--dry-run"), "pickle")
    import h5py

    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["flat"] = np.zeros(10, np.float32)
    assert_one_line_error(run_cli("repair", prefix, "--data", f"{h5}:nope", "--dry-run"), "no dataset 'nope'")
    assert_one_line_error(run_cli("repair", prefix, "--data", f"{h5}:flat", "--dry-run"), "shape [10]")
    inf = tmp_path / "inf.npy"
    x = np.load(ckpt / "X.npy")
    x[7, 0] = np.inf
    np.save(inf, x)
    assert_one_line_error(run_cli("repair", prefix, "--data", inf, "--dry-run"), "row 7, column 0")
    assert not list(ckpt.glob("*-repaired*"))


# ----------------------------------------------------------------------------- interrupted and failed runs


def _output_state(folder: Path, prefix: str) -> str:
    """'none' or 'whole'; fails on anything partial."""
    out = folder / prefix
    visible = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    if not (folder / f"{prefix}.index").exists():
        # Data or meta of an unfinished rename are not a checkpoint; the next run clears them.
        return "none"
    assert (folder / f"{prefix}.meta").exists() and (folder / f"{prefix}.data-00000-of-00001").exists(), visible
    values = tf_reader_values(str(out))
    assert not np.all(values["batch_normalization/moving_mean"] == 0)
    return "whole"


@pytest.mark.parametrize(
    "after", [1, 3, pytest.param(6, marks=pytest.mark.slow), pytest.param(10, marks=pytest.mark.slow)]
)  # breadth: make test-slow runs it, for make test's time
def test_repair_killed_at_any_moment_leaves_nothing_partial(ckpt, after):
    before = digest(ckpt)
    proc = subprocess.Popen(
        cli_command() + ["repair", str(ckpt / "model.ckpt"), "--data", str(ckpt / "X.npy"), "--batch-size", "7"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {k: v for k, v in digest(ckpt).items() if k in before} == before, "an input file changed"
    state = _output_state(ckpt, "model.ckpt-repaired")
    hidden = [p.name for p in ckpt.iterdir() if p.name.startswith(".ckptdoctor-tmp-")]
    # The next run finishes the job and clears what the killed one left.
    again = run_cli("repair", ckpt / "model.ckpt", "--data", ckpt / "X.npy", "--force")
    assert again.returncode == 0, again.stderr
    assert _output_state(ckpt, "model.ckpt-repaired") == "whole"
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".ckptdoctor-tmp-")]
    assert state in ("none", "whole") and isinstance(hidden, list)


def test_full_disk_exits_2_and_leaves_nothing(ckpt):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    before = digest(ckpt)
    proc = subprocess.run(
        cli_command() + ["repair", str(ckpt / "model.ckpt"), "--data", str(ckpt / "X.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert_one_line_error(proc, "cannot write")
    assert digest(ckpt) == before
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(before)


def test_output_folder_missing_or_not_writable(ckpt, tmp_path):
    assert_one_line_error(
        run_cli("repair", ckpt / "model.ckpt", "--data", ckpt / "X.npy", "--output", tmp_path / "no" / "such" / "x"),
        "does not exist",
    )
    if os.geteuid() == 0:
        return  # root writes anywhere: the permission check cannot be exercised here
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    assert_one_line_error(
        run_cli("repair", ckpt / "model.ckpt", "--data", ckpt / "X.npy", "--output", ro / "x"), "not writable"
    )


def test_a_run_never_removes_the_temporary_folder_another_run_just_made(tmp_path):
    # Two runs writing beside each other (CI's parallel repairs of a Keras directory and a Hub snapshot): one's
    # cleaning of killed runs' folders saw the other's folder between its creation and its owner file, took it
    # for a killed run's and removed it ("No such file or directory"). Here a thread cleans without pause while
    # folders are made: each must still be there, owner file and all.
    import threading

    from ckptdoctor.writers.bundle import OWNER_FILE, clean_stale_temporaries, temporary_folder

    stop = threading.Event()
    removed: list[str] = []

    def clean() -> None:
        while not stop.is_set():
            removed.extend(clean_stale_temporaries(str(tmp_path)))

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    try:
        made = [temporary_folder(str(tmp_path)) for _ in range(300)]
    finally:
        stop.set()
        cleaner.join()
    assert removed == []
    assert all((Path(p) / OWNER_FILE).read_text() == str(os.getpid()) for p in made)
    # A killed run's folder is still cleared: its owner gone, or no owner file a minute after it was made.
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed, ownerless = tmp_path / ".ckptdoctor-tmp-killed", tmp_path / ".ckptdoctor-tmp-ownerless"
    killed.mkdir()
    (killed / OWNER_FILE).write_text(str(dead.pid))
    ownerless.mkdir()
    os.utime(ownerless, (time.time() - 120, time.time() - 120))
    assert sorted(clean_stale_temporaries(str(tmp_path))) == sorted([str(killed), str(ownerless)])
    assert all(Path(p).is_dir() for p in made)
