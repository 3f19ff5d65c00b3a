"""attnrepro.analysis.stats: every statistic against scipy, a plain re-computation, or a hand-worked example."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from attnrepro.analysis import stats


def test_t_interval_matches_scipy():
    x = [87.1, 86.4, 88.0, 87.7, 86.9]
    ti = stats.t_interval(x, 0.95)
    lo, hi = sp.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sp.sem(x))
    assert (ti.low, ti.high, ti.n) == (pytest.approx(lo), pytest.approx(hi), 5)
    assert ti.sd == pytest.approx(np.std(x, ddof=1))


def test_t_interval_edges():
    assert math.isnan(stats.t_interval([]).mean) and stats.t_interval([]).n == 0
    one = stats.t_interval([3.0, float("nan")])
    assert one.mean == 3.0 and one.n == 1 and math.isnan(one.half)
    flat = stats.t_interval([2.0, 2.0, 2.0])
    assert flat.half == 0.0 and flat.low == flat.high == 2.0
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1, 2], 1.5)


def test_paired_t_matches_scipy():
    d = np.array([0.3, -0.1, 0.8, 0.5, 0.2, 0.9])
    t = stats.paired_t(d)
    ref = sp.ttest_1samp(d, 0.0)
    assert t.t == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue) and t.n == 6
    assert math.isnan(stats.paired_t([1.0]).p)
    assert stats.paired_t([0.5, 0.5, 0.5]).p == 0.0 and stats.paired_t([0.0, 0.0]).p == 1.0


def test_tost_is_the_larger_of_two_one_sided_tests():
    d = np.array([0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.0, 0.15])
    delta = 0.5
    low = sp.ttest_1samp(d, -delta, alternative="greater").pvalue      # H0: mean <= -delta
    high = sp.ttest_1samp(d, delta, alternative="less").pvalue         # H0: mean >= +delta
    assert stats.tost_p(d, delta) == pytest.approx(max(low, high))
    assert stats.tost_p(d, delta) < 0.05 < stats.tost_p(d, 0.1)        # a wider margin is easier to meet
    with pytest.raises(ValueError, match="margin"):
        stats.tost_p(d, 0.0)


def test_welch_matches_scipy():
    x, y = [87.2, 88.1, 86.9, 87.7], [86.1, 86.9, 87.4, 85.8, 86.6]
    d, lo, hi = stats.welch_interval(x, y)
    ci = sp.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(np.mean(x) - np.mean(y))
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def _sign_flip_plain(d) -> float:
    """The definition, written plainly: every sign pattern, counted."""
    d = np.asarray(d, float)
    obs = abs(d.sum())
    hits = sum(abs(np.dot(s, d)) >= obs - 1e-12 for s in itertools.product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


@pytest.mark.parametrize("d", [[0.3, -0.1, 0.8, 0.5, 0.2], [1.0, 1.0, -1.0, 2.0, 0.5, -0.3, 0.7],
                               [0.4] * 5, [0.2, -0.2, 0.2, -0.2]])
def test_sign_flip_exact_is_the_definition(d):
    p, exact = stats.sign_flip_p(d)
    assert exact and p == pytest.approx(_sign_flip_plain(d))


def test_sign_flip_floor_and_blocks():
    # five positive differences: the most extreme pattern and its mirror, 2 of 32, above 5%
    assert stats.sign_flip_p([0.4, 0.1, 0.9, 0.3, 0.2])[0] == stats.sign_flip_floor(5) == 2 / 32 > 0.05
    assert stats.sign_flip_floor(6) < 0.05
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 18)                 # more than one block of 16 signs
    assert stats.sign_flip_p(d)[0] == pytest.approx(_sign_flip_plain(d))


def test_sign_flip_monte_carlo_agrees_with_exact():
    rng = np.random.default_rng(2)
    d = rng.normal(0.5, 1.0, 12)
    exact, _ = stats.sign_flip_p(d)
    mc, is_exact = stats.sign_flip_p(d, exact_max_n=5, draws=40_000, seed=3)
    assert not is_exact and abs(mc - exact) < 3 * math.sqrt(exact * (1 - exact) / 40_000) + 1e-4


def test_prob_superiority_by_hand():
    assert stats.prob_superiority([3, 1], [2, 2]) == pytest.approx(0.5)          # (1 + 1 + 0 + 0) / 4
    assert stats.prob_superiority([3, 2], [2, 1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert math.isnan(stats.prob_superiority([], [1]))


def test_corrections_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005 0.01 0.03 0.04 -> 4x, 3x, 2x, 1x = .02 .03 .06 .04 -> running max .02 .03 .06 .06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p m / i = .02 .02 .04 .04 -> running min from the largest: .02 .02 .04 .04
    assert stats.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.adjust(p, "none") == pytest.approx(p)
    nan = stats.holm([0.01, float("nan"), 0.04])           # NaN stays NaN and does not count in m
    assert math.isnan(nan[1]) and nan[[0, 2]] == pytest.approx([0.02, 0.04])
    assert stats.holm([0.6, 0.7]).max() <= 1.0
    with pytest.raises(ValueError, match="choose one of: holm"):
        stats.adjust(p, "sidak")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([1.5])


def test_power_matches_simulation():
    """The noncentral-t power against 20,000 simulated paired t-tests."""
    rng = np.random.default_rng(4)
    n, sd, effect, alpha = 8, 1.0, 0.9, 0.01
    x = rng.normal(effect, sd, (20_000, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    sim = float(np.mean(np.abs(t) > sp.t.ppf(1 - alpha / 2, n - 1)))
    want = stats.paired_t_power(effect, sd, n, alpha)
    assert abs(sim - want) < 3 * math.sqrt(want * (1 - want) / 20_000)


def test_detectable_effect_and_seeds_needed_invert_the_power():
    sd, n, alpha = 0.56, 5, 0.05
    d = stats.detectable_effect(sd, n, alpha)
    assert stats.paired_t_power(d, sd, n, alpha) == pytest.approx(0.8, abs=1e-6)
    assert 0.9 < d < 1.0              # the figure for the cpu preset: about 0.94 pt at n = 5
    k = stats.seeds_needed(0.5, sd, 0.05 / 17)
    assert stats.paired_t_power(0.5, sd, k, 0.05 / 17) >= 0.8 > stats.paired_t_power(0.5, sd, k - 1, 0.05 / 17)
    assert stats.seeds_needed(0.5, sd) < k < stats.seeds_needed(0.5, sd, 0.05 / 100)
    # at large noncentralities scipy's lower tail underflows; the power is still finite and near 1
    assert stats.paired_t_power(2.0, 0.2, 5, 0.0025) == pytest.approx(1.0, abs=1e-6)


def test_tost_size_at_the_margin_and_power_at_zero():
    """On the margin (true mean = delta) TOST calls equivalence at most alpha of the time; at 0, with n = 30 and
    delta one SD, nearly always (1000 simulated samples each)."""
    rng = np.random.default_rng(6)
    delta, n, trials = 1.0, 30, 1000
    for mean, check in ((delta, lambda r: r <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)),
                        (-delta, lambda r: r <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)),
                        (0.0, lambda r: r >= 0.99)):
        rate = np.mean([stats.tost_p(rng.normal(mean, 1.0, n), delta) < 0.05 for _ in range(trials)])
        assert check(rate), (mean, rate)
