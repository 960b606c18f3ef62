from pathlib import Path

import pytest

from ckptdoctor.errors import CheckpointNotFoundError
from ckptdoctor.readers.resolve import resolve_checkpoint

SEED = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed"


def fake_checkpoint(folder: Path, name: str) -> str:
    (folder / f"{name}.index").write_bytes(b"x")
    (folder / f"{name}.data-00000-of-00001").write_bytes(b"x")
    (folder / f"{name}.meta").write_bytes(b"x")
    return str(folder / name)


def test_every_file_of_a_checkpoint_resolves_to_its_prefix(tmp_path):
    prefix = fake_checkpoint(tmp_path, "model.ckpt-1000")
    for arg in (prefix, prefix + ".index", prefix + ".meta", prefix + ".data-00000-of-00001"):
        assert resolve_checkpoint(arg).prefix == prefix


def test_directory_uses_state_file_relative_and_moved_absolute(tmp_path):
    fake_checkpoint(tmp_path, "ckpt-1")
    latest = fake_checkpoint(tmp_path, "ckpt-2")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-1"\n')
    r = resolve_checkpoint(str(tmp_path))
    assert r.prefix == latest and "checkpoint" in r.how
    # A TF1 Saver writes absolute paths; the folder may have moved since.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/somewhere/else/ckpt-2"\n')
    assert resolve_checkpoint(str(tmp_path)).prefix == latest


def test_missing_checkpoint_names_nearby_ones(tmp_path):
    fake_checkpoint(tmp_path, "model.ckpt-1000")
    with pytest.raises(CheckpointNotFoundError) as e:
        resolve_checkpoint(str(tmp_path / "model.ckpt"))
    assert "model.ckpt-1000" in str(e.value)


def test_directory_without_state_file_and_several_checkpoints(tmp_path):
    fake_checkpoint(tmp_path, "a")
    fake_checkpoint(tmp_path, "b")
    with pytest.raises(CheckpointNotFoundError, match="2 checkpoints"):
        resolve_checkpoint(str(tmp_path))
