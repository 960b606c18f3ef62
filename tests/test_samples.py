"""The bundled samples say what their READMEs say (the demo relies on them)."""

from pathlib import Path

import pytest

import ckptdoctor

SAMPLES = Path(__file__).resolve().parents[1] / "sample_ckpts"


@pytest.mark.parametrize(
    "name,exit_code,codes",
    [
        ("seed", 0, {}),
        ("seed-trainables", 1, {"bn-stats-missing": 6}),
        ("seed-no-update", 1, {"bn-stats-at-init": 3, "bn-update-ops-unused": 1}),
        ("convnet", 0, {}),
        ("nobn", 0, {}),
    ],
)
def test_bundled_samples(name, exit_code, codes):
    folder = SAMPLES / name
    assert (folder / "X.npy").is_file() and (folder / "README.md").is_file()
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
    r = ckptdoctor.inspect(str(folder))  # the directory, through its 'checkpoint' file
    assert r.exit_code == exit_code
    for code, n in codes.items():
        assert len(r.findings_with(code)) == n
    assert len(r.bn_layers) == (0 if name == "nobn" else 3)
