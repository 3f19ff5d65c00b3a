"""The statistics of the report, in one place. Each function states its definition and where it comes from; the
tests check them against scipy or against hand computation.

Intervals and tests over seeds (one number per seed, or per paired seed):

- :func:`t_interval`: mean and two-sided Student-t confidence interval, ``mean +- t_{(1+c)/2, n-1} sd / sqrt(n)``
  with the sample standard deviation (ddof 1); applied to per-seed differences it is the paired t interval
  (Casella & Berger, *Statistical Inference*, 2nd ed., 2002, sec. 9.2.2 and ex. 9.23).
- :func:`paired_t`: the paired t-test of ``mean = 0`` (two-sided), the same statistic (Casella & Berger, sec. 8.2).
- :func:`tost_p`: equivalence within ``+-delta`` by two one-sided t-tests (Schuirmann, "A comparison of the two
  one-sided tests procedure...", J. Pharmacokinet. Biopharm. 15, 1987): ``max`` of the p of ``H0: mean <= -delta``
  and of ``H0: mean >= +delta``.
- :func:`welch_interval`: the unpaired difference of means with Welch's interval and Satterthwaite's degrees of
  freedom (Welch, Biometrika 34, 1947): a check on the pairing, not a verdict.
- :func:`sign_flip_p`: the exact randomization (sign-flip) test of a symmetric-about-0 null for paired differences
  (Fisher, *The Design of Experiments*, 1935, sec. 21; Good, *Permutation, Parametric and Bootstrap Tests of
  Hypotheses*, 3rd ed., 2005, sec. 3.1): the share of the ``2^n`` sign patterns whose ``|mean|`` is at least the
  observed one. Its smallest possible p is ``2 / 2^n`` (:func:`sign_flip_floor`): with n < 6 it cannot reach 5%.
- :func:`prob_superiority`: ``P(X > Y) + P(X = Y) / 2`` over all pairs of a variant's and a reference's runs, the
  common-language effect size (McGraw & Wong, Psychol. Bull. 111, 1992; Vargha & Delaney's A, 2000).

Multiplicity (a family of ``m`` tests):

- :func:`holm`: Holm's step-down (Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
  6, 1979): adjusted ``p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; controls the family-wise error rate.
- :func:`bonferroni`: ``min(1, m p)``.
- :func:`benjamini_hochberg`: the step-up adjustment of Benjamini & Hochberg (J. R. Statist. Soc. B 57, 1995):
  ``p_(i) = min_{j >= i} min(1, m p_(j) / j)``; controls the false discovery rate, not the family-wise rate.

Power of the paired t-test (Cohen, *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed., 1988, ch. 2;
the noncentral t of Owen, Technometrics 7, 1965): with ``n`` pairs, paired SD ``sd`` and a true mean difference
``d``, ``T`` follows a noncentral t with ``n - 1`` degrees of freedom and noncentrality ``d sqrt(n) / sd``, and the
two-sided test at level ``alpha`` rejects when ``|T| > t_{1 - alpha/2, n-1}``. :func:`paired_t_power`,
:func:`detectable_effect` (the ``d`` with the given power) and :func:`seeds_needed` (the smallest ``n``) follow.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..design import CORRECTIONS

__all__ = ["TInterval", "t_interval", "TTest", "paired_t", "tost_p", "welch_interval", "sign_flip_p",
           "sign_flip_floor", "prob_superiority", "holm", "bonferroni", "benjamini_hochberg", "adjust",
           "CORRECTIONS", "paired_t_power", "detectable_effect", "seeds_needed"]

def _values(values: Iterable[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values], dtype=float)
    return x[~np.isnan(x)]


# ------------------------------------------------------------------------------------------------ intervals, tests
@dataclass(frozen=True)
class TInterval:
    """Mean with a two-sided Student-t interval: ``low = mean - half``, ``high = mean + half``; NaN where undefined."""

    mean: float
    half: float
    low: float
    high: float
    n: int
    sd: float


def t_interval(values: Iterable[float], confidence: float = 0.95) -> TInterval:
    """Mean and Student-t confidence interval of ``values`` (NaNs dropped).

    Args:
        values: one number per seed.
        confidence: two-sided coverage, in (0, 1).

    Returns:
        :class:`TInterval`. ``n == 0``: everything NaN; ``n == 1``: the mean, interval and sd NaN (one seed has no
        spread); ``sd == 0``: an interval of width 0.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is not valid; it must lie in (0, 1), e.g. 0.95")
    from scipy import stats

    x = _values(values)
    n = int(x.size)
    if n == 0:
        return TInterval(math.nan, math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return TInterval(mean, math.nan, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n))
    return TInterval(mean, half, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class TTest:
    """A one-sample (paired) t-test: ``t = mean / (sd / sqrt(n))`` with ``n - 1`` degrees of freedom."""

    mean: float
    sd: float
    n: int
    t: float
    p: float


def paired_t(diffs: Iterable[float]) -> TTest:
    """The two-sided paired t-test of ``mean(diffs) = 0``. ``n < 2``: p NaN. All differences equal: p 0 when they
    are not 0 (no spread, a certain sign), 1 when they are."""
    from scipy import stats

    x = _values(diffs)
    n = int(x.size)
    if n < 2:
        return TTest(float(x.mean()) if n else math.nan, math.nan, n, math.nan, math.nan)
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0.0:
        return TTest(mean, 0.0, n, math.copysign(math.inf, mean) if mean else 0.0, 0.0 if mean else 1.0)
    t = mean / (sd / math.sqrt(n))
    return TTest(mean, sd, n, t, float(2.0 * stats.t.sf(abs(t), n - 1)))


def tost_p(diffs: Iterable[float], delta: float) -> float:
    """Schuirmann's two one-sided tests of equivalence within ``+-delta`` (``delta > 0``): the larger of the p of
    ``H0: mean <= -delta`` and of ``H0: mean >= delta`` (paired t). NaN with fewer than two values."""
    from scipy import stats

    if not delta > 0:
        raise ValueError(f"delta={delta!r} is not valid; the equivalence margin must be > 0")
    x = _values(diffs)
    n = int(x.size)
    if n < 2:
        return math.nan
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0.0:
        return 0.0 if abs(mean) < delta else 1.0
    se = sd / math.sqrt(n)
    p_low = stats.t.sf((mean + delta) / se, n - 1)      # H0: mean <= -delta
    p_high = stats.t.cdf((mean - delta) / se, n - 1)    # H0: mean >= +delta
    return float(max(p_low, p_high))


def welch_interval(x: Iterable[float], y: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean(x) - mean(y), low, high)``: Welch's two-sided interval, Satterthwaite's degrees of freedom
    ``(a + b)^2 / (a^2 / (n_x - 1) + b^2 / (n_y - 1))`` with ``a = s_x^2 / n_x``, ``b = s_y^2 / n_y``. NaN bounds
    with fewer than two values on a side."""
    from scipy import stats

    x, y = _values(x), _values(y)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan, math.nan
    d = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return d, math.nan, math.nan
    a, b = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if a + b == 0.0:
        return d, d, d
    df = (a + b) ** 2 / (a * a / (x.size - 1) + b * b / (y.size - 1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, df) * math.sqrt(a + b))
    return d, d - half, d + half


def sign_flip_floor(n: int) -> float:
    """The smallest p the two-sided exact sign-flip test can give with ``n`` pairs: ``2 / 2^n`` (the observed
    pattern and its mirror image)."""
    return 2.0 / 2.0 ** n if n >= 1 else math.nan


def sign_flip_p(diffs: Iterable[float], *, exact_max_n: int = 20, draws: int = 200_000,
                seed: int = 0) -> tuple[float, bool]:
    """``(p, exact)``: the two-sided sign-flip test of paired differences, statistic ``|mean|``.

    Exact (all ``2^n`` sign patterns, the observed one included) for ``n <= exact_max_n``; above, ``draws`` random
    patterns from a generator seeded with ``seed`` and ``p = (1 + hits) / (1 + draws)`` (a valid Monte Carlo p,
    Phipson & Smyth, Stat. Appl. Genet. Mol. Biol. 9, 2010). A pattern counts when its ``|mean|`` is at least the
    observed one within 1e-12 (ties of equal magnitudes count). NaN with no values."""
    x = _values(diffs)
    n = int(x.size)
    if n == 0:
        return math.nan, True
    obs = abs(float(x.sum())) - 1e-12 * max(1.0, float(np.abs(x).sum()))
    if n <= exact_max_n:
        hits = 0
        block = min(n, 16)
        low = np.array(list(itertools.product((1.0, -1.0), repeat=block)))      # (2^block, block)
        low_sums = low @ x[:block]
        rest = n - block
        for signs in itertools.product((1.0, -1.0), repeat=rest):
            s = low_sums + (float(np.dot(signs, x[block:])) if rest else 0.0)
            hits += int(np.count_nonzero(np.abs(s) >= obs))
        return hits / 2.0 ** n, True
    rng = np.random.default_rng(seed)
    hits = 0
    left = draws
    while left:
        k = min(left, 20_000)
        signs = rng.choice((-1.0, 1.0), size=(k, n))
        hits += int(np.count_nonzero(np.abs(signs @ x) >= obs))
        left -= k
    return (1 + hits) / (1 + draws), False


def prob_superiority(x: Iterable[float], y: Iterable[float]) -> float:
    """``P(X > Y) + P(X = Y) / 2`` over every pair of an ``x`` and a ``y`` value (NaN when a side is empty)."""
    x, y = _values(x), _values(y)
    if x.size == 0 or y.size == 0:
        return math.nan
    d = x[:, None] - y[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


# ------------------------------------------------------------------------------------------------ multiplicity
def _p(pvals: Sequence[float]) -> np.ndarray:
    p = np.asarray(pvals, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p.tolist()}")
    return p


def holm(pvals: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count in ``m``)."""
    p = _p(pvals)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    order = np.argsort(q, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * q[order])
    adj = np.maximum.accumulate(adj)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def bonferroni(pvals: Sequence[float]) -> np.ndarray:
    """``min(1, m p)`` (NaN entries stay NaN and do not count in ``m``)."""
    p = _p(pvals)
    m = int((~np.isnan(p)).sum())
    return np.where(np.isnan(p), math.nan, np.minimum(1.0, m * p))


def benjamini_hochberg(pvals: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (NaN entries stay NaN and do not count in ``m``)."""
    p = _p(pvals)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    order = np.argsort(q, kind="stable")
    adj = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(1.0, adj)
    out[ok] = res
    return out


def adjust(pvals: Sequence[float], method: str) -> np.ndarray:
    """The p-values adjusted by ``method``, one of :data:`CORRECTIONS` (``none``: unchanged)."""
    if method == "holm":
        return holm(pvals)
    if method == "bonferroni":
        return bonferroni(pvals)
    if method == "bh":
        return benjamini_hochberg(pvals)
    if method == "none":
        return _p(pvals).copy()
    raise ValueError(f"correction={method!r} is not valid; choose one of: {', '.join(CORRECTIONS)}")


# ------------------------------------------------------------------------------------------------ power
def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs, paired SD ``sd`` and true mean
    difference ``effect`` (noncentral t). NaN for ``n < 2`` or ``sd <= 0``."""
    from scipy import stats

    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect) * math.sqrt(n) / sd
    upper = stats.nct.sf(crit, df, nc)
    if not math.isfinite(upper):
        upper = 1.0 - stats.nct.cdf(crit, df, nc)
    lower = stats.nct.cdf(-crit, df, nc)     # the wrong-side rejections; scipy gives NaN where it underflows
    return float(upper + (lower if math.isfinite(lower) else 0.0))


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The true mean difference the two-sided paired t-test detects with probability ``power`` (NaN for ``n < 2``
    or ``sd <= 0``)."""
    from scipy.optimize import brentq

    if n < 2 or not sd > 0:
        return math.nan
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2.0
    return float(brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, hi, xtol=1e-10))


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, n_max: int = 10_000) -> int:
    """The smallest number of paired seeds with which the two-sided paired t-test at level ``alpha`` detects a
    true mean difference ``effect`` with probability at least ``power``."""
    if not effect > 0 or not sd > 0:
        raise ValueError(f"effect={effect!r} and sd={sd!r} must both be > 0")
    for n in range(2, n_max + 1):
        if paired_t_power(effect, sd, n, alpha) >= power:
            return n
    raise ValueError(f"more than n_max={n_max} seeds needed for effect {effect} at sd {sd}")
