import numpy as np
import pytest

from ckptdoctor.analysis import stats
from ckptdoctor.analysis.stats import compute_stats


def chunks(a, n):
    flat = a.ravel()
    return [flat[i : i + n] for i in range(0, flat.size, n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8, np.float16])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 10**6])
@pytest.mark.parametrize("offset", [20.0, 0.5, 0.0], ids=["large-mean", "mean-near-spread", "centred"])
@pytest.mark.parametrize("block", [None, 5], ids=["one-block", "blocks-of-5"])
def test_stats_equal_numpy_in_float64_for_any_chunking(dtype, chunk, offset, block, monkeypatch):
    # The mean, in units of the spread, decides between the one-pass and the two-pass M2. Blocks of 5
    # elements take a chunk's float64 sums through the reused buffer in several blocks, and a last short one.
    if block:
        monkeypatch.setattr(stats, "_BLOCK", block)
    rng = np.random.RandomState(0)
    if np.dtype(dtype).kind == "f":
        a = ((rng.randn(37, 29) + offset) * 50).astype(dtype)
    else:
        a = (rng.randint(0, 60, size=(37, 29)) + int(offset * 10)).astype(dtype)
    s = compute_stats(chunks(a, chunk))
    ref = a.astype(np.float64)
    assert s.min == ref.min() and s.max == ref.max()
    assert s.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert s.std == pytest.approx(ref.std(), rel=1e-9)
    assert (s.nan, s.inf) == (0, 0)


def test_nan_and_inf_are_counted_and_excluded():
    a = np.array([1.0, np.nan, 3.0, np.inf, -np.inf, np.nan, 5.0], np.float32)
    s = compute_stats(chunks(a, 3))
    assert (s.nan, s.inf) == (2, 2)
    finite = np.array([1.0, 3.0, 5.0])
    assert (s.min, s.max, s.mean) == (1.0, 5.0, 3.0)
    assert s.std == pytest.approx(finite.std())


def test_all_nonfinite_and_empty():
    assert compute_stats([np.array([np.nan], np.float32)]).mean is None
    s = compute_stats([np.zeros(0, np.float32)])
    assert (s.min, s.nan, s.inf) == (None, 0, 0)


def test_bfloat16_goes_through_float32():
    import ml_dtypes

    a = np.array([1.5, -2.25, 3.0], dtype=ml_dtypes.bfloat16)
    s = compute_stats([a])
    assert (s.min, s.max) == (-2.25, 3.0)
    assert s.mean == pytest.approx(np.mean([1.5, -2.25, 3.0]))


def test_stats_of_many_equal_compute_stats_bit_for_bit():
    """Small tensors reduced together (one batch) get the very figures each gets alone, whatever its neighbours:
    every dtype, empty ones, NaN and Inf, a mean that makes M2 cancel, sizes around the block."""
    import ml_dtypes

    from ckptdoctor.analysis.stats import stats_of_many

    rng = np.random.default_rng(7)
    dtypes = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8, bool, ml_dtypes.bfloat16]
    arrays = []
    for i in range(600):
        n = int(rng.choice([0, 1, 2, 7, 100, 3000, 40_000, stats._BLOCK - 1, stats._BLOCK + 1]))
        scale, offset = 10.0 ** rng.integers(-3, 5), float(rng.choice([0.0, 0.5, 1e4]))
        with np.errstate(over="ignore", invalid="ignore"):  # float16 overflows to Inf: part of the test
            a = (rng.standard_normal(n) * scale + offset * scale).astype(dtypes[i // 12 % len(dtypes)])  # runs of 12
        if i % 17 == 0 and n > 3 and a.dtype.kind == "f":
            a[: min(3, n)] = [np.nan, np.inf, -np.inf][: min(3, n)]
        arrays.append(a)
    together = stats_of_many(arrays)
    assert together == [compute_stats([a]) for a in arrays]
    # And in another grouping (every other one): the same figures again.
    assert stats_of_many(arrays[1::2]) == together[1::2]
    assert any(s.nan for s in together) and any(s.mean is None for s in together)
