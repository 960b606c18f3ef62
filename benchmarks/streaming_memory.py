"""Peak memory of a repair from a folder of images, for N and 8N images: streamed, it must not grow with N.

    .venv/bin/python benchmarks/streaming_memory.py [--small 500] [--side 64] [--work DIR]

Builds a small Keras 3 conv net (Rescaling, two BN layers) and two folders of random PNGs (``small`` and 8x as
many), then runs ``ckptdoctor repair model.keras --data FOLDER --dry-run`` on each in a fresh process and reads
its peak RSS (``wait4``). The obvious alternative, in the same run: loading the images as one array first
(``keras.utils.image_dataset_from_directory`` concatenated, what exporting to ``.npy`` starts with), whose peak
grows with the data. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_MEASURE = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))"
)
_MATERIALISE = (
    "import sys, numpy as np, keras; ds = keras.utils.image_dataset_from_directory(sys.argv[1], labels=None, "
    "image_size=(int(sys.argv[2]),) * 2, shuffle=False, batch_size=256); x = np.concatenate(list(ds)); print(x.shape)"
)


def peak_rss(argv: list[str]) -> int:
    """The peak RSS in bytes of ``argv`` run in a fresh process (measured by a small wrapper)."""
    with tempfile.TemporaryDirectory() as d:
        rss = os.path.join(d, "rss")
        proc = subprocess.run([sys.executable, "-c", _MEASURE, rss, *argv], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        return int(Path(rss).read_text()) * 1024


def build(work: Path, small: int, side: int) -> dict:
    import keras
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = {}
    for name, n in (("small", small), ("big", 8 * small)):
        folder = work / name
        for i in range(n):
            sub = folder / f"class{i % 2}"
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(sub / f"{i:06d}.png")
        folders[name] = (folder, n)
    inp = keras.Input((side, side, 3), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    for filters in (8, 16):
        h = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(h)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    model.save(work / "model.keras")
    return folders


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ckptdoctor-stream-"))
    folders = build(work, args.small, args.side)
    cli = [sys.executable, "-m", "ckptdoctor", "repair", str(work / "model.keras"), "--dry-run", "--format", "json"]
    rows = []
    for name, (folder, n) in folders.items():
        streamed = peak_rss([*cli, "--data", str(folder)])
        whole = peak_rss([sys.executable, "-c", _MATERIALISE, str(folder), str(args.side)])
        rows.append((name, n, n * args.side * args.side * 3 * 4, streamed, whole))
    print(f"| images ({args.side}x{args.side}x3) | as float32 | repair --data FOLDER peak RSS | loaded as one array |")
    print("|---|---|---|---|")
    for _, n, size, streamed, whole in rows:
        print(f"| {n} | {size / 2**20:.0f} MiB | {streamed / 2**20:.0f} MiB | {whole / 2**20:.0f} MiB |")
    (_, _, _, s0, w0), (_, _, _, s1, w1) = rows
    print(f"| 8x the images | | {s1 / s0:.2f}x | {w1 / w0:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
