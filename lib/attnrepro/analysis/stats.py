"""The statistics of the report, in one place: each function states its definition and cites where it comes from.

- :func:`t_interval`: mean and two-sided Student-t confidence interval over seeds (e.g. Wasserman, *All of
  Statistics*, 2004, sec. 6.3.2 and the t distribution of sec. 2.4),
  ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` with the sample standard deviation (ddof=1). ``n < 2``: no interval.
  Applied to per-seed differences it is the paired t interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["TInterval", "t_interval"]


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

    x = np.asarray([float(v) for v in values], dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return TInterval(math.nan, math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return TInterval(mean, math.nan, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n))
    return TInterval(mean, half, mean - half, mean + half, n, sd)
