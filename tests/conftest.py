"""Shared fixtures: real checkpoints built by real TensorFlow graphs, and the real CLI.

Checkpoints are built by ``sample_ckpts/builders.py`` in a subprocess each (graph
mode switches are process-wide), once per test session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = ROOT / "sample_ckpts" / "builders.py"
SAMPLES = ROOT / "sample_ckpts"

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The Keras expectation cache (formats/keras/expect_cache.py) of this test process and its children: the
# suite never reads or fills the user's ~/.cache. Tests of the cache itself set their own.
if "CKPTDOCTOR_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["CKPTDOCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ckptdoctor-test-cache-")


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("ckptdoctor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ckptdoctor"]


def run_cli(*args, check_codes=(0, 1, 2), **kwargs) -> subprocess.CompletedProcess:
    """Run the installed ``ckptdoctor`` entry point and return the finished process."""
    proc = subprocess.run(cli_command() + [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode in check_codes, proc.stderr
    return proc


# Runs argv[2:] and writes its peak RSS (KiB) to the file argv[1]. A fresh, small process in between:
# a child forked from the (large) test process would count the test process's pages in its own peak.
_MEASURE = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))"
)


def run_cli_measured(*args, timeout: float = 300, tensorflow: bool = False) -> tuple[subprocess.CompletedProcess, int]:
    """``run_cli`` in a fresh process, and that process's peak RSS in bytes (``wait4``'s ``ru_maxrss``).

    The peak is the child's own high-water mark, measured by a small wrapper process (see ``_MEASURE``): a
    bound on memory that does not depend on the machine's speed. ``timeout`` only guards against a hang.
    Unless ``tensorflow``, TensorFlow and Keras are unimportable in the CLI's process (as on a machine
    without them, ``run_cli_without_tf``): the peak is then what reading the files cost.
    """
    cli = cli_command() if tensorflow else [sys.executable, "-c", _NO_TF_OR_KERAS]
    return run_measured([*cli, *map(str, args)], timeout=timeout)


def run_measured(cmd: list, timeout: float = 300, **kwargs) -> tuple[subprocess.CompletedProcess, int]:
    """``cmd`` in a fresh process (started by a small one: see ``_MEASURE``), and its peak RSS in bytes.

    ``kwargs`` go to ``subprocess.run`` (``cwd``, ``env``); output is captured as text.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rss_file = os.path.join(d, "rss")
        wrapped = [sys.executable, "-c", _MEASURE, rss_file, *map(str, cmd)]
        proc = subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout, **kwargs)
        with open(rss_file) as f:
            rss = int(f.read()) * 1024
    return proc, rss


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one line on stderr starting with 'ckptdoctor: error:', no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ckptdoctor: error: "), lines
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


class Built:
    """A checkpoint built by builders.py: its folder, prefix and info.json."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.prefix = str(folder / "model.ckpt")
        self.info = json.loads((folder / "info.json").read_text())
        self.X = str(folder / "X.npy")

    def copy_to(self, target: Path) -> Built:
        shutil.copytree(self.folder, target)
        return Built(target)


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    """``build(kind, control_flow='v1', steps=None)`` -> Built, cached per session."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("built")

    def _build(kind: str, control_flow: str = "v1", steps: int | None = None) -> Built:
        key = (kind, control_flow, steps)
        if key not in cache:
            out = root / f"{kind}-{control_flow}-{steps}"
            cmd = [sys.executable, str(BUILDERS), kind, str(out), "--control-flow", control_flow]
            if steps is not None:
                cmd += ["--steps", str(steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[key] = Built(out)
        return cache[key]

    return _build


@pytest.fixture(scope="session")
def resnet_keras(tmp_path_factory) -> Path:
    """A Keras 3 residual net with 21 BN layers (``report_builders.py``): OUT/model.keras and OUT/X.npy."""
    out = tmp_path_factory.mktemp("resnet") / "resnet"
    builder = Path(__file__).with_name("report_builders.py")
    proc = subprocess.run([sys.executable, str(builder), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def tf_reader_values(prefix: str) -> dict:
    """Every tensor via TensorFlow's own reader (an independent source of truth)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


# Runs the real CLI with TensorFlow made unimportable (a None entry in sys.modules makes
# every `import tensorflow` raise ImportError) and reports whether anything loaded it.
_NO_TF = (
    "import sys; sys.modules['tensorflow'] = None; "
    "from ckptdoctor.cli import main; code = main(sys.argv[1:]); "
    "sys.stderr.write('TF_LOADED=%s\\n' % any(m.startswith('tensorflow.') for m in sys.modules)); sys.exit(code)"
)


_NO_TF_OR_KERAS = (
    "import sys; sys.modules.update(tensorflow=None, keras=None, tf_keras=None); "
    "from ckptdoctor.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_cli_without_tf(*args) -> subprocess.CompletedProcess:
    """``ckptdoctor ARGS`` in a process where TensorFlow cannot be imported."""
    return subprocess.run([sys.executable, "-c", _NO_TF, *map(str, args)], capture_output=True, text=True, timeout=300)


def run_in_parallel(commands: dict, timeout: int = 600) -> None:
    """Run builder subprocesses side by side (Keras 3 and tf-keras need a process each); all must succeed."""
    procs = {
        name: subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in commands.items()
    }
    for name, p in procs.items():
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, (name, err[-3000:])


def h5_datasets(path) -> dict:
    """Every dataset h5py sees, with its values (for a .keras archive: of its model.weights.h5)."""
    import zipfile

    import h5py

    out = {}

    def visit(f):
        f.visititems(lambda n, o: out.__setitem__(n, np.asarray(o[()])) if isinstance(o, h5py.Dataset) else None)

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as member, h5py.File(member, "r") as f:
            visit(f)
    else:
        with h5py.File(path, "r") as f:
            visit(f)
    return out


def pytest_collection_modifyitems(config, items):
    """The architecture zoo (tests/test_zoo.py): plain ``pytest`` runs only its ``zoo_subset`` cases; a ``-m``
    expression naming ``zoo`` (``make zoo``: ``pytest -m zoo``) selects from all of them."""
    if "zoo" in (config.getoption("markexpr") or ""):
        return
    extra = [i for i in items if i.get_closest_marker("zoo") and not i.get_closest_marker("zoo_subset")]
    if extra:
        config.hook.pytest_deselected(items=extra)
        items[:] = [i for i in items if i not in extra]
