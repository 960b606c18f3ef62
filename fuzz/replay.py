"""Feed files to a harness without fuzzing: reproduce a crash, or check the corpus and the regressions.

    python -m fuzz.replay HARNESS FILE...       # one line per file; a traceback and exit 1 on a failure
    python -m fuzz.replay --all                 # every harness over its corpus and fuzz/regressions/<harness>

TensorFlow and Keras are made unimportable first, as when fuzzing. A file passes when the harness
returns (ckptdoctor's own errors are caught inside it) and the process's peak RSS stays within libFuzzer's
limit (``-rss_limit_mb``); anything else it raises, or a peak over the limit, is a failure.
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
import traceback
from pathlib import Path

from fuzz.common import CORPUS, HARNESSES, REGRESSIONS, RSS_LIMIT_MB, without_tensorflow


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def replay(name: str, files: list[Path]) -> int:
    """Run harness ``name`` on each file; the number of failures."""
    harness = importlib.import_module(f"fuzz.{name}")
    failures = 0
    for path in files:
        start, before = time.monotonic(), _peak_mb()
        try:
            harness.test_one_input(path.read_bytes())
            peak = _peak_mb()  # the process's peak only grows: the file that takes it over the limit fails
            over = peak > RSS_LIMIT_MB >= before
            outcome = f"FAILED: peak RSS {peak} MiB, over {RSS_LIMIT_MB} MiB" if over else "ok"
            failures += outcome != "ok"
        except Exception:  # noqa: BLE001  (the point: anything escaping the harness is reported)
            failures += 1
            outcome = "FAILED\n" + traceback.format_exc()
        print(f"{name} {path.name}: {outcome} ({time.monotonic() - start:.2f} s)", flush=True)
    return failures


def main(argv: list[str]) -> int:
    without_tensorflow()
    if argv[:1] == ["--all"]:
        failures = 0
        for name in HARNESSES:
            files = sorted(p for d in (CORPUS / name, REGRESSIONS / name) if d.is_dir() for p in d.iterdir())
            failures += replay(name, [p for p in files if p.is_file()])
        return 1 if failures else 0
    if len(argv) < 2 or argv[0] not in HARNESSES:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if replay(argv[0], [Path(a) for a in argv[1:]]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
