"""What every harness shares: instrumented imports when fuzzing, the libFuzzer options, the rule for failures.

A harness module (``fuzz/<name>.py``) defines ``test_one_input(data: bytes)``, which feeds the bytes
to one parser and lets every exception other than ckptdoctor's own (``CkptDoctorError``) escape:
atheris reports an escaped exception as a crash. Run as ``python -m fuzz.<name> [libFuzzer options]``
it fuzzes, with the ckptdoctor modules instrumented for coverage; imported (as the tests do), its
``test_one_input`` is a plain function and nothing is instrumented.

The bounds of a run, from the issue: no input may take more than 5 s (``-timeout=5``) or make the
process's RSS exceed 512 MiB (``-rss_limit_mb=512``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"
WORK = HERE / "work"  # git-ignored: the growing corpus, crash artifacts and logs of `make fuzz`
HARNESSES = ("sstable", "protowire", "saved_model", "keras_h5", "keras_archive", "npz_pickle", "data")
TIMEOUT_S = 5
RSS_LIMIT_MB = 512

FIXTURES = HERE / "fixtures"  # files a harness combines with its input (a real bundle beside a fuzzed .pb)
_scratch: list[Path] = []


def without_tensorflow() -> None:
    """Make TensorFlow and Keras unimportable in this process: the parsers must not need them, and inspect then
    skips what only they can check (as on a machine without them), instead of spending seconds per input."""
    for name in ("tensorflow", "keras", "tf_keras"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


@contextlib.contextmanager
def _instrumenting():
    import importlib
    import pkgutil

    import atheris

    with atheris.instrument_imports(include=["ckptdoctor"]):
        import ckptdoctor

        # Every module now: ckptdoctor imports most of its modules lazily, inside functions, and a module
        # imported after this block would run uninstrumented (no coverage feedback from it).
        for info in pkgutil.walk_packages(ckptdoctor.__path__, "ckptdoctor."):
            if info.name.endswith("__main__"):
                continue  # running it would run the CLI
            try:
                importlib.import_module(info.name)
            except ImportError:
                pass  # needs TensorFlow or Keras, blocked here
        yield


def instrumented(module_name: str):
    """A context in which every ckptdoctor module is imported instrumented, when ``module_name`` is being fuzzed."""
    if module_name != "__main__":
        return contextlib.nullcontext()
    without_tensorflow()
    return _instrumenting()


def scratch() -> Path:
    """A folder in memory (``/dev/shm`` when there is one) for the files parsers open by path; removed at exit."""
    if not _scratch:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _scratch.append(Path(tempfile.mkdtemp(prefix="ckptdoctor-fuzz-", dir=shm)))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return _scratch[0]


def scratch_file(data: bytes, name: str) -> str:
    """``data`` written to ``scratch()/name`` (overwritten each time); its path."""
    path = scratch() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def fuzz(test_one_input, name: str, argv: list[str] | None = None) -> None:
    """Run libFuzzer on ``test_one_input``: new inputs go to ``WORK/<name>/corpus``, seeds come from ``CORPUS/<name>``.

    ``argv`` (default ``sys.argv[1:]``) adds libFuzzer options (``-max_total_time=60``, ``-runs=300``).
    """
    import atheris

    work = WORK / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "artifacts").mkdir(parents=True, exist_ok=True)
    args = list(sys.argv[1:] if argv is None else argv)
    options = [
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={work / 'artifacts'}/",
        "-print_final_stats=1",
    ]
    dirs = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    if not dirs:
        dirs = [str(work / "corpus"), str(CORPUS / name)]
    atheris.Setup([sys.argv[0], *options, *flags, *dirs], test_one_input)
    atheris.Fuzz()
