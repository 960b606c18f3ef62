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


def _collector_at_exit(tmp_path, *args) -> tuple[subprocess.CompletedProcess, str]:
    """The CLI's finished process, and whether its garbage collector was on when Python's exit ran."""
    site = tmp_path / "gcsite"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import atexit, gc, os\n"
        "atexit.register(lambda: open(os.environ['GC_MARKER'], 'w').write(str(gc.isenabled())))\n"
    )
    marker = tmp_path / "gc-marker"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    env["GC_MARKER"] = str(marker)
    proc = subprocess.run(cli_command() + list(args), capture_output=True, text=True, timeout=600, env=env)
    return proc, marker.read_text()


def test_reading_commands_run_without_the_collector_and_others_keep_it(tmp_path):
    # A listing makes objects per tensor and no cyclic garbage: the console script turns the collector off for
    # inspect, diff and report. inspect --data runs a dry-run repair (TensorFlow): it keeps it, as repair does.
    seed = str(SAMPLES / "seed-trainables")
    proc, enabled = _collector_at_exit(tmp_path, "inspect", seed, "--graph=False", "--format", "json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["tensors"] and enabled == "False", proc.stderr
    proc, enabled = _collector_at_exit(tmp_path, "diff", seed, seed)
    assert proc.returncode == 0 and enabled == "False", proc.stderr
    missing = str(tmp_path / "missing.npy")
    proc, enabled = _collector_at_exit(tmp_path, "inspect", seed, "--graph=False", "--data", missing)
    assert proc.returncode == 2 and "missing.npy" in proc.stderr and enabled == "True"
    proc, enabled = _collector_at_exit(tmp_path, "inspect", seed, "--graph=False", "-d", missing)
    assert proc.returncode == 2 and "missing.npy" in proc.stderr and enabled == "True"
    proc, enabled = _collector_at_exit(tmp_path, "repair", seed, "--data", missing)
    assert proc.returncode == 2 and enabled == "True"


def test_main_in_a_process_it_does_not_own_leaves_the_collector_on(tmp_path, capsys):
    import gc

    from ckptdoctor.cli import main

    assert main(["inspect", str(SAMPLES / "seed-trainables"), "--graph=False", "--stats=False"]) == 1
    assert gc.isenabled() and "moving" in capsys.readouterr().out
