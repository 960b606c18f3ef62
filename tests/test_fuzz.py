"""Property-based fuzzing of the native reader on mutated copies of a real checkpoint.

Mutations of the index and the data file (bit flips, truncation, insertion, overwritten
varint lengths) must only ever give ckptdoctor's own errors or findings: never another
exception, never a hang, never memory beyond a bound (lengths in a file are not trusted
for allocation).

The CI run is short. To fuzz longer::

    CKPTDOCTOR_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py -q
"""

import os
import signal
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptdoctor.errors import CkptDoctorError
from ckptdoctor.pipelines.inspect import inspect

SEED = Path(__file__).resolve().parents[1] / "sample_ckpts" / "seed-no-update"
FILES = ["model.ckpt.index", "model.ckpt.data-00000-of-00001"]
EXAMPLES = int(os.environ.get("CKPTDOCTOR_FUZZ_EXAMPLES", "150"))
HANG_GUARD_S = 20  # a hang detector, far above any real case; not a speed threshold
MEMORY_BOUND = 64 * 1024 * 1024

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**7), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**7), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**7), st.integers(0, 255)),
    # A maximal varint: any length field it lands on claims a huge size.
    st.tuples(st.just("varint"), st.integers(0, 10**7), st.just(0)),
)


def mutate(data: bytes, kind: str, pos: int, arg: int) -> bytes:
    if not data:
        return data
    pos %= len(data)
    if kind == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << arg)]) + data[pos + 1 :]
    if kind == "truncate":
        return data[:pos]
    if kind == "insert":
        return data[:pos] + bytes([arg]) + data[pos:]
    return data[:pos] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01" + data[pos + 10 :]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


@pytest.fixture(scope="module")
def originals():
    return {name: (SEED / name).read_bytes() for name in FILES}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(FILES), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_checkpoints_give_only_our_errors(originals, target, mutations):
    with tempfile.TemporaryDirectory() as d:
        for name, data in originals.items():
            if name == target:
                for kind, pos, arg in mutations:
                    data = mutate(data, kind, pos, arg)
            Path(d, name).write_bytes(data)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(HANG_GUARD_S)
        tracemalloc.start()
        try:
            report = inspect(os.path.join(d, "model.ckpt"), graph=False)
            assert report.total_tensors >= 0
        except CkptDoctorError as e:
            assert str(e) and "\n" not in str(e).strip()
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert peak < MEMORY_BOUND, f"{peak} bytes traced"
