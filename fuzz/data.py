"""Harness: the data loader of ``repair`` and ``inspect --data`` (``pipelines/data.py``).

Input: one byte choosing the loader (its value modulo 3: ``.npy``, ``.npz``, ``.h5``), then the file (the
seeds are written by ``np.save``, ``np.savez``, ``np.savez_compressed`` and h5py). The file is loaded as
``--data`` would (an ``.h5`` also as ``FILE.h5:inp``), each array checked as a float32 input (its shape,
dtype and every value for NaN/Inf) and its first rows read, as the batches read them (``read_rows``: a
damaged HDF5 chunk of an integer array, which the NaN check does not read, is then a ``BadDataError``).

    python -m fuzz.data -max_total_time=60
"""

import numpy as np

from fuzz.common import fuzz, instrumented, scratch_file

with instrumented(__name__):
    from ckptdoctor.errors import CkptDoctorError
    from ckptdoctor.pipelines.data import check_data, load_data, read_rows

SUFFIXES = (".npy", ".npz", ".h5")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    suffix = SUFFIXES[data[0] % 3]
    path = scratch_file(data[1:], "data" + suffix)
    for spec in [path] + ([path + ":inp"] if suffix == ".h5" else []):
        try:
            arrays = load_data(spec)
        except CkptDoctorError:
            continue
        for key, array in arrays.items():
            try:
                check_data(array, str(key), None, "float32")
                np.asarray(read_rows(array, 0, 2, str(key)))
            except CkptDoctorError:
                continue


if __name__ == "__main__":
    fuzz(test_one_input, "data")
