"""Run one command as a child, print its wall time and peak memory as one JSON line.

    python benchmarks/measure.py [--stdout FILE] [--stderr FILE] -- CMD [ARG...]

Each measured command gets its own wrapper process, so ``getrusage(RUSAGE_CHILDREN)``
here describes exactly one child (the high-water mark of the child and whatever it
waited for) and children of different runs never mix. Wall time is taken here, around
the child alone: the wrapper's own start-up is not counted.

Besides ``ru_maxrss`` (exact, the kernel's high-water mark) a thread samples
``/proc/PID/status`` every 20 ms for the split of resident memory into anonymous
memory and mapped file pages (approximate: short peaks can be missed).

Kept to the standard library on purpose: it starts in a few milliseconds.
"""

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time

_SAMPLE_EVERY = 0.02
_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _sample(pid: int, peaks: dict, stop: threading.Event) -> None:
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in _FIELDS:
                        kib = int(rest.split()[0])
                        if kib > peaks.get(key, 0):
                            peaks[key] = kib
        except (OSError, ValueError, IndexError):
            return
        stop.wait(_SAMPLE_EVERY)


def main(argv: list[str]) -> int:
    stdout_path = stderr_path = None
    while argv and argv[0] != "--":
        flag = argv.pop(0)
        if flag == "--stdout":
            stdout_path = argv.pop(0)
        elif flag == "--stderr":
            stderr_path = argv.pop(0)
        else:
            print(f"measure.py: unknown option {flag!r}", file=sys.stderr)
            return 2
    if not argv or len(argv) < 2:
        print("usage: measure.py [--stdout FILE] [--stderr FILE] -- CMD [ARG...]", file=sys.stderr)
        return 2
    cmd = argv[1:]
    peaks: dict = {}
    stop = threading.Event()
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(stdout_path or os.devnull, "wb"))
        err = files.enter_context(open(stderr_path, "wb")) if stderr_path else None
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=err)
        sampler = threading.Thread(target=_sample, args=(child.pid, peaks, stop), daemon=True)
        sampler.start()
        rc = child.wait()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "rc": rc,
                "wall_s": wall,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
                "maxrss_kib": usage.ru_maxrss,  # Linux: KiB
                "sampled_kib": {k: peaks.get(k) for k in _FIELDS},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
