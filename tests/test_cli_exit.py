"""How the console script ends: ``os._exit`` once TensorFlow is loaded (its teardown skipped), Python's own exit
otherwise; in both, everything printed reaches the reader and the exit code is ``main``'s.

A ``sitecustomize`` module on ``PYTHONPATH`` registers an ``atexit`` hook in the CLI's process that writes a
marker file: Python's normal exit runs it, ``os._exit`` does not.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
from conftest import SAMPLES, cli_command

_SITECUSTOMIZE = (
    "import atexit, os\n"
    "def _mark():\n"
    "    with open(os.environ['EXIT_MARKER'], 'w') as f:\n"
    "        f.write('python exit')\n"
    "atexit.register(_mark)\n"
)


def _run(tmp_path, *args) -> tuple[subprocess.CompletedProcess, bool]:
    """The CLI's finished process, and whether Python's own exit ran (the atexit marker was written)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    marker = tmp_path / "exit-marker"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    env["EXIT_MARKER"] = str(marker)
    env.pop("PYTHONUNBUFFERED", None)  # stdout block-buffered, as on a user's machine: what is not flushed is lost
    proc = subprocess.run(cli_command() + list(args), capture_output=True, text=True, timeout=600, env=env)
    return proc, marker.exists()


def test_tensorflow_run_ends_with_os_exit_after_flushing_everything(tmp_path):
    # The seed's .meta graph is analysed with TensorFlow; its findings make the exit code 1.
    proc, python_exit = _run(tmp_path, "inspect", str(SAMPLES / "seed-trainables"), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert not python_exit, "TensorFlow was loaded: the process should end with os._exit"
    report = json.loads(proc.stdout)  # the whole JSON: stdout (a pipe, block-buffered) was flushed first
    assert report["graph"] and any(f["code"] == "bn-stats-missing" for f in report["findings"])
    # The same tensors and statistics as a process that ends normally (without the graph: no TensorFlow).
    plain = subprocess.run(
        cli_command() + ["inspect", str(SAMPLES / "seed-trainables"), "--format", "json", "--graph=False"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    fields = ("name", "shape", "min", "max", "mean")
    assert [[t[k] for k in fields] for t in json.loads(plain.stdout)["tensors"]] == [
        [t[k] for k in fields] for t in report["tensors"]
    ]


def test_run_without_tensorflow_ends_with_python_exit(tmp_path):
    proc, python_exit = _run(tmp_path, "inspect", str(SAMPLES / "seed-trainables"), "--graph=False", "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert python_exit
    assert json.loads(proc.stdout)["graph"] is None


def test_error_after_tensorflow_keeps_code_2_and_its_one_line(tmp_path):
    # The seed's graph is loaded with TensorFlow, then the data are refused (3 features, the input takes 2).
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((10, 3), np.float32))
    out = tmp_path / "repaired"
    proc, python_exit = _run(tmp_path, "repair", str(SAMPLES / "seed"), "--data", str(bad), "--output", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ckptdoctor: error:"), proc.stderr
    assert "shape" in proc.stderr
    assert not python_exit, "TensorFlow was loaded: the process should end with os._exit"
    assert not list(tmp_path.glob("repaired*"))
