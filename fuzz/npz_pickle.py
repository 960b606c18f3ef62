"""Harness: the restricted unpickler of Keras' pickled npz members (``readers/npz_pickle.py``).

Input: one pickle, as a ``.npy`` member of Keras' npz weights holds it after its header (the seeds are the
members of a tiny model's npz weights: a layer's dict of Keras variables, the optimizer's dict of numpy arrays
and scalars, an empty dict). Only ``PickleRefused`` and ``PickleDamaged`` may come out, and every array found
must lie inside the input, at the bytes it was read from.

    python -m fuzz.npz_pickle -max_total_time=60
"""

from fuzz.common import fuzz, instrumented

with instrumented(__name__):
    from ckptdoctor.readers.npz_pickle import PickleDamaged, PickleRefused, read_pickled_member


def test_one_input(data: bytes) -> None:
    try:
        leaves = read_pickled_member(data, 0)
    except (PickleRefused, PickleDamaged):
        return
    for key, leaf in leaves.items():
        if leaf.offset < 0 or leaf.offset + leaf.nbytes > len(data):
            raise AssertionError(f"{key}: its bytes lie outside the pickle ({leaf})")
        count = 1
        for d in leaf.shape:
            count *= d
        if count * leaf.dtype.itemsize != leaf.nbytes:
            raise AssertionError(f"{key}: {leaf.nbytes} bytes for {leaf.shape} of {leaf.dtype}")


if __name__ == "__main__":
    fuzz(test_one_input, "npz_pickle")
