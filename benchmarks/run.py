"""Run every ckptdoctor benchmark and write BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py            # full run (~30 min), writes BENCHMARKS.md
    .venv/bin/python benchmarks/run.py --only keras   # section C only; A and B of BENCHMARKS.md stay as they are
    .venv/bin/python benchmarks/run.py --only scale   # section D only (100,000 tensors, both cores), ~10 min
    .venv/bin/python benchmarks/run.py --quick    # small sizes, a smoke check (~1 min)

Every timed command is a fresh process started through ``benchmarks/measure.py``
(wall time around the child, the child's own peak RSS from ``RUSAGE_CHILDREN``).
Alternatives are measured in the same run, interleaved (the order rotates each
repetition), after one untimed warm-up run of each program, so caches are warm
for both and machine noise falls on both. Every figure is a median with the
min-max of the repetitions; comparisons are ratios of medians, with the range of
the per-repetition (paired) ratios.

Inputs are built by ``build_ckpts.py`` (TensorFlow, eager), ``build_convnet.py``
(TensorFlow, graph mode) and ``build_keras.py`` (Keras 3, section C) under
``bench_work/`` and deleted at the end (``--keep`` keeps them). ``--only keras``
runs section C alone and replaces only that section of the output file. A quick run writes
``bench_work/BENCHMARKS-quick.md`` unless
``--output`` says otherwise, so it never overwrites the real results.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
CKPTDOCTOR = str(Path(PY).with_name("ckptdoctor"))
MEASURE = str(HERE / "measure.py")
MIB = 1024 * 1024
GIB = 1024 * MIB

SMALL_SHAPE = [768, 819]  # float32: 2.40 MiB
TINY_SHAPE = [16, 16]  # float32: 1 KiB
GIB_ROWS = 16384  # rows of 16384 float32: 1 GiB
SAMPLE_BYTES_8 = 8 * 8 * 3 * 4


@dataclass(frozen=True)
class Config:
    name: str
    main_small: int  # 2.4 MiB tensors of the main checkpoint
    main_big_rows: int  # rows of the big tensor (16384 = 1 GiB)
    byte_fractions: tuple  # of the main checkpoint, for the growth table (1 is the main one)
    counts: tuple  # tensors of 1 KiB, for the growth table
    growth_tf: bool  # time TensorFlow in the growth tables too
    reps_list: int
    reps_stats: int
    reps_growth: int
    warmup: bool
    train_steps: int
    b1_samples: int  # samples for the repair-vs-forward comparison
    b1_size: int  # their images: b1_size x b1_size x 3
    b1_large_samples: int  # a second, larger data set for the same comparison (0: none)
    reps_repair: int
    reps_repair_large: int
    reps_inproc: int
    reps_loops: int  # alternations of the two loops inside one session (loops_inproc.py)
    b2_small_bytes: int  # 0: the B1 data (8x8) are the small data set, and B1's repair runs are reused
    b2_big_bytes: int
    reps_mem_small: int
    reps_mem_big: int
    c1_samples: int  # C: Keras repair vs load + one forward pass, 16x16x3 images
    c2_factor: int  # C2: the big data set has this many times C1's samples
    reps_keras: int
    reps_keras_mem: int
    batch_size: int = 256


FULL = Config(
    "full",
    400,
    GIB_ROWS,
    (0.125, 0.25, 0.5, 1.0),
    (100, 1000, 10000),
    True,
    reps_list=7,
    reps_stats=5,
    reps_growth=3,
    warmup=True,
    train_steps=30,
    b1_samples=10000,
    b1_size=16,
    b1_large_samples=40000,
    reps_repair=5,
    reps_repair_large=2,
    reps_inproc=3,
    reps_loops=5,
    b2_small_bytes=200_000_000,
    b2_big_bytes=2_000_000_000,
    reps_mem_small=2,
    reps_mem_big=2,
    c1_samples=10000,
    c2_factor=10,
    reps_keras=5,
    reps_keras_mem=2,
)
QUICK = Config(
    "quick",
    25,
    1024,
    (0.5, 1.0),
    (100, 1000),
    False,
    reps_list=1,
    reps_stats=1,
    reps_growth=1,
    warmup=False,
    train_steps=5,
    b1_samples=2600,
    b1_size=8,
    b1_large_samples=0,
    reps_repair=1,
    reps_repair_large=0,
    reps_inproc=1,
    reps_loops=1,
    b2_small_bytes=0,
    b2_big_bytes=20_000_000,
    reps_mem_small=1,
    reps_mem_big=1,
    c1_samples=1000,
    c2_factor=10,
    reps_keras=1,
    reps_keras_mem=1,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- running


class BenchError(RuntimeError):
    pass


@dataclass
class Run:
    wall: float
    cpu: float
    maxrss: int  # bytes
    anon: int | None
    file: int | None


@dataclass
class Series:
    runs: list = field(default_factory=list)

    def values(self, attr: str) -> list:
        return [getattr(r, attr) for r in self.runs]

    def median(self, attr: str = "wall") -> float:
        return statistics.median(self.values(attr))

    def range(self, attr: str = "wall") -> tuple:
        vals = self.values(attr)
        return min(vals), max(vals)


class Runner:
    def __init__(self, work: Path):
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def measure(self, cmd: list, ok_codes=(0,), stdout: str | None = None) -> Run:
        """One fresh process of ``cmd`` through measure.py."""
        self.count += 1
        err = self.logs / f"run{self.count:04d}.stderr"
        wrapper = [PY, MEASURE, "--stderr", str(err)]
        if stdout:
            wrapper += ["--stdout", stdout]
        proc = subprocess.run(
            wrapper + ["--"] + [str(c) for c in cmd], capture_output=True, text=True, timeout=3600, cwd=self.work
        )
        if proc.returncode != 0:
            raise BenchError(f"measure.py failed ({proc.returncode}): {proc.stderr.strip()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["rc"] not in ok_codes:
            tail = err.read_text(errors="replace").strip().splitlines()[-15:]
            raise BenchError(f"exit code {result['rc']} from {' '.join(map(str, cmd))}:\n" + "\n".join(tail))
        sampled = result["sampled_kib"]
        return Run(
            result["wall_s"],
            result["user_s"] + result["sys_s"],
            result["maxrss_kib"] * 1024,
            None if sampled.get("RssAnon") is None else sampled["RssAnon"] * 1024,
            None if sampled.get("RssFile") is None else sampled["RssFile"] * 1024,
        )

    def compare(self, commands: dict, reps: int, warmup: bool, ok_codes=(0,), what: str = "") -> dict:
        """Interleaved repetitions of several commands; the order rotates every repetition."""
        labels = list(commands)
        if warmup:
            for label in labels:
                log(f"warm-up {what} {label}")
                self.measure(commands[label], ok_codes)
        out = {label: Series() for label in labels}
        for rep in range(reps):
            order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
            for label in order:
                run = self.measure(commands[label], ok_codes)
                out[label].runs.append(run)
                log(f"{what} {label} rep {rep + 1}/{reps}: {run.wall:.2f} s, {run.maxrss / MIB:.0f} MiB")
        return out


# --------------------------------------------------------------------------- formatting


def fmt_s(series: Series, attr: str = "wall") -> str:
    lo, hi = series.range(attr)
    if len(series.runs) == 1:
        return f"{series.median(attr):.2f}"
    return f"{series.median(attr):.2f} ({lo:.2f}–{hi:.2f})"


def fmt_mib(series: Series, attr: str = "maxrss") -> str:
    vals = [v for v in series.values(attr) if v is not None]
    if not vals:
        return "n/a"
    med, lo, hi = statistics.median(vals), min(vals), max(vals)
    if len(vals) == 1 or hi - lo < MIB:
        return f"{med / MIB:.0f}"
    return f"{med / MIB:.0f} ({lo / MIB:.0f}–{hi / MIB:.0f})"


def ratio(slow: Series, fast: Series, attr: str = "wall") -> float:
    return slow.median(attr) / fast.median(attr)


def fmt_ratio(slow: Series, fast: Series, attr: str = "wall") -> str:
    r = ratio(slow, fast, attr)
    pairs = [a / b for a, b in zip(slow.values(attr), fast.values(attr))]
    if len(pairs) > 1:
        return f"{r:.2f}x (paired {min(pairs):.2f}–{max(pairs):.2f})"
    return f"{r:.2f}x"


def table(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "holds" if ok else "**MISSED**"


# --------------------------------------------------------------------------- machine


def machine_facts() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            total = next((line.split()[1] for line in f if line.startswith("MemTotal")), None)
        if total is not None:
            mem = f"{int(total) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "ckptdoctor")
    dirty_files = ", ".join(line[3:] for line in dirty.splitlines())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "tensorflow": version("tensorflow"),
        "tf-keras": version("tf-keras"),
        "google-crc32c": version("google-crc32c"),
        "ckptdoctor": version("ckptdoctor"),
        "commit": (git("rev-parse", "--short", "HEAD") or "unknown")
        + (f" + uncommitted changes in {dirty_files}" if dirty else ""),
        "package fingerprint (sha256 of ckptdoctor/**/*.py)": package_fingerprint(),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "unset"),
    }


def package_fingerprint(root: Path = ROOT) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in sorted((root / "ckptdoctor").rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def snapshot_package(work: Path) -> Path:
    """Copy the package so that edits made by others during the run do not mix versions.

    Children import it through PYTHONPATH and run with the working folder as their
    current directory (the repository's own folder would come first on sys.path).
    """
    dest = work / "pkg"
    shutil.copytree(ROOT / "ckptdoctor", dest / "ckptdoctor", ignore=shutil.ignore_patterns("__pycache__"))
    # Bytecode as an installed package has it (pip compiles it; TensorFlow's is in site-packages): with
    # PYTHONDONTWRITEBYTECODE set, as on our shared machine, every child would compile ckptdoctor's
    # ~100 modules again (0.1 s of a 0.4 s listing). The warm-up runs write it under work/pyc.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pyc")
    # The Keras expectation cache (formats/keras/expect_cache.py) of this run alone: the user's own cache
    # never shapes the figures; the warm-up fills it, as a user's first inspect of a model does.
    os.environ["CKPTDOCTOR_CACHE_DIR"] = str(work / "cache")
    os.environ["PYTHONPATH"] = str(dest) + (
        os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
    )
    found = subprocess.run(
        [PY, "-c", "import ckptdoctor; print(ckptdoctor.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
    ).stdout.strip()
    if not found.startswith(str(dest)):
        raise BenchError(f"children import ckptdoctor from {found}, not from the snapshot {dest}")
    return dest


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- profiles


def profile_run(args: list, out: Path) -> None:
    cmd = [PY, "-m", "cProfile", "-o", str(out), "-m", "ckptdoctor"] + [str(a) for a in args]
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=3600, cwd=out.parent
    )
    if proc.returncode not in (0, 1):
        raise BenchError(f"profiling {' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")


def _func_name(key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    path = Path(filename)
    parts = path.parts
    if "ckptdoctor" in parts:
        short = "/".join(parts[parts.index("ckptdoctor") :])
    elif "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    else:
        short = path.name
    return f"{short}:{line} {name}"


# Phases of an inspect run, found by function (the largest cumulative time among matches).
_PHASES = [
    ("whole process (profiled)", None),
    ("imports", lambda f, n: n == "_find_and_load"),
    ("inspect() (library call)", lambda f, n: f.endswith("ckptdoctor/pipelines/inspect.py") and n == "inspect"),
    ("  open: read + decode the index", lambda f, n: f.endswith("readers/bundle.py") and n == "__init__"),
    ("  listing (object graph, entries)", lambda f, n: f.endswith("readers/bundle.py") and n == "entries"),
    (
        "  statistics (compute_stats, incl. reading)",
        lambda f, n: f.endswith("ckptdoctor/analysis/stats.py") and n == "compute_stats",
    ),
    ("  reading chunks (copy + CRC)", lambda f, n: f.endswith("readers/bundle.py") and n == "_iter_numeric"),
    ("report to dict", lambda f, n: n == "to_dict" and "ckptdoctor" in f),
    ("JSON rendering", lambda f, n: f.endswith("ckptdoctor/reports/table.py") and n == "to_json"),
]


def summarize_profile(path: Path, top: int = 10, phases: list | None = None) -> tuple[str, list]:
    st = pstats.Stats(str(path))
    total = st.total_tt
    phase_rows = []
    for label, match in phases or _PHASES:
        if match is None:
            phase_rows.append([label, f"{total:.3f}", "100%"])
            continue
        found = [v[3] for (f, _l, n), v in st.stats.items() if match(f, n)]
        if found:
            cum = max(found)
            phase_rows.append([label, f"{cum:.3f}", f"{100 * cum / total:.0f}%"])
    own = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    own_rows = [
        [f"`{_func_name(k)}`", v[1], f"{v[2]:.3f}", f"{100 * v[2] / total:.0f}%", f"{v[3]:.3f}"] for k, v in own
    ]
    text = (
        table(["phase", "cumulative s", "share"], phase_rows)
        + "\n\nTop functions by own time:\n\n"
        + table(["function", "calls", "own s", "share", "cumulative s"], own_rows)
    )
    return text, own_rows


# --------------------------------------------------------------------------- the benchmarks


def human_gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= 0.1 * GIB else f"{n / MIB:.1f} MiB"


def reader_specs(cfg: Config, work: Path) -> tuple[dict, dict]:
    main = {
        "prefix": str(work / "ckpt" / "main" / "ckpt"),
        "small": cfg.main_small,
        "small_shape": SMALL_SHAPE,
        "big_rows": cfg.main_big_rows,
    }
    by_fraction = {}
    for f in cfg.byte_fractions:
        if f == 1.0:
            by_fraction[f] = main
        else:
            by_fraction[f] = {
                "prefix": str(work / "ckpt" / f"bytes{f:g}" / "ckpt"),
                "small": round(cfg.main_small * f),
                "small_shape": SMALL_SHAPE,
                "big_rows": round(cfg.main_big_rows * f),
            }
    by_count = {
        n: {"prefix": str(work / "ckpt" / f"n{n}" / "ckpt"), "small": n, "small_shape": TINY_SHAPE, "big_rows": 0}
        for n in cfg.counts
    }
    return by_fraction, by_count


def list_cmds(prefix: str) -> dict:
    return {
        "ckptdoctor": [CKPTDOCTOR, "inspect", prefix, "--stats=False", "--graph=False", "--format", "json"],
        "tensorflow": [PY, "-c", f"import tensorflow as tf; tf.train.list_variables({prefix!r})"],
    }


def stats_cmds(prefix: str) -> dict:
    return {
        "ckptdoctor": [CKPTDOCTOR, "inspect", prefix, "--graph=False", "--format", "json"],
        "tensorflow": [PY, str(HERE / "tf_stats.py"), prefix],
    }


INSPECT_CODES = (0, 1)  # 1: an error-level finding, still a complete run


def bench_reader(cfg: Config, runner: Runner, work: Path, built: dict) -> dict:
    by_fraction, by_count = reader_specs(cfg, work)
    main = by_fraction[1.0]["prefix"]
    res: dict = {"main": built[main], "built": built}

    log("A1 listing")
    floor = [
        PY,
        "-c",
        "import fire, ckptdoctor.cli, ckptdoctor.pipelines.inspect, ckptdoctor.reports.table, "
        "ckptdoctor.readers.bundle",
    ]
    res["list"] = runner.compare(dict(list_cmds(main), floor=floor), cfg.reps_list, cfg.warmup, INSPECT_CODES, "list")
    log("A2 statistics")
    res["stats"] = runner.compare(stats_cmds(main), cfg.reps_stats, cfg.warmup, INSPECT_CODES, "stats")

    log("A growth: number of tensors")
    res["by_count"] = {}
    for n, spec in by_count.items():
        p = spec["prefix"]
        lc, sc = list_cmds(p), stats_cmds(p)
        if not cfg.growth_tf:
            lc.pop("tensorflow"), sc.pop("tensorflow")
        res["by_count"][n] = {
            "list": runner.compare(lc, cfg.reps_growth, False, INSPECT_CODES, f"list n={n}"),
            "stats": runner.compare(sc, cfg.reps_growth, False, INSPECT_CODES, f"stats n={n}"),
            "index_bytes": os.path.getsize(p + ".index"),
        }
    log("A growth: bytes")
    res["by_bytes"] = {}
    for f, spec in by_fraction.items():
        if f == 1.0:
            res["by_bytes"][f] = {
                "list": res["list"],
                "stats": res["stats"],
                "bytes": built[main]["bytes"],
                "tensors": built[main]["tensors"],
            }
            continue
        p = spec["prefix"]
        lc, sc = list_cmds(p), stats_cmds(p)
        if not cfg.growth_tf:
            lc.pop("tensorflow"), sc.pop("tensorflow")
        res["by_bytes"][f] = {
            "list": runner.compare(lc, cfg.reps_growth, False, INSPECT_CODES, f"list {f:g}"),
            "stats": runner.compare(sc, cfg.reps_growth, False, INSPECT_CODES, f"stats {f:g}"),
            "bytes": built[p]["bytes"],
            "tensors": built[p]["tensors"],
        }

    log("A profiles")
    prof = work / "profiles"
    prof.mkdir(exist_ok=True)
    largest = by_count[max(by_count)]["prefix"]
    profiles = {
        f"listing, {max(by_count)} tensors of 1 KiB": [
            "inspect",
            largest,
            "--stats=False",
            "--graph=False",
            "--format",
            "json",
        ],
        "listing, main checkpoint": ["inspect", main, "--stats=False", "--graph=False", "--format", "json"],
        "statistics, main checkpoint": ["inspect", main, "--graph=False", "--format", "json"],
    }
    res["profiles"] = {}
    for i, (label, args) in enumerate(profiles.items()):
        out = prof / f"profile{i}.prof"
        profile_run(args, out)
        res["profiles"][label] = summarize_profile(out)
    return res


def bench_repair(cfg: Config, runner: Runner, work: Path, net: dict) -> dict:
    prefix = net["prefix"]
    data = net["data"]
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    bs = str(cfg.batch_size)
    timings = work / "timings"
    timings.mkdir(exist_ok=True)
    res: dict = {"net": net}

    def repair_cmd(npy: str, tag: str) -> list:
        return [
            CKPTDOCTOR,
            "repair",
            prefix,
            "--data",
            npy,
            "--batch-size",
            bs,
            "--output",
            str(out_dir / f"{tag}.ckpt"),
            "--force",
        ]

    counter = {"n": 0}

    def forward_cmd(npy: str) -> list:
        # A fresh timings file per run: the loop time of each run is kept.
        counter["n"] += 1
        return [
            PY,
            str(HERE / "forward.py"),
            prefix,
            npy,
            "--batch-size",
            bs,
            "--timings",
            str(timings / f"forward-{Path(npy).stem}-{counter['n']}.json"),
        ]

    def compare_fresh(npy: str, tag: str, reps: int, warmup: bool) -> tuple[dict, list]:
        before = set(timings.glob(f"forward-{Path(npy).stem}-*.json"))
        cmds = {"ckptdoctor repair": repair_cmd(npy, tag), "forward pass": None}
        labels = list(cmds)
        out = {label: Series() for label in labels}
        if warmup:
            for label in labels:
                log(f"warm-up {tag} {label}")
                runner.measure(cmds[label] or forward_cmd(npy))
            before = set(timings.glob(f"forward-{Path(npy).stem}-*.json"))
        for rep in range(reps):
            order = labels[rep % 2 :] + labels[: rep % 2]
            for label in order:
                run = runner.measure(cmds[label] or forward_cmd(npy))
                out[label].runs.append(run)
                log(f"{tag} {label} rep {rep + 1}/{reps}: {run.wall:.2f} s, {run.maxrss / MIB:.0f} MiB")
        phases = [
            json.loads(p.read_text()) for p in sorted(set(timings.glob(f"forward-{Path(npy).stem}-*.json")) - before)
        ]
        return out, phases

    log("B1 repair vs forward pass")
    res["b1"], res["b1_forward_phases"] = compare_fresh(data["b1"]["path"], "b1", cfg.reps_repair, cfg.warmup)
    if cfg.b1_large_samples:
        res["b1_large"], res["b1_large_forward_phases"] = compare_fresh(
            data["b1_large"]["path"], "b1-large", cfg.reps_repair_large, False
        )
    # The in-process figures reach into the package's internals: if they moved, say so and go on.
    log("B1 in-process repair phases")
    res["inproc"] = []
    try:
        for i in range(cfg.reps_inproc):
            t = timings / f"repair-inproc-{i}.json"
            runner.measure(
                [
                    PY,
                    str(HERE / "repair_inproc.py"),
                    prefix,
                    data["b1"]["path"],
                    str(out_dir / "inproc.ckpt"),
                    "--batch-size",
                    bs,
                    "--timings",
                    str(t),
                ]
            )
            res["inproc"].append(json.loads(t.read_text()))
            log(f"in-process repair {i + 1}/{cfg.reps_inproc}: {res['inproc'][-1]}")
    except BenchError as e:
        res["inproc_error"] = str(e).splitlines()[-1]
        log(f"in-process repair phases unavailable: {e}")

    log("B1 core loops in one session")
    t = timings / "loops.json"
    try:
        runner.measure(
            [
                PY,
                str(HERE / "loops_inproc.py"),
                prefix,
                data["b1"]["path"],
                "--batch-size",
                bs,
                "--reps",
                str(cfg.reps_loops),
                "--timings",
                str(t),
            ]
        )
        res["loops"] = json.loads(t.read_text())
        log(f"loops: {res['loops']['times']}")
    except BenchError as e:
        res["loops_error"] = str(e).splitlines()[-1]
        log(f"core loops unavailable: {e}")

    log("B2 memory: small vs big data")
    res["b2"] = {}
    if "b2_small" not in data:  # quick: B1's data are 8x8 too; its repair runs are the small runs
        data["b2_small"] = data["b1"]
        res["b2"]["b2_small"] = res["b1"]["ckptdoctor repair"]
    for key, reps in (("b2_small", cfg.reps_mem_small), ("b2_big", cfg.reps_mem_big)):
        if key not in res["b2"]:
            res["b2"][key] = runner.compare({key: repair_cmd(data[key]["path"], key)}, reps, False, (0,), "B2")[key]
    return res


# Phases of a Keras repair run (cProfile), found by function as in _PHASES. A Keras file goes through the
# one repair pipeline (pipelines/repair.py), its adapter (formats/keras) and the Keras runner (runtime/).
_KERAS_PHASES = [
    ("whole process (profiled)", None),
    ("imports", lambda f, n: n == "_find_and_load"),
    ("repair() (library call)", lambda f, n: f.endswith("ckptdoctor/pipelines/repair.py") and n == "repair"),
    (
        "  load the model (Keras)",
        lambda f, n: f.endswith("ckptdoctor/runtime/keras_model.py") and n == "load_keras_model",
    ),
    (
        "  data check (NaN/Inf scan)",
        lambda f, n: f.endswith("ckptdoctor/pipelines/repair.py") and n == "_sample_count",
    ),
    (
        "  batches + moments + gap passes",
        lambda f, n: f.endswith("ckptdoctor/pipelines/measure.py") and n == "measure",
    ),
    (
        "    per-batch moments in float64 (numpy)",
        lambda f, n: f.endswith("ckptdoctor/runtime/keras_runner.py") and n == "_moments",
    ),
    ("    pooling (PooledMoments.add)", lambda f, n: f.endswith("ckptdoctor/analysis/estimator.py") and n == "add"),
    (
        "  copy with the new statistics (h5py)",
        lambda f, n: f.endswith("ckptdoctor/formats/keras/store.py") and n == "_copy_with",
    ),
    (
        "  verification (read back, compare)",
        lambda f, n: f.endswith("ckptdoctor/formats/keras/store.py") and n == "_verify",
    ),
]


def build_keras_inputs(cfg: Config, work: Path) -> dict:
    cmd = [
        PY,
        str(HERE / "build_keras.py"),
        str(work / "keras"),
        "--steps",
        str(cfg.train_steps),
        "--data",
        f"c1:{cfg.c1_samples}:16",
        "--data",
        f"c2_big:{cfg.c1_samples * cfg.c2_factor}:16",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, timeout=7200)
    if proc.returncode != 0:
        raise BenchError("building the Keras model failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-20:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_keras(cfg: Config, runner: Runner, work: Path, net: dict) -> dict:
    """C: the Keras repair (whole CLI) vs loading the .keras and one training-mode forward pass."""
    model, data = net["path"], net["data"]
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    timings = work / "timings"
    timings.mkdir(exist_ok=True)
    bs = str(cfg.batch_size)
    res: dict = {"net": net}

    def repair_cmd(npy: str, tag: str, dry: bool = False) -> list:
        return [CKPTDOCTOR, "repair", model, npy, "--batch-size", bs] + (
            ["--dry-run"] if dry else ["--output", str(out_dir / f"{tag}.keras"), "--force"]
        )

    counter = {"n": 0}

    def forward_cmd(npy: str) -> list:
        counter["n"] += 1
        return [
            PY,
            str(HERE / "keras_forward.py"),
            model,
            npy,
            "--batch-size",
            bs,
            "--timings",
            str(timings / f"keras-forward-{counter['n']}.json"),
        ]

    c1 = data["c1"]["path"]
    cmds = {
        "ckptdoctor repair": repair_cmd(c1, "c1"),
        "ckptdoctor repair --dry-run": repair_cmd(c1, "c1", True),
        "load + forward pass": None,
    }
    labels = list(cmds)
    log("C1 Keras repair vs load + forward pass")
    if cfg.warmup:
        for label in labels:
            log(f"warm-up C1 {label}")
            runner.measure(cmds[label] or forward_cmd(c1))
    first_timed = counter["n"] + 1
    out = {label: Series() for label in labels}
    for rep in range(cfg.reps_keras):
        order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
        for label in order:
            run = runner.measure(cmds[label] or forward_cmd(c1))
            out[label].runs.append(run)
            log(f"C1 {label} rep {rep + 1}/{cfg.reps_keras}: {run.wall:.2f} s, {run.maxrss / MIB:.0f} MiB")
    res["c1"] = out
    res["c1_forward_phases"] = [
        json.loads((timings / f"keras-forward-{i}.json").read_text()) for i in range(first_timed, counter["n"] + 1)
    ]

    log("C2 memory: 10x the data")
    big = data["c2_big"]["path"]
    res["c2_big"] = runner.compare({"c2_big": repair_cmd(big, "c2")}, cfg.reps_keras_mem, False, (0,), "C2")["c2_big"]

    log("C profile of the repair")
    prof = work / "profiles"
    prof.mkdir(exist_ok=True)
    try:
        path = prof / "keras-repair.prof"
        profile_run(["repair", model, c1, "--batch-size", bs, "--output", str(out_dir / "prof.keras"), "--force"], path)
        res["profile"] = summarize_profile(path, phases=_KERAS_PHASES)[0]
    except BenchError as e:
        res["profile_error"] = str(e).splitlines()[-1]
    return res


def keras_goals(c: dict) -> list:
    """Rows of C's goals: (goal, measured, verdict)."""
    c1, big = c["c1"], c["c2_big"]
    small = c1["ckptdoctor repair"]
    r1 = ratio(small, c1["load + forward pass"])
    mem = big.median("maxrss") / small.median("maxrss")
    d = c["net"]["data"]
    return [
        [
            f"C1 Keras repair (whole CLI) ≤1.5x loading the .keras + one training-mode forward pass "
            f"({d['c1']['samples']} samples)",
            fmt_ratio(small, c1["load + forward pass"]),
            verdict(r1 <= 1.5),
        ],
        [
            f"C2 peak RSS of the Keras repair ≤1.2x for 10x the data ({human_gib(d['c1']['bytes'])} vs "
            f"{human_gib(d['c2_big']['bytes'])})",
            f"{mem:.2f}x ({small.median('maxrss') / MIB:.0f} vs {big.median('maxrss') / MIB:.0f} MiB; file-backed "
            f"{fmt_mib(small, 'file')} vs {fmt_mib(big, 'file')})",
            verdict(mem <= 1.2),
        ],
    ]


def render_keras(cfg: Config, c: dict, header: str) -> str:
    out = []
    w = out.append
    net, d = c["net"], c["net"]["data"]
    w("## C. Keras repair\n")
    w(header + "\n")
    w(
        f"Model: `benchmarks/build_keras.py`, Keras {net['keras']} (TensorFlow backend), functional: input "
        f"`(None, None, 3)`, {net['bn_layers']} blocks of `Conv2D` 3x3 (no bias) + "
        "`BatchNormalization(momentum=0.99)` + ReLU, 16-16-16-32-32-32-32-32 channels (stride 2 at the first 32 "
        "and the seventh block), global average pool, "
        f"`Dense(10)`; {net['params']} parameters, {net['steps']} Adam steps (`train_on_batch`), so the moving "
        f"statistics are stale; saved as `model.keras` ({net['bytes'] / 1024:.0f} KiB). Data: float32 16x16x3 images, "
        f"memory-mapped `.npy`. Batch size {cfg.batch_size} everywhere.\n"
    )
    w(
        "* ckptdoctor repair: `ckptdoctor repair model.keras X.npy --batch-size 256 --output OUT.keras --force` (the "
        "whole CLI: load with Keras in safe mode, data check, every batch `model(x, training=True)` with each BN "
        "layer's `call` wrapped to read its input, per-channel moments pooled in float64 numpy, gap passes on the "
        "first batch before and after, the h5py copy, read back and verified)"
    )
    w("* `--dry-run`: the same without writing and verifying the output")
    w(
        "* load + forward pass: `python benchmarks/keras_forward.py model.keras X.npy --batch-size 256`: "
        "`keras.saving.load_model(path, compile=False)`, then `model(batch, training=True)` over the same batches: "
        "what a user recalibrating by hand would run, minus any bookkeeping\n"
    )
    w("### Goals\n")
    w(table(["goal", "measured (ratio of medians)", "verdict"], keras_goals(c)))
    w("")
    c1 = c["c1"]
    base = c1["load + forward pass"]
    w(
        f"### C1. Keras repair vs load + one forward pass: {d['c1']['samples']} samples "
        f"({human_gib(d['c1']['bytes'])}), {cfg.reps_keras} repetitions, interleaved"
        + (", after one warm-up of each" if cfg.warmup else "")
        + "\n"
    )
    w(
        table(
            ["command", "wall s", "CPU s", "peak RSS MiB", "÷ load + forward pass"],
            [
                [label, fmt_s(s), fmt_s(s, "cpu"), fmt_mib(s), "1" if s is base else fmt_ratio(s, base)]
                for label, s in c1.items()
            ],
        )
    )
    w("")
    full, dry = c1["ckptdoctor repair"], c1["ckptdoctor repair --dry-run"]
    w(
        f"Writing + verifying the output (full ÷ dry run): {fmt_ratio(full, dry)}, "
        f"{full.median() - dry.median():+.2f} s in medians.\n"
    )
    fp = c["c1_forward_phases"]
    if fp:
        w(
            "Phases of the baseline (medians of its timed runs): "
            + ", ".join(f"{k[:-2]} {median_of(fp, k):.2f} s" for k in ("import_s", "load_s", "loop_s", "total_s"))
            + ".\n"
        )
    big = c["c2_big"]
    w(
        f"### C2. Peak memory vs data size: {d['c1']['samples']} vs {d['c2_big']['samples']} samples "
        f"({human_gib(d['c1']['bytes'])} vs {human_gib(d['c2_big']['bytes'])}), same model and batch size\n"
    )
    w(
        table(
            ["data", "runs", "wall s", "peak RSS MiB", "anon MiB (sampled)", "file-backed MiB (sampled)"],
            [
                [human_gib(d[k]["bytes"]), len(s.runs), fmt_s(s), fmt_mib(s), fmt_mib(s, "anon"), fmt_mib(s, "file")]
                for k, s in (("c1", full), ("c2_big", big))
            ],
        )
    )
    w("")
    w(
        "The small row is C1's repair runs. Big ÷ small peak RSS: "
        f"**{big.median('maxrss') / full.median('maxrss'):.2f}x**.\n"
    )
    w(
        "### Where the time goes (cProfile, one repair of the C1 data; deterministic profiling adds overhead to "
        "Python-level calls, so shares are indicative)\n"
    )
    w(c.get("profile") or f"Not available in this run: {c.get('profile_error', 'not run')}")
    w("")
    return "\n".join(out) + "\n"


def splice_section(existing: str, title: str, section: str) -> str:
    """``existing`` with its section ``## TITLE`` (up to the next ``## `` heading) replaced by ``section``.

    A section not there yet goes after the others (sections are in letter order: C before D).
    """
    marker = f"\n## {title}\n"
    if marker not in existing:
        return existing.rstrip("\n") + "\n\n" + section
    head, rest = existing.split(marker, 1)
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else None
    return head.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n" + ("\n## " + tail if tail else "")


def splice_section_c(existing: str, section: str) -> str:
    """``existing`` with its section C replaced by ``section``; the other sections untouched."""
    return splice_section(existing, "C. Keras repair", section)


# --------------------------------------------------------------------------- D: real-model scale

SCALE_TITLE = "D. Scale: 100,000 tensors, statistics on both cores"


def scale_specs(cfg: Config, work: Path) -> dict:
    quick = cfg.name == "quick"
    return {
        "many": {
            "prefix": str(work / "scale" / "many" / "ckpt"),
            "small": 10_000 if quick else 100_000,
            "small_shape": TINY_SHAPE,
            "big_rows": 0,
        },
        "big": {
            "prefix": str(work / "scale" / "big" / "ckpt"),
            "small": cfg.main_small,
            "small_shape": SMALL_SHAPE,
            "big_rows": cfg.main_big_rows,
        },
        "one": {  # the big tensor alone: both cores must share one tensor
            "prefix": str(work / "scale" / "one" / "ckpt"),
            "small": 0,
            "small_shape": SMALL_SHAPE,
            "big_rows": cfg.main_big_rows,
        },
    }


def bench_scale(cfg: Config, runner: Runner, work: Path) -> dict:
    """D: the listing and statistics of 100,000 tensors vs TensorFlow; the 2 GiB checkpoint's statistics
    (``--jobs`` 1 and the default) vs the bare numpy pass (``benchmarks/numpy_pass.py``); its listing vs TF."""
    specs = scale_specs(cfg, work)
    spec_path = work / "scale-spec.json"
    spec_path.write_text(json.dumps(list(specs.values())))
    log("D building the checkpoints (TensorFlow)")
    proc = subprocess.run(
        [PY, str(HERE / "build_ckpts.py"), str(spec_path)], capture_output=True, text=True, timeout=7200, cwd=work
    )
    if proc.returncode != 0:
        raise BenchError("building D's checkpoints failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-20:]))
    built = {b["prefix"]: b for b in json.loads(proc.stdout.strip().splitlines()[-1])}
    many, big = specs["many"]["prefix"], specs["big"]["prefix"]
    reps = max(1, cfg.reps_growth)
    res: dict = {"many": built[many], "big": built[big], "jobs": len(os.sched_getaffinity(0))}
    log("D1 listing 100,000 tensors")
    floor = {"pure-Python floor": [PY, str(HERE / "listing_floor.py"), many]}
    res["many_list"] = runner.compare(list_cmds(many) | floor, reps, cfg.warmup, INSPECT_CODES, "D1 list")
    log("D2 statistics of 100,000 tensors")
    res["many_stats"] = runner.compare(stats_cmds(many), reps, cfg.warmup, INSPECT_CODES, "D2 stats")
    log("D3 statistics of the big checkpoint vs the numpy pass")
    res["big_stats"] = stats_vs_numpy(cfg, runner, big, reps, "D3 stats")
    log("D3 statistics of one big tensor vs the numpy pass")
    one = specs["one"]["prefix"]
    res["one"] = built[one]
    res["one_stats"] = stats_vs_numpy(cfg, runner, one, reps, "D3 one tensor")
    log("D4 listing the big checkpoint")
    res["big_list"] = runner.compare(list_cmds(big), cfg.reps_list, cfg.warmup, INSPECT_CODES, "D4 list")
    res["apps"] = bench_apps(cfg, runner, work, reps)
    return res


def stats_vs_numpy(cfg: Config, runner: Runner, prefix: str, reps: int, label: str) -> dict:
    """D3: a checkpoint's statistics (the default ``--jobs`` and ``--jobs 1``) vs the numpy pass, interleaved."""
    stats = stats_cmds(prefix)["ckptdoctor"]
    return runner.compare(
        {
            "ckptdoctor": stats,
            "ckptdoctor --jobs 1": stats + ["--jobs", "1"],
            "numpy pass": [PY, str(HERE / "numpy_pass.py"), prefix],
        },
        reps,
        cfg.warmup,
        INSPECT_CODES,
        label,
    )


def bench_apps(cfg: Config, runner: Runner, work: Path, reps: int) -> list:
    """D5-D7: keras.applications nets as .keras files (``build_apps.py``): listing and statistics vs Keras'
    own ``KerasFileEditor``, repair vs load + one training-mode forward pass + save (``keras_forward.py``)."""
    quick = cfg.name == "quick"
    archs = ["EfficientNetB0"] if quick else ["ResNet50", "EfficientNetB0"]
    folder = work / "scale" / "apps"
    log(f"D building {', '.join(archs)} (Keras 3)")
    cmd = [PY, str(HERE / "build_apps.py"), str(folder), "--size", "32" if quick else "64"]
    cmd += ["--samples", "16" if quick else "96"] + [a for arch in archs for a in ("--arch", arch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200, cwd=work)
    if proc.returncode != 0:
        raise BenchError("building D's Keras nets failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-20:]))
    out = []
    for net in json.loads(proc.stdout.strip().splitlines()[-1]):
        model, data, n = net["path"], net["data"], str(net["samples"])
        editor = [PY, str(HERE / "keras_editor.py"), model]
        listing = [CKPTDOCTOR, "inspect", model, "--stats=False", "--format", "json"]
        res: dict = {"net": net}
        log(f"D5 listing {net['arch']}")
        res["list"] = runner.compare(
            {
                "ckptdoctor": listing,
                "ckptdoctor, no cache": ["env", "CKPTDOCTOR_CACHE_DIR="] + listing,
                "ckptdoctor --graph=False": listing + ["--graph=False"],
                "KerasFileEditor": editor,
            },
            reps,
            cfg.warmup,
            INSPECT_CODES,
            f"D5 {net['arch']}",
        )
        log(f"D6 statistics {net['arch']}")
        res["stats"] = runner.compare(
            {"ckptdoctor": [CKPTDOCTOR, "inspect", model, "--format", "json"], "KerasFileEditor": editor},
            reps,
            cfg.warmup,
            INSPECT_CODES,
            f"D6 {net['arch']}",
        )
        log(f"D7 repair {net['arch']}")
        repaired, saved = str(folder / f"{net['arch']}-repaired.keras"), str(folder / f"{net['arch']}-saved.keras")
        res["repair"] = runner.compare(
            {
                "ckptdoctor repair": [CKPTDOCTOR, "repair", model, "--data", data, "--batch-size", n]
                + ["--output", repaired, "--force"],
                "load + forward + save": [PY, str(HERE / "keras_forward.py"), model, data, "--batch-size", n]
                + ["--save", saved],
            },
            reps,
            cfg.warmup,
            (0,),
            f"D7 {net['arch']}",
        )
        out.append(res)
    return out


def compared_row(work: str, ours: Series, alternative: str, theirs: Series) -> list:
    """One row of a comparison table: the work, our time and peak RSS, the alternative (as shown) and the ratio."""
    return [work, fmt_s(ours) + " s", fmt_mib(ours) + " MiB", alternative, fmt_ratio(theirs, ours)]


def numpy_rows(work: str, compared: dict, alternative: str) -> list:
    """D3's two rows for one checkpoint: ckptdoctor's statistics, then with ``--jobs 1``, vs the numpy pass."""
    return [
        compared_row(work, compared["ckptdoctor"], alternative, compared["numpy pass"]),
        compared_row(
            "D3 the same with `--jobs 1`", compared["ckptdoctor --jobs 1"], "numpy pass", compared["numpy pass"]
        ),
    ]


def render_scale(cfg: Config, d: dict, header: str) -> str:
    out: list = []
    w = out.append
    many, big = d["many"], d["big"]
    w(f"## {SCALE_TITLE}\n")
    w(header + "\n")
    w(
        f"Checkpoints: `benchmarks/build_ckpts.py`: {many['tensors']:,} float32 tensors of 1 KiB "
        f"({human_gib(many['bytes'])}), {big['tensors']} tensors, {human_gib(big['bytes'])} (as in A), "
        "and its big tensor alone. "
        f"`ckptdoctor` runs with its default `--jobs` ({d['jobs']} here: the cores the process may use). The numpy "
        "pass (`benchmarks/numpy_pass.py`) is one thread of min, max, sum, dot and isnan over a memory map of "
        "each float32 tensor, no CRC check: the floor for a full statistics pass. The pure-Python floor "
        "(`benchmarks/listing_floor.py`) lists the same rows as D1's JSON with the least work Python can do: each "
        "structure walked once, the index blocks' CRCs but no other check, no findings, no report objects.\n"
    )
    ml, ms, bs, bl = d["many_list"], d["many_stats"], d["big_stats"], d["big_list"]
    n = f"{many['tensors']:,}"
    rows = [
        compared_row(
            f"D1 listing {n} tensors (`--stats=False --format json`)",
            ml["ckptdoctor"],
            "`tf.train.list_variables` " + fmt_s(ml["tensorflow"]) + " s, " + fmt_mib(ml["tensorflow"]) + " MiB",
            ml["tensorflow"],
        ),
        *(
            [
                compared_row(
                    "D1 the pure-Python floor (`benchmarks/listing_floor.py`: the same rows, nothing checked)",
                    ml["pure-Python floor"],
                    "`tf.train.list_variables`",
                    ml["tensorflow"],
                )
            ]
            if "pure-Python floor" in ml
            else []
        ),
        compared_row(
            f"D2 statistics of {n} tensors",
            ms["ckptdoctor"],
            "`tf_stats.py` " + fmt_s(ms["tensorflow"]) + " s, " + fmt_mib(ms["tensorflow"]) + " MiB",
            ms["tensorflow"],
        ),
        *numpy_rows(
            f"D3 statistics of {human_gib(big['bytes'])} (CRCs checked)",
            bs,
            "numpy pass " + fmt_s(bs["numpy pass"]) + " s, " + fmt_mib(bs["numpy pass"]) + " MiB",
        ),
        *(
            numpy_rows(
                f"D3 statistics of one tensor of {human_gib(d['one']['bytes'])} (in pieces on the threads)",
                d["one_stats"],
                "numpy pass " + fmt_s(d["one_stats"]["numpy pass"]) + " s",
            )
            if "one_stats" in d
            else []
        ),
        compared_row(
            f"D4 listing {human_gib(big['bytes'])}, {big['tensors']} tensors",
            bl["ckptdoctor"],
            "`tf.train.list_variables` " + fmt_s(bl["tensorflow"]) + " s",
            bl["tensorflow"],
        ),
    ]
    w(table(["work", "ckptdoctor", "peak RSS", "the alternative", "alternative / ckptdoctor"], rows))
    w("")
    r1, r3, r4 = (
        ratio(ml["tensorflow"], ml["ckptdoctor"]),
        ratio(bs["numpy pass"], bs["ckptdoctor"]),
        ratio(bl["tensorflow"], bl["ckptdoctor"]),
    )
    rss = ml["ckptdoctor"].median("maxrss") / MIB
    one = d.get("one_stats")
    r3b = ratio(one["numpy pass"], one["ckptdoctor"]) if one else None
    goals = [
        [f"D1 listing {many['tensors']:,} tensors ≥5x TensorFlow", f"{r1:.2f}x", verdict(r1 >= 5)],
        ["D1 its peak RSS ≤150 MiB", f"{rss:.0f} MiB", verdict(rss <= 150)],
        ["D3 full statistics no slower than the numpy pass", f"{r3:.2f}x", verdict(r3 >= 1)],
        *([["D3 the same, one tensor", f"{r3b:.2f}x", verdict(r3b >= 1)]] if r3b is not None else []),
        ["D4 listing ≥15x `tf.train.list_variables`", f"{r4:.2f}x", verdict(r4 >= 15)],
    ]
    apps, app_goals = render_apps(d.get("apps", []))
    out += apps
    w(table(["goal (issue #13)", "measured", ""], goals + app_goals))
    w("")
    return "\n".join(out) + "\n"


def render_apps(apps: list) -> tuple[list, list]:
    """D5-D7's description and table, and its goal rows."""
    if not apps:
        return [], []
    nets = ", ".join(
        f"{a['net']['arch']} ({a['net']['params'] / 1e6:.1f} M parameters, {a['net']['bn_layers']} BN layers, "
        f"{a['net']['bytes'] / 1e6:.0f} MB)"
        for a in apps
    )
    first = apps[0]["net"]
    text = [
        f"Published nets: `benchmarks/build_apps.py` builds `keras.applications` {nets}: `weights=None`, "
        f"{first['size']}x{first['size']}x3 inputs, 10 classes, two Adam steps, saved as `.keras` with the "
        f"optimizer. Listing is `inspect --stats=False --format json`: by default it checks the config against "
        "the weights Keras itself would store. The first inspect of a model's layer kinds asks Keras (importing "
        "it and TensorFlow) and keeps the answers in the expectation cache (this run's own folder); later ones "
        "read them from there. `CKPTDOCTOR_CACHE_DIR=` turns the cache off: every run asks Keras, as a first one "
        "does. `--graph=False` lists without the check. `KerasFileEditor` is `benchmarks/keras_editor.py` "
        "(`keras.saving.KerasFileEditor(f).summary()`). The repair runs all "
        f"{first['samples']} samples in one batch; its alternative (`benchmarks/keras_forward.py --save`) loads the "
        "model, runs one training-mode forward pass and saves it, with no output check and no verification.\n",
    ]
    rows, goals = [], []
    for a in apps:
        arch, li, st, rp = a["net"]["arch"], a["list"], a["stats"], a["repair"]
        editor = "`KerasFileEditor` " + fmt_s(li["KerasFileEditor"]) + " s"
        rows += [
            compared_row(f"D5 listing {arch}", li["ckptdoctor"], editor, li["KerasFileEditor"]),
            compared_row(
                f"D5 listing {arch}, Keras cache off (`CKPTDOCTOR_CACHE_DIR=`)",
                li["ckptdoctor, no cache"],
                editor,
                li["KerasFileEditor"],
            ),
            compared_row(
                f"D5 listing {arch} `--graph=False`", li["ckptdoctor --graph=False"], editor, li["KerasFileEditor"]
            ),
            compared_row(
                f"D6 statistics {arch}",
                st["ckptdoctor"],
                "`KerasFileEditor` " + fmt_s(st["KerasFileEditor"]) + " s",
                st["KerasFileEditor"],
            ),
            compared_row(
                f"D7 repair {arch}",
                rp["ckptdoctor repair"],
                "load + forward + save " + fmt_s(rp["load + forward + save"]) + " s",
                rp["load + forward + save"],
            ),
        ]
        if arch == "ResNet50":
            r5 = ratio(li["KerasFileEditor"], li["ckptdoctor"])
            r5g = ratio(li["KerasFileEditor"], li["ckptdoctor --graph=False"])
            r5c = ratio(li["KerasFileEditor"], li["ckptdoctor, no cache"])
            r7 = ratio(rp["ckptdoctor repair"], rp["load + forward + save"])
            goals += [
                ["D5 ResNet50 `.keras` listing ≥10x `KerasFileEditor.summary()`", f"{r5:.2f}x", verdict(r5 >= 10)],
                ["D5 the same, first inspect (Keras cache off)", f"{r5c:.2f}x", verdict(r5c >= 10)],
                ["D5 the same with `--graph=False`", f"{r5g:.2f}x", verdict(r5g >= 10)],
                ["D7 its repair ≤1.3x load + forward + save", f"{r7:.2f}x", verdict(r7 <= 1.3)],
            ]
    text.append(table(["work", "ckptdoctor", "peak RSS", "the alternative", "alternative / ckptdoctor"], rows))
    text.append("")
    return text, goals


class SectionRun(NamedTuple):
    """What an ``--only`` run's header reports besides its section's figures."""

    facts: dict
    fingerprint: str  # of the package copy the children import
    load_before: str
    runner: Runner
    elapsed: float


def run_section(work: Path, keep: bool, subs: tuple, bench) -> tuple:
    """One section alone (``--only``): the machine's facts, a package copy, ``bench(runner)``; its work folders
    ``subs`` removed unless ``keep``. Returns ``bench``'s result and a ``SectionRun``."""
    started = time.perf_counter()
    facts = machine_facts()
    snap_fp = package_fingerprint(snapshot_package(work))
    load_before = loadavg()
    runner = Runner(work)
    try:
        result = bench(runner)
    finally:
        if not keep:
            for sub in subs:
                shutil.rmtree(work / sub, ignore_errors=True)
    return result, SectionRun(facts, snap_fp, load_before, runner, time.perf_counter() - started)


def main_scale_only(cfg: Config, work: Path, output: Path, command: str, keep: bool) -> int:
    """``--only scale``: run section D and replace only that section of ``output``."""
    d, (facts, snap_fp, load_before, runner, elapsed) = run_section(
        work, keep, ("scale", "pkg"), lambda runner: bench_scale(cfg, runner, work)
    )
    header = (
        f"Produced by `{command}` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} ({cfg.name} sizes, "
        f"{elapsed / 60:.1f} min, {runner.count} measured processes). This run: commit {facts['commit']}, "
        f"package fingerprint {snap_fp}, TensorFlow {facts['tensorflow']}, Python {facts['python']}, numpy "
        f"{facts['numpy']}, {facts['nproc']} CPUs ({facts['cpu']}), load average {load_before} at the start, "
        f"{loadavg()} at the end (other work shares the machine: the ratios, measured interleaved, are the "
        "figures to read). Medians with min–max; ratios of medians with the paired range."
    )
    existing = output.read_text() if output.exists() else "# ckptdoctor benchmarks\n"
    section = render_scale(cfg, d, header)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(splice_section(existing, SCALE_TITLE, section))
    if cfg.name == "quick":
        print(section)
    log(f"wrote section D of {output} ({elapsed / 60:.1f} min, {runner.count} measured processes)")
    return 0


# --------------------------------------------------------------------------- report


def median_of(dicts: list, key: str):
    vals = [d[key] for d in dicts if d.get(key) is not None]
    return statistics.median(vals) if vals else None


def render(
    cfg: Config, command: str, facts: dict, load_before: str, load_after: str, elapsed: float, a: dict, b: dict
) -> str:
    out = []
    w = out.append
    w("# ckptdoctor benchmarks\n")
    w(
        f"Produced by `{command}` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
        f"({cfg.name} run, {elapsed / 60:.1f} min). Regenerate with the same command; "
        "`benchmarks/README.md` says what each part measures.\n"
    )
    w("## Machine\n")
    w(
        table(
            ["fact", "value"],
            [[k, v] for k, v in facts.items()] + [["load average (start / end)", f"{load_before} / {load_after}"]],
        )
    )
    w("")
    w("## How to read the figures\n")
    w(
        "* Every timed command is a **fresh process** (`subprocess`), started through `benchmarks/measure.py`, which "
        "times the child alone (wall clock) and reads the child's peak RSS from `getrusage(RUSAGE_CHILDREN)`; one "
        "wrapper per child, so children never mix."
    )
    w(
        "* Figures are **median (min–max)** over the repetitions, in seconds unless stated. Alternatives run "
        "interleaved in the same run (the order rotates each repetition); A1, A2 and B1 start with one untimed "
        "warm-up of each program, the growth tables and B2 then run on warm caches (their files were just written), "
        "so the page cache is warm for both sides. Comparisons are ratios of medians, with the range of the "
        "per-repetition (paired) ratios."
    )
    w(
        "* The package is copied at the start (`bench_work/run-*/pkg`); every child imports that copy (PYTHONPATH, "
        "run from the working folder), so edits made to the tree during the run cannot mix versions."
    )
    w("* The machine is shared and noisy (see the load average): read the ratios, not the absolute times.")
    w(
        "* Peak RSS counts every resident page, also pages of memory-mapped files. `anon` / `file` split the peak as "
        "sampled from `/proc/PID/status` every 20 ms (approximate).\n"
    )

    # ---- summary of goals
    main = a["main"]
    list_ratio = ratio(a["list"]["tensorflow"], a["list"]["ckptdoctor"])
    stats_ratio = ratio(a["stats"]["tensorflow"], a["stats"]["ckptdoctor"])
    rss = a["stats"]["ckptdoctor"].median("maxrss")
    b1_ratio = ratio(b["b1"]["ckptdoctor repair"], b["b1"]["forward pass"])
    small, big = b["b2"]["b2_small"], b["b2"]["b2_big"]
    mem_ratio = big.median("maxrss") / small.median("maxrss")
    w("## Goals\n")
    rows = [
        [
            "A1 listing ≥10x faster than `tf.train.list_variables`",
            fmt_ratio(a["list"]["tensorflow"], a["list"]["ckptdoctor"]),
            verdict(list_ratio >= 10),
        ],
        [
            "A2 full statistics ≥3x faster than TF + numpy",
            fmt_ratio(a["stats"]["tensorflow"], a["stats"]["ckptdoctor"]),
            verdict(stats_ratio >= 3),
        ],
        [
            "A3 peak RSS of the statistics run ≤300 MiB",
            f"{rss / MIB:.0f} MiB (anon / file-backed, sampled: "
            f"{fmt_mib(a['stats']['ckptdoctor'], 'anon')} / {fmt_mib(a['stats']['ckptdoctor'], 'file')}; TF + numpy: "
            f"{a['stats']['tensorflow'].median('maxrss') / MIB:.0f} MiB)",
            verdict(rss <= 300 * MIB),
        ],
        [
            f"B1 repair ≤1.3x one training-mode forward pass ({b['net']['data']['b1']['samples']} samples)",
            fmt_ratio(b["b1"]["ckptdoctor repair"], b["b1"]["forward pass"]),
            verdict(b1_ratio <= 1.3),
        ],
        [
            f"B2 peak RSS equal within 10% for {human_gib(b['net']['data']['b2_small']['bytes'])} vs "
            f"{human_gib(b['net']['data']['b2_big']['bytes'])} of data",
            f"{mem_ratio:.2f}x ({small.median('maxrss') / MIB:.0f} vs {big.median('maxrss') / MIB:.0f} MiB; "
            "file-backed "
            f"{fmt_mib(small, 'file')} vs {fmt_mib(big, 'file')})",
            verdict(abs(mem_ratio - 1) <= 0.10),
        ],
    ]
    if "loops" in b:
        lt = b["loops"]["times"]
        loops_ratio = statistics.median(lt["repair"]) / statistics.median(lt["forward"])
        rows.insert(
            4,
            [
                "B1, core loops only (one session, no fixed costs; for information)",
                f"{loops_ratio:.2f}x",
                "holds" if loops_ratio <= 1.3 else "above 1.3x",
            ],
        )
    w(table(["goal", "measured (ratio of medians)", "verdict"], rows))
    w("")

    # ---- A
    w("## A. Reader (TF-free)\n")
    w(
        f"Main checkpoint: written by `tf.train.Checkpoint(...).write` (TF {facts['tensorflow']}, eager), "
        f"{main['tensors']} float32 tensors: "
        f"{cfg.main_small} of 768x819 (2.40 MiB) and one of {cfg.main_big_rows}x16384 "
        f"({cfg.main_big_rows * 16384 * 4 / GIB:.2f} GiB), standard normal values; {human_gib(main['bytes'])} on disk "
        "in one data file, plus the TF2 object graph.\n"
    )
    w(f"### A1. Listing ({cfg.reps_list} repetitions)\n")
    w("* ckptdoctor: `ckptdoctor inspect CKPT --stats=False --graph=False --format json > /dev/null`")
    w('* tensorflow: `python -c "import tensorflow as tf; tf.train.list_variables(CKPT)"`')
    w(
        '* floor: `python -c "import fire, ckptdoctor.cli, ckptdoctor.pipelines.inspect, ckptdoctor.reports.table, '
        'ckptdoctor.readers.bundle"` (interpreter start-up and the imports the listing needs, reading nothing)\n'
    )
    lst = a["list"]
    w(
        table(
            ["command", "wall s", "CPU s", "peak RSS MiB", "vs ckptdoctor"],
            [
                [
                    k,
                    fmt_s(v),
                    fmt_s(v, "cpu"),
                    fmt_mib(v),
                    "1" if k == "ckptdoctor" else fmt_ratio(v, lst["ckptdoctor"]),
                ]
                for k, v in lst.items()
            ],
        )
    )
    w("")
    w(f"### A2/A3. Full statistics and peak memory ({cfg.reps_stats} repetitions)\n")
    w(
        "* ckptdoctor: `ckptdoctor inspect CKPT --graph=False --format json > /dev/null` (min, max, mean, std, "
        "NaN and Inf counts of every tensor, float64 accumulation, every CRC checked)"
    )
    w(
        "* tensorflow: `python benchmarks/tf_stats.py CKPT`: `tf.train.load_checkpoint`, then per float tensor "
        "`get_tensor` + numpy min, max, mean, std, isnan count, isinf count\n"
    )
    st = a["stats"]
    w(
        table(
            ["command", "wall s", "CPU s", "peak RSS MiB", "anon / file MiB (sampled)", "TF ÷ ckptdoctor"],
            [
                [
                    k,
                    fmt_s(v),
                    fmt_s(v, "cpu"),
                    fmt_mib(v),
                    f"{fmt_mib(v, 'anon')} / {fmt_mib(v, 'file')}",
                    "1" if k == "ckptdoctor" else fmt_ratio(v, st["ckptdoctor"]),
                ]
                for k, v in st.items()
            ],
        )
    )
    w("")
    w(f"### Growth with the number of tensors ({cfg.reps_growth} repetitions each; tensors of 16x16 float32)\n")
    rows = []
    for n, r in a["by_count"].items():
        row = [n, human_gib(r["index_bytes"]), fmt_s(r["list"]["ckptdoctor"])]
        if "tensorflow" in r["list"]:
            row += [fmt_s(r["list"]["tensorflow"]), f"{ratio(r['list']['tensorflow'], r['list']['ckptdoctor']):.1f}x"]
        else:
            row += ["–", "–"]
        row += [fmt_s(r["stats"]["ckptdoctor"])]
        if "tensorflow" in r["stats"]:
            row += [
                fmt_s(r["stats"]["tensorflow"]),
                f"{ratio(r['stats']['tensorflow'], r['stats']['ckptdoctor']):.1f}x",
            ]
        else:
            row += ["–", "–"]
        row += [fmt_mib(r["stats"]["ckptdoctor"])]
        rows.append(row)
    w(
        table(
            [
                "tensors",
                ".index",
                "list: ckptdoctor",
                "list: TF",
                "TF ÷ ours",
                "stats: ckptdoctor",
                "stats: TF",
                "TF ÷ ours",
                "stats peak RSS MiB (ours)",
            ],
            rows,
        )
    )
    w("")
    w(
        f"### Growth with total bytes ({cfg.reps_growth} repetitions each; the main checkpoint scaled: a fraction "
        "of the 2.4 MiB tensors and a big tensor of that fraction of its size; the last row is the main checkpoint)\n"
    )
    rows = []
    for _f, r in a["by_bytes"].items():
        ours_stats = r["stats"]["ckptdoctor"]
        ours_list = r["list"]["ckptdoctor"]
        extra = ours_stats.median() - ours_list.median()
        row = [human_gib(r["bytes"]), r["tensors"], fmt_s(ours_list)]
        row += [fmt_s(r["list"]["tensorflow"]) if "tensorflow" in r["list"] else "–"]
        row += [fmt_s(ours_stats)]
        if "tensorflow" in r["stats"]:
            row += [fmt_s(r["stats"]["tensorflow"]), f"{ratio(r['stats']['tensorflow'], ours_stats):.1f}x"]
        else:
            row += ["–", "–"]
        row += [f"{r['bytes'] / GIB / extra:.2f}" if extra > 0 else "n/a", fmt_mib(ours_stats)]
        rows.append(row)
    w(
        table(
            [
                "bytes",
                "tensors",
                "list: ckptdoctor",
                "list: TF",
                "stats: ckptdoctor",
                "stats: TF",
                "TF ÷ ours",
                "ours: GiB/s beyond listing",
                "stats peak RSS MiB (ours)",
            ],
            rows,
        )
    )
    w("")
    w(
        "### Where the time goes (cProfile, one run each; deterministic profiling adds overhead to Python-level "
        "calls, so shares are indicative)\n"
    )
    for label, (text, _rows) in a["profiles"].items():
        w(f"#### {label}\n")
        w(text)
        w("")

    # ---- B
    net = b["net"]
    w("## B. Repair\n")
    w(
        f"Network: `benchmarks/build_convnet.py`: {net['bn_layers']} blocks of conv 3x3 (no bias) + fused BN "
        "(`tf.compat.v1.layers.batch_normalization(fused=True)`, channels last) + relu, 8-8-8-16-16-16-32-32-32-32 "
        "channels (stride 2 at the first 16 and the first 32), global average pool, dense 10; input placeholder "
        "`(None, None, None, 3)`, training switch `placeholder_with_default(False)`; graph mode "
        f"(`disable_eager_execution`, `TF_USE_LEGACY_KERAS=1`), {net['steps']} Adam steps with the update ops, "
        f"saved with a `Saver` + `.meta`. Batch size {cfg.batch_size} everywhere.\n"
    )
    w(
        "* ckptdoctor repair: `ckptdoctor repair CKPT --data X.npy --batch-size 256 --output OUT --force` "
        "(train method: every batch in training mode, per-channel count/mean/M2 of every BN input in float64 in the "
        "graph, pooled; plus the inference-vs-training gap passes on the first batch before and after, and the "
        "verified write)"
    )
    w(
        "* forward pass: `python benchmarks/forward.py CKPT X.npy --batch-size 256`: `import_meta_graph`, restore, "
        "then `logits` with `training=True` over every batch (memory-mapped data, the same batches)\n"
    )
    d1 = net["data"]["b1"]
    w(
        f"### B1. Repair vs one forward pass: {d1['samples']} samples of {d1['size']}x{d1['size']}x3 float32 "
        f"({human_gib(d1['bytes'])}), {cfg.reps_repair} repetitions\n"
    )
    rows = []
    for key in ("b1", "b1_large"):
        if key not in b:
            continue
        d = net["data"][key]
        for label, s in b[key].items():
            rows.append(
                [
                    d["samples"],
                    label,
                    fmt_s(s),
                    fmt_s(s, "cpu"),
                    fmt_mib(s),
                    "1" if label == "forward pass" else fmt_ratio(s, b[key]["forward pass"]),
                ]
            )
    w(table(["samples", "command", "wall s", "CPU s", "peak RSS MiB", "÷ forward pass"], rows))
    w("")
    if "b1_large" in b:
        w(
            f"The second row pair ({net['data']['b1_large']['samples']} samples, {cfg.reps_repair_large} repetitions) "
            "tells fixed costs (the ratio falls with more data) from per-batch costs (it stays).\n"
        )
    fw, ip = b["b1_forward_phases"], b["inproc"]
    w(
        f"#### In-process phases (medians; forward pass: the timed runs above; repair: "
        f"`benchmarks/repair_inproc.py`, {len(ip)} runs calling `ckptdoctor.repair` in one process, phases timed "
        "by wrapping the module's helpers at run time; – where a helper was not found)\n"
    )
    if ip:
        known = ["loop_s", "check_data_s", "gaps_s", "restore_s", "graph_s", "write_s", "load_stats_s"]
        rest = [d["repair_call_s"] - sum(d.get(k) or 0 for k in known) for d in ip]

        def cell(v):
            return "–" if v is None else f"{v:.2f}"

        rows = [
            ["TensorFlow import", cell(median_of(fw, "import_s")), cell(median_of(ip, "import_s"))],
            [
                "graph import (+ analysis for repair)",
                cell(median_of(fw, "graph_import_s")),
                cell(median_of(ip, "graph_s")),
            ],
            [
                "restore (repair: initialise all, then a Saver over the checkpoint's keys)",
                cell(median_of(fw, "restore_s")),
                cell(median_of(ip, "restore_s")),
            ],
            ["data check (shape, dtype, NaN/Inf scan of all data)", "–", cell(median_of(ip, "check_data_s"))],
            [
                "**batch loop** (forward passes; repair: + moments + pooling)",
                cell(median_of(fw, "loop_s")),
                cell(median_of(ip, "loop_s")),
            ],
            ["gap passes (first batch, both modes, before and after)", "–", cell(median_of(ip, "gaps_s"))],
            ["loading the new statistics into the variables", "–", cell(median_of(ip, "load_stats_s"))],
            ["writing + verifying the new checkpoint", "–", cell(median_of(ip, "write_s"))],
            ["rest of the repair call", "–", cell(statistics.median(rest))],
            ["repair call total (library)", "–", cell(median_of(ip, "repair_call_s"))],
        ]
        w(table(["phase", "forward.py s", "ckptdoctor.repair s"], rows))
        w("")
        forward_core = median_of(fw, "graph_import_s") + median_of(fw, "restore_s") + median_of(fw, "loop_s")
        call_r = median_of(ip, "repair_call_s") / forward_core
        loop_ip = median_of(ip, "loop_s")
        loop_text = (
            (
                f"repair's loop ÷ the forward loop, from these separate processes: "
                f"{loop_ip / median_of(fw, 'loop_s'):.2f}x; "
            )
            if loop_ip
            else ""
        )
        w(
            f"{loop_text[:1].upper() + loop_text[1:]}library call ÷ (graph import + restore + loop of the forward "
            f"pass): **{call_r:.2f}x**.\n"
        )
    else:
        w(f"Not available in this run: {b.get('inproc_error', 'no runs')}\n")
    if "loops" in b:
        lp = b["loops"]
        fwd = Series([Run(t, t, 0, None, None) for t in lp["times"]["forward"]])
        rep_ = Series([Run(t, t, 0, None, None) for t in lp["times"]["repair"]])
        w(
            f"#### Core loops in one process and one session (`benchmarks/loops_inproc.py`, {len(fwd.runs)} "
            f"alternations, {lp['samples']} samples, {lp['batches']} batches, {lp['layers']} BN layers)\n"
        )
        w(
            "Graph imported and checkpoint restored once; the forward loop (fetch the output) and repair's loop body "
            "(fetch `_moment_ops` of every BN input, pool with `PooledMoments`, batches from `batches`) alternate, "
            "so TensorFlow import, graph import, restore and inter-process noise are out: what is left is the cost "
            "of the statistics.\n"
        )
        w(
            table(
                ["loop", "s", "÷ forward"],
                [
                    ["forward (output, training mode)", fmt_s(fwd), "1"],
                    ["repair (BN moments + pooling)", fmt_s(rep_), fmt_ratio(rep_, fwd)],
                ],
            )
        )
        w("")
    else:
        w(f"Core loops in one session: not available in this run: {b.get('loops_error', 'not run')}\n")
    ds, dbig = net["data"]["b2_small"], net["data"]["b2_big"]
    w(
        f"### B2. Peak memory vs data size: {ds['samples']} vs {dbig['samples']} samples of 8x8x3 float32 "
        f"({human_gib(ds['bytes'])} vs {human_gib(dbig['bytes'])}), whole files, same network and batch size\n"
    )
    rows = []
    for key, d in (("b2_small", ds), ("b2_big", dbig)):
        s = b["b2"][key]
        rows.append([human_gib(d["bytes"]), len(s.runs), fmt_s(s), fmt_mib(s), fmt_mib(s, "anon"), fmt_mib(s, "file")])
    w(table(["data", "runs", "wall s", "peak RSS MiB", "anon MiB (sampled)", "file-backed MiB (sampled)"], rows))
    w("")
    w(f"Big ÷ small peak RSS: **{mem_ratio:.2f}x**.\n")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the ckptdoctor benchmarks and write BENCHMARKS.md.")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke check")
    parser.add_argument(
        "--output", help="markdown file to write (default: BENCHMARKS.md; quick: bench_work/BENCHMARKS-quick.md)"
    )
    parser.add_argument("--work", help="working folder (default bench_work/run-full or run-quick)")
    parser.add_argument("--keep", action="store_true", help="keep the built checkpoints and data")
    parser.add_argument(
        "--only",
        choices=["keras", "scale"],
        help="run one part only: 'keras' runs section C, 'scale' section D, and rewrites "
        "only that section of the output (the others stay as they are)",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    work = Path(args.work) if args.work else ROOT / "bench_work" / f"run-{cfg.name}"
    output = (
        Path(args.output)
        if args.output
        else (ROOT / "bench_work" / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    )
    if not Path(CKPTDOCTOR).exists():
        print(
            f"run.py: no ckptdoctor entry point beside {PY}: run it with the venv's python "
            "(.venv/bin/python benchmarks/run.py)",
            file=sys.stderr,
        )
        return 2
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    command = (
        ".venv/bin/python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    if args.only == "keras":
        return main_keras_only(cfg, work, output, command, args.keep)
    if args.only == "scale":
        return main_scale_only(cfg, work, output, command, args.keep)
    started = time.perf_counter()
    facts = machine_facts()
    snapshot = snapshot_package(work)
    key = "package fingerprint (sha256 of ckptdoctor/**/*.py)"
    snap_fp = package_fingerprint(snapshot)
    facts[key] = snap_fp + " (a copy taken at the start; every child imports the copy)"
    load_before = loadavg()
    runner = Runner(work)
    try:
        # Inputs: both builders at once (not timed), then the measurements, one at a time.
        by_fraction, by_count = reader_specs(cfg, work)
        specs = list({s["prefix"]: s for s in list(by_fraction.values()) + list(by_count.values())}.values())
        spec_path = work / "ckpt-spec.json"
        spec_path.write_text(json.dumps(specs))
        b_data = {"b1": (cfg.b1_samples, cfg.b1_size), "b2_big": (cfg.b2_big_bytes // SAMPLE_BYTES_8, 8)}
        if cfg.b2_small_bytes:
            b_data["b2_small"] = (cfg.b2_small_bytes // SAMPLE_BYTES_8, 8)
        if cfg.b1_large_samples:
            b_data["b1_large"] = (cfg.b1_large_samples, cfg.b1_size)
        net_cmd = [PY, str(HERE / "build_convnet.py"), str(work / "net"), "--steps", str(cfg.train_steps)]
        for name, (samples, size) in b_data.items():
            net_cmd += ["--data", f"{name}:{samples}:{size}"]
        log("building checkpoints and data (TensorFlow, two processes)")
        procs = {
            "ckpts": subprocess.Popen(
                [PY, str(HERE / "build_ckpts.py"), str(spec_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=work,
            ),
            "net": subprocess.Popen(net_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work),
        }
        built_out = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=7200)
            if proc.returncode != 0:
                raise BenchError(f"building {name} failed:\n" + "\n".join(stderr.strip().splitlines()[-20:]))
            built_out[name] = json.loads(stdout.strip().splitlines()[-1])
        built = {b["prefix"]: b for b in built_out["ckpts"]}
        log(f"built in {time.perf_counter() - started:.0f} s")

        a = bench_reader(cfg, runner, work, built)
        if not args.keep:
            shutil.rmtree(work / "ckpt", ignore_errors=True)
        b = bench_repair(cfg, runner, work, built_out["net"])
        if not args.keep:
            shutil.rmtree(work / "net", ignore_errors=True)
        c = run_keras_part(cfg, runner, work)
        d = bench_scale(cfg, runner, work)
    finally:
        if not args.keep:
            for sub in ("ckpt", "net", "keras", "out", "pkg", "scale"):
                shutil.rmtree(work / sub, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if package_fingerprint() != snap_fp:
        facts[key] += "; the working tree changed during the run, the figures are for the copy"
        log("note: the package in the working tree changed during the run; the figures are for the copy")
    text = render(cfg, command, facts, load_before, loadavg(), elapsed, a, b)
    text = splice_section_c(
        text,
        render_keras(
            cfg,
            c,
            f"Produced by the same run as sections A and B (`{command}`, machine and package as stated at the top).",
        ),
    )
    text = splice_section(
        text,
        SCALE_TITLE,
        render_scale(cfg, d, f"Produced by the same run as sections A to C (`{command}`)."),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    if args.quick:
        print(text)
    log(f"wrote {output} ({elapsed / 60:.1f} min, {runner.count} measured processes)")
    return 0


def run_keras_part(cfg: Config, runner: Runner, work: Path) -> dict:
    """Build the Keras model and data, run section C. Keras 3 as a user has it: no TF_USE_LEGACY_KERAS."""
    saved = os.environ.pop("TF_USE_LEGACY_KERAS", None)
    try:
        log("C building the Keras model and data")
        net = build_keras_inputs(cfg, work)
        return bench_keras(cfg, runner, work, net)
    finally:
        if saved is not None:
            os.environ["TF_USE_LEGACY_KERAS"] = saved


def main_keras_only(cfg: Config, work: Path, output: Path, command: str, keep: bool) -> int:
    """``--only keras``: run section C and replace only that section of ``output`` (A and B byte for byte)."""
    c, (facts, snap_fp, load_before, runner, elapsed) = run_section(
        work, keep, ("keras", "out", "pkg"), lambda runner: run_keras_part(cfg, runner, work)
    )
    changed = (
        "; the working tree changed during the run, the figures are for the copy"
        if package_fingerprint() != snap_fp
        else ""
    )
    existing = output.read_text() if output.exists() else ""
    earlier = (
        "Sections A and B above come from an earlier full run (`.venv/bin/python benchmarks/run.py`, dated and "
        "described at the top of this file) and were left as they were. "
        if "\n## A. " in existing
        else ""
    )
    header = (
        f"Produced by `{command}` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} ({cfg.name} sizes, "
        f"{elapsed / 60:.1f} min, {runner.count} measured processes). {earlier}This run: commit "
        f"{facts['commit']}, package fingerprint {snap_fp} (a copy taken at the start{changed}), "
        f"TensorFlow {facts['tensorflow']}, Python {facts['python']}, numpy {facts['numpy']}, "
        f"{facts['nproc']} CPUs ({facts['cpu']}), load average {load_before} at the start, {loadavg()} at the "
        "end. How to read the figures: as above (fresh processes through `benchmarks/measure.py`, medians "
        "with min–max, ratios of medians with the paired range)."
    )
    section = render_keras(cfg, c, header)
    text = splice_section_c(existing, section) if existing else "# ckptdoctor benchmarks\n\n" + section
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    if cfg.name == "quick":
        print(section)
    log(f"wrote section C of {output} ({elapsed / 60:.1f} min, {runner.count} measured processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
