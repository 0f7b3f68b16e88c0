"""supernet.stats.kendall_tau: the one Kendall tau-b of the project (latency validation and
the accuracy predictor's held-out ranking both use it)."""
import itertools

import numpy as np
import pytest

from supernet.stats import kendall_tau


def brute_tau_b(x, y):
    """Kendall's tau-b by counting pairs: (C - D) / sqrt((C + D + Tx) (C + D + Ty)), where Tx
    counts pairs tied only in x and Ty pairs tied only in y (pairs tied in both count in neither)."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        if x[i] == x[j] and y[i] == y[j]:
            continue
        if x[i] == x[j]:
            tx += 1
        elif y[i] == y[j]:
            ty += 1
        elif (x[i] < x[j]) == (y[i] < y[j]):
            c += 1
        else:
            d += 1
    return (c - d) / np.sqrt((c + d + tx) * (c + d + ty))


def test_perfect_and_reversed_orders():
    x = np.arange(10.0)
    assert kendall_tau(x, x) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    assert kendall_tau(x, x ** 3 + 5) == pytest.approx(1.0)  # rank statistic: any increasing map


def test_a_known_value():
    # 10 pairs: 8 concordant, 2 discordant ((1,2) and (3,4) are swapped) -> (8 - 2) / 10
    assert kendall_tau([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.6)


@pytest.mark.parametrize("seed", range(6))
def test_ties_match_brute_force_pair_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    a = rng.integers(0, 4, n).astype(float)  # many ties in both vectors
    b = a + rng.integers(0, 3, n)
    assert kendall_tau(a, b) == pytest.approx(brute_tau_b(a, b), abs=1e-12)
    c = rng.integers(0, 3, n).astype(float)
    if len(set(c)) > 1 and len(set(a)) > 1:
        assert kendall_tau(a, c) == pytest.approx(brute_tau_b(a, c), abs=1e-12)


def test_constant_input_or_too_few_points_is_nan():
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert np.isnan(kendall_tau([1, 2, 3], [4, 4, 4]))
    assert np.isnan(kendall_tau([1.0], [2.0]))
    assert np.isnan(kendall_tau([], []))
    assert kendall_tau([1.0, 1.0, 2.0], [1.0, 2.0, 2.0]) == pytest.approx(0.5)  # ties, not constant


def test_different_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])


def test_blocked_computation_matches_one_block():
    # 1500 points: the pair matrix is computed in two row blocks; compare with all pairs at once
    rng = np.random.default_rng(7)
    x = rng.integers(0, 50, 1500).astype(float)
    y = x + rng.normal(0, 20, 1500).round()
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    want = (sx * sy).sum() / np.sqrt((n0 - (sx == 0).sum()) * (n0 - (sy == 0).sum()))
    assert kendall_tau(x, y) == pytest.approx(want, abs=1e-12)
    assert kendall_tau(list(x), y.reshape(30, 50)) == pytest.approx(want, abs=1e-12)  # any shape
