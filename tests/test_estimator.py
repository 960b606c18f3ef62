import numpy as np
import pytest

from ckptdoctor.analysis.estimator import PooledMoments


@pytest.mark.parametrize("splits", [[1000], [1, 999], [64] * 15 + [40], [3, 500, 7, 490]])
def test_pooled_moments_equal_numpy_over_the_concatenation(splits):
    rng = np.random.RandomState(1)
    # A large mean against a small spread: the naive E[x^2]-E[x]^2 would lose digits here.
    data = rng.randn(sum(splits), 4, 4, 3) * 0.01 + 1e4
    pooled = PooledMoments(3)
    start = 0
    for n in splits:
        pooled.add_values(data[start : start + n], axis=-1)
        start += n
    flat = data.reshape(-1, 3)
    np.testing.assert_allclose(pooled.mean, flat.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(pooled.variance, flat.var(axis=0), rtol=1e-9)
    assert pooled.count == flat.shape[0]


def test_batch_split_does_not_change_the_answer():
    rng = np.random.RandomState(2)
    data = rng.gamma(2.0, size=(300, 5))
    a, b = PooledMoments(5), PooledMoments(5)
    a.add_values(data)
    for i in range(0, 300, 17):
        b.add_values(data[i : i + 17])
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-13)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-12)


def test_averaging_batch_variances_would_be_wrong():
    # Two batches with different means: the between-batch spread belongs in the variance.
    x = np.concatenate([np.zeros((10, 1)), np.ones((30, 1)) * 2])
    pooled = PooledMoments(1)
    pooled.add_values(x[:10])
    pooled.add_values(x[10:])
    assert pooled.variance[0] == pytest.approx(x.var())
    assert x.var() > 0 and np.mean([x[:10].var(), x[10:].var()]) == 0
