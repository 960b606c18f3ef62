"""Run every harness for a bounded time and print what each did: ``make fuzz`` calls this.

    python -m fuzz.run_all [--seconds 30] [--seed N] [HARNESS ...]

Each harness runs as its own process (``python -m fuzz.<name>``) for ``--seconds`` seconds, with
``-timeout=5`` and ``-rss_limit_mb=512``, growing its corpus in ``fuzz/work/<name>/corpus`` from the
seeds in ``fuzz/corpus/<name>``; its log is ``fuzz/work/<name>/fuzz.log``. One line per harness:
executions, coverage (libFuzzer's ``cov``: instrumented edges reached; ``ft``: features), corpus size,
and the outcome. Exit code 1 when any harness found a crash, a timeout or a memory overrun; the
input that did it is in ``fuzz/work/<name>/artifacts/`` (replay it with ``python -m fuzz.replay``).

``--seed N`` (``FUZZ_SEED``) fixes libFuzzer's random seed and Python's hash seed: runs from the same
corpus then start with the same inputs (CI uses it; without it each run explores elsewhere, which is what
``make fuzz`` is for). They diverge after a while (two ``data`` runs: after 9,400 inputs), so this narrows
what a CI run can meet; it does not make it repeat exactly.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from fuzz.common import CORPUS, HARNESSES, HERE, WORK

_STATUS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_SUMMARY = re.compile(r"SUMMARY: libFuzzer: (.+)|ERROR: libFuzzer: (.+)|=== (Uncaught Python exception): ===")
_RUNS = re.compile(r"^#(\d+)\s", re.M)


def run(name: str, seconds: int, seed: int | None = None) -> dict:
    """Fuzz one harness (with libFuzzer's ``-seed``, if given); its figures and outcome."""
    work = WORK / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    log = work / "fuzz.log"
    cmd = [sys.executable, "-m", f"fuzz.{name}", f"-max_total_time={seconds}", str(work / "corpus"), str(CORPUS / name)]
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if seed is not None:
        cmd.insert(3, f"-seed={seed}")
        env["PYTHONHASHSEED"] = str(seed)
    start = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent).returncode
    text = log.read_text(errors="replace")
    status = _STATUS.findall(text)
    execs = _EXECS.findall(text)
    artifact = _ARTIFACT.findall(text)
    summary = [a or b or c for a, b, c in _SUMMARY.findall(text)]
    if not execs:  # a crash stops libFuzzer before its final statistics: its last status line counts
        execs = _RUNS.findall(text)
    return {
        "name": name,
        "code": code,
        "seconds": time.monotonic() - start,
        "execs": int(execs[-1]) if execs else 0,
        "cov": int(status[-1][0]) if status else 0,
        "ft": int(status[-1][1]) if status else 0,
        "corpus": int(status[-1][2]) if status else 0,
        "outcome": "ok" if code == 0 else (summary[0] if summary else f"exit {code}"),
        "artifact": artifact[-1] if artifact else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "30")))
    seed = os.environ.get("FUZZ_SEED") or None
    ap.add_argument("--seed", type=int, default=int(seed) if seed else None, help="libFuzzer's -seed (default: random)")
    ap.add_argument("harnesses", nargs="*", metavar="HARNESS", help=f"some of {', '.join(HARNESSES)} (default: all)")
    args = ap.parse_args()
    unknown = set(args.harnesses) - set(HARNESSES)
    if unknown:
        ap.error(f"no harness {', '.join(sorted(unknown))}; the harnesses are {', '.join(HARNESSES)}")
    print(f"{'harness':14} {'seconds':>7} {'executions':>10} {'cov':>6} {'ft':>6} {'corpus':>6}  outcome", flush=True)
    failed = False
    for name in args.harnesses or HARNESSES:
        r = run(name, args.seconds, args.seed)
        failed |= r["code"] != 0
        line = (
            f"{r['name']:14} {r['seconds']:7.0f} {r['execs']:10d} {r['cov']:6d} {r['ft']:6d} {r['corpus']:6d}  "
            f"{r['outcome']}" + (f" ({r['artifact']})" if r["artifact"] else "")
        )
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
