"""Time and peak memory of ``ckptdoctor`` on files that are cheap to make and costly to read.

    python benchmarks/hostile.py [--timeout 60] [--work DIR] [CASE...]

Builds every case of ``tests/hostile_builders.py`` (a few MB each), runs the real CLI on each as
a fresh process and prints one row per case: exit code, wall time, peak RSS (``wait4``'s
``ru_maxrss`` of that child) and the first line of stderr. A case still running at ``--timeout``
seconds is killed and shown as such. The tests (``tests/test_hostile.py``) check the outcome and
the memory; times are only measured here (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import hostile_builders as hb  # noqa: E402

#: case -> (file name, the command's arguments after ``ckptdoctor``; {f} is the file, {ckpt} a real checkpoint).
COMMANDS = {
    "config.json inflating to 3 GiB": ("config-bomb.keras", ["inspect", "{f}"]),
    "model.weights.h5 inflating to 3 GiB of zeros": ("weights-bomb.keras", ["inspect", "{f}"]),
    "the same, starting with a real HDF5 file": ("weights-bomb-hdf5-start.keras", ["inspect", "{f}"]),
    "config.json declaring 2 bytes, inflating to 3 GiB": ("lying-size.keras", ["inspect", "{f}"]),
    ".weights.h5 declaring 4 TiB, storing nothing (chunked)": ("unstored.weights.h5", ["inspect", "{f}"]),
    ".weights.h5 declaring 4 TiB, storing nothing (contiguous)": ("unstored-contiguous.weights.h5", ["inspect", "{f}"]),
    "config.json nested 200,000 deep": ("deep-config.keras", ["inspect", "{f}"]),
    ".npy header claiming 2^40 rows": ("rows-2e40.npy", ["inspect", "{ckpt}", "--data", "{f}"]),
    ".npz member inflating to 3 GiB": ("bomb.npz", ["repair", "{ckpt}", "--data", "{f}", "--dry-run"]),
    ".h5 data declaring 2^38 rows, storing nothing":
        ("unstored-data.h5", ["repair", "{ckpt}", "--data", "{f}:x", "--dry-run"]),
    "saved_model.pb nested 2,000 deep": ("deep-saved-model", ["inspect", "{f}"]),
    "HDF5 global heap with a free-space object of size 0": ("heap-loop.weights.h5", ["inspect", "{f}"]),
    "HDF5 string attribute declaring 1.25 GiB": ("vlen-1GiB.weights.h5", ["inspect", "{f}"]),
    "config declaring a 16,000 x 16,000 Dense layer (Keras 3)": ("big-layer.keras", ["inspect", "{f}"]),
    "the same in a tf-keras .h5": ("big-layer-tfkeras.h5", ["inspect", "{f}"]),
    "config of 50,000 kinds of layers (Keras 3)": ("many-layers.keras", ["inspect", "{f}"]),
    "the 16,000 x 16,000 layer with --graph=False (no Keras check)":
        ("big-layer.keras", ["inspect", "{f}", "--graph=False"]),
    "the 50,000 kinds with --graph=False (no Keras check)": ("many-layers.keras", ["inspect", "{f}", "--graph=False"]),
}  # fmt: skip


def run(argv: list[str], timeout: float) -> tuple[int | str, float, int, str]:
    """(exit code or "killed", seconds, peak RSS in bytes, first stderr line) of one fresh process."""
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        first = next((line for line in err.read().decode(errors="replace").splitlines() if line.strip()), "")
    return ("killed" if killed else proc.returncode), seconds, usage.ru_maxrss * 1024, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--work", default=None, help="where the files go (default: a temporary folder)")
    ap.add_argument("cases", nargs="*", help="substrings of case names (default: all)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="ckptdoctor-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = ROOT / "sample_ckpts" / "seed" / "model.ckpt"
    cli = [sys.executable, "-m", "ckptdoctor"]
    env_note = os.environ.get("PYTHONPATH", "")
    print(f"ckptdoctor from {env_note or 'the installed package'}; files in {work}; timeout {args.timeout:g} s\n")
    print("| case | exit | time | peak RSS | stderr |\n|---|---|---|---|---|")
    for case, (name, template) in COMMANDS.items():
        if args.cases and not any(c in case for c in args.cases):
            continue
        path = work / name
        if not path.exists():
            hb.CASES[name](path)
        argv = cli + [a.format(f=path, ckpt=ckpt) for a in template]
        code, seconds, rss, line = run(argv, args.timeout)
        shown = line if len(line) < 110 else line[:107] + "..."
        print(f"| {case} | {code} | {seconds:.2f} s | {rss / 2**20:.0f} MiB | {shown.replace('|', '/')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
