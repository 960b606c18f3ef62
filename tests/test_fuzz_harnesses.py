"""The fuzz harnesses of ``fuzz/`` in the normal suite: their seeds and regressions replayed, and a smoke run.

* Every seed (``fuzz/corpus/<harness>/``) and every input that once made a harness fail
  (``fuzz/regressions/<harness>/``, each named after what it caught) goes through its harness's
  ``test_one_input`` (``python -m fuzz.replay --all``): nothing but ckptdoctor's own errors may escape.
  The regressions are also built for real, one by one, in ``tests/test_hostile.py``.
* With atheris installed (``make fuzz`` installs the ``fuzz`` extra), each harness really fuzzes for
  300 inputs from a fixed seed (the same inputs on every run, so that the suite's verdict does not depend
  on luck): a check that the harnesses run and that nothing shallow has crept in, not a search (that
  is ``make fuzz``, with random seeds). New inputs go to a temporary folder, never into the repository.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conftest import run_measured  # noqa: E402

from fuzz.common import CORPUS, HARNESSES, REGRESSIONS  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_every_harness_has_seeds():
    for harness in HARNESSES:
        seeds = [p for p in (CORPUS / harness).iterdir() if p.is_file()]
        assert seeds, harness
        assert (ROOT / "fuzz" / f"{harness}.py").is_file()


def test_seeds_and_regressions_pass_their_harness():
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.replay", "--all"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    replayed = [line for line in proc.stdout.splitlines() if ": ok (" in line]
    files = [p for h in HARNESSES for d in (CORPUS / h, REGRESSIONS / h) if d.is_dir() for p in d.iterdir()]
    assert len(replayed) == len(files) and len(files) > len(HARNESSES)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed (make fuzz)")
@pytest.mark.parametrize("harness", HARNESSES)
def test_short_fuzzing_run(harness, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        f"fuzz.{harness}",
        "-runs=300",
        "-seed=1",  # the same 300 inputs on every run of the suite: the search, with random seeds, is `make fuzz`
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path),
        str(CORPUS / harness),
    ]
    # Through a small process in between (run_measured): a child of this (large, TensorFlow-loaded) test process
    # starts with its parent's peak RSS on Linux, and libFuzzer's -rss_limit_mb=512 would stop the harness at once.
    proc, _ = run_measured(cmd, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done 300 runs" in proc.stderr
