"""``attnrepro plan``: how many seeds a preset needs, from the paired SDs its records show.

For each ablation, the distinct comparisons of the preset's family (:mod:`.comparisons`) give their paired SDs;
with the preset's correction the strictest level is ``alpha / m`` (:func:`.comparisons.effective_alpha`), and
:func:`.stats.seeds_needed` gives the smallest number of paired seeds with which a paired t-test at that level
detects a true difference ``delta`` with the given power, for the median and for the largest SD of the ablation.
:func:`.stats.detectable_effect` gives the effect the seeds at hand detect with that power. The family size can be
set (``--family-size``) for a preset still to be designed, and the SD given (``--sd``) instead of read.
"""
from __future__ import annotations

import math

import pandas as pd

from ..design import AnalysisSpec
from . import stats
from .comparisons import compare, effective_alpha, family_size

__all__ = ["plan_table", "format_plan"]

COLUMNS = ["ablation", "comparisons", "seeds_now", "sd_median", "sd_max", "detectable_now", "seeds_median_sd",
           "seeds_max_sd"]


def plan_table(comparisons: pd.DataFrame, spec: AnalysisSpec, delta: float, *, power: float = 0.8,
               m: int | None = None, sd: float | None = None) -> tuple[pd.DataFrame, int, float]:
    """(one row per ablation and one for all, the family size used, the level used). ``m``: the family size
    (default: the comparisons' own); ``sd``: a paired SD to plan with instead of the observed ones."""
    if not delta > 0:
        raise ValueError(f"delta={delta!r} is not valid; it must be > 0 (percentage points)")
    if not 0 < power < 1:
        raise ValueError(f"power={power!r} is not valid; it must lie in (0, 1)")
    m = family_size(comparisons) if m is None else int(m)
    alpha = effective_alpha(spec, m)
    c = comparisons[comparisons["in_family"].astype(bool) & (comparisons["same_as"].fillna("") == "")
                    & comparisons["sd"].notna()] if len(comparisons) else comparisons
    rows = []
    groups = [(a, g) for a, g in c.groupby("ablation", sort=False)] + [("all", c)]
    for name, g in groups:
        sds = g["sd"].astype(float)
        sd_med = float(sd) if sd is not None else (float(sds.median()) if len(sds) else math.nan)
        sd_max = float(sd) if sd is not None else (float(sds.max()) if len(sds) else math.nan)
        n_now = int(g["n_pairs"].median()) if len(g) else 0

        def need(s: float) -> float:
            return float(stats.seeds_needed(delta, s, alpha, power)) if s > 0 else math.nan
        rows.append({"ablation": name, "comparisons": int(len(g)), "seeds_now": n_now, "sd_median": sd_med,
                     "sd_max": sd_max,
                     "detectable_now": stats.detectable_effect(sd_med, n_now, alpha, power) if n_now >= 2
                     else math.nan,
                     "seeds_median_sd": need(sd_med) if math.isfinite(sd_med) else math.nan,
                     "seeds_max_sd": need(sd_max) if math.isfinite(sd_max) else math.nan})
    return pd.DataFrame(rows, columns=COLUMNS), m, alpha


def format_plan(table: pd.DataFrame, preset: str, spec: AnalysisSpec, delta: float, power: float, m: int,
                alpha: float, sd: float | None = None) -> str:
    """The plan as text: the design line, then one line per ablation."""
    corr = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}
    head = (f"preset {preset}: a family of {m} distinct comparisons, {corr[spec.correction]} at alpha "
            f"{spec.alpha:g}: strictest level {alpha:.4g}; delta = {delta:g} pt, power {power:.0%}"
            + (f"; paired SD given: {sd:g}" if sd is not None else "; paired SDs from the records"))
    cols = ["ablation", "comparisons", "seeds now", "paired SD median/max", f"detectable now ({power:.0%})",
            "seeds for delta (median SD)", "seeds for delta (max SD)"]
    body = [cols]
    for r in table.itertuples():
        def num(x, fmt):
            return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "-"
        body.append([r.ablation, str(r.comparisons), str(r.seeds_now), f"{num(r.sd_median, '.2f')} / "
                     f"{num(r.sd_max, '.2f')}", num(r.detectable_now, ".2f") + " pt",
                     num(r.seeds_median_sd, ".0f"), num(r.seeds_max_sd, ".0f")])
    w = [max(len(row[i]) for row in body) for i in range(len(cols))]
    lines = ["  ".join(f"{x:<{w[i]}}" for i, x in enumerate(row)).rstrip() for row in body]
    return "\n".join([head, *lines])


def plan_for(runs: pd.DataFrame, spec: AnalysisSpec, claims) -> pd.DataFrame:
    """The comparisons frame a plan reads (the claims' comparisons in the family, as the report has them)."""
    from .claims import claim_comparisons

    return compare(runs, spec, extra=claim_comparisons(runs, claims), claims=claims)
