"""The bare single-threaded numpy pass that full statistics are compared with (BENCHMARKS.md, section D).

    python benchmarks/numpy_pass.py PREFIX

Every numeric tensor of a V2 bundle, located with ckptdoctor's index reader (no value
read through it), is viewed through a memory map of its data file and reduced once with
min, max, sum, dot (the sum of squares) and isnan: what any statistics pass must at least
do, with no CRC check, no chunking and no float64 guard. One thread.
"""

import mmap
import sys

import numpy as np

from ckptdoctor.readers.bundle import BundleReader


def main(prefix: str) -> int:
    with BundleReader(prefix) as reader:
        maps: dict = {}
        for entry in reader._entries.values():
            if entry.slices or entry.dtype != 1:  # float32 only: the benchmark's checkpoints
                continue
            path = reader._shard_path(entry.shard_id)
            if path not in maps:
                with open(path, "rb") as f:
                    maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            x = np.frombuffer(maps[path], np.float32, entry.size // 4, entry.offset)
            x.min(), x.max(), x.sum(dtype=np.float64), np.dot(x, x), np.isnan(x).any()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
