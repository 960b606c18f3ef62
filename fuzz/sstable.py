"""Harness: the SSTable index and block reader, and the bundle reader over it (``readers/sstable.py``, ``bundle.py``).

Input: a little-endian u32 length, that many bytes of a checkpoint's ``.index``, then the bytes of its
one data file (the seeds are checkpoints TensorFlow wrote). The index goes through ``parse_table``,
then the pair through the whole TF-free ``inspect`` (``graph=False``): listing, object paths, every
tensor read with its checksum and statistics, the report rendered as a table and as JSON.

    python -m fuzz.sstable -max_total_time=60
"""

import struct

from fuzz.common import fuzz, instrumented, scratch_file

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.inspect import inspect
    from ckptdoctor.readers.sstable import parse_table
    from ckptdoctor.reports.table import render_inspect, to_json


def split(data: bytes) -> tuple[bytes, bytes]:
    """``(index, data file)`` of an input."""
    if len(data) < 4:
        return data, b""
    n = struct.unpack_from("<I", data)[0]
    return data[4 : 4 + n], data[4 + n :]


def join(index: bytes, shard: bytes) -> bytes:
    """The input holding ``index`` and ``shard`` (for seeds and regressions)."""
    return struct.pack("<I", len(index)) + index + shard


def test_one_input(data: bytes) -> None:
    index, shard = split(data)
    try:
        parse_table(index, "fuzz.index")
    except CkptDoctorError:
        pass
    prefix = scratch_file(index, "ckpt/model.ckpt.index")[: -len(".index")]
    scratch_file(shard, "ckpt/model.ckpt.data-00000-of-00001")
    try:
        report = inspect(prefix, graph=False)
    except CkptDoctorError:
        return
    render_inspect(report)
    to_json(report.to_dict())


if __name__ == "__main__":
    fuzz(test_one_input, "sstable")
