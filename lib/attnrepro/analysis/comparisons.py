"""Family-wise verdicts: every comparison of a preset's runs, tested together under the preset's declared correction.

A *comparison* is a variant minus a reference of one ablation, the final top-1 paired by seed over the seeds where
both finished. The *family* is the preset's declared list (:mod:`attnrepro.design`), by default every variant
against its ablation's reference and every accuracy claim's comparison the runs hold. Two comparisons of the same
runs (the same configs at the same seeds on both sides, in either order: ``placement/s3 vs none`` and
``baseline/expatt vs none`` when both ablations train those configs) are one hypothesis: they count once in the
family and share their verdict (``same_as`` names the first).

The verdict rule (:func:`verdict`, :func:`rule_text`): the paired t-test's p is adjusted across the family by the
preset's correction (default Holm); *above* / *below* when the adjusted p < alpha, by the sign of the mean
difference; otherwise *equivalent* (within +-delta, the preset's smallest effect of interest) when the two one-sided
tests' p, adjusted the same way across the family, is < alpha; otherwise *inconclusive*; *no pairs* with fewer than
two paired seeds. The statistics are :mod:`.stats`; beside each verdict, and never used for it, the frame holds the
exact sign-flip p, how many leave-one-seed-out deletions keep the verdict, P(variant > reference) over runs, the
unpaired Welch interval, and the effect the comparison could detect with 80% power.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..design import AnalysisSpec, Comparison
from . import stats
from .matching import match_variant
from .results import ablations, natural_key, reference_variant

__all__ = ["COLUMNS", "VERDICTS", "default_family", "compare", "compare_pair", "verdict", "rule_text",
           "family_size", "effective_alpha"]

VERDICTS = ("above", "below", "equivalent", "inconclusive", "no pairs", "not in family")
COLUMNS = ["ablation", "variant", "reference", "in_family", "same_as", "source", "n_pairs", "seeds", "mean",
           "ref_mean", "delta", "sd", "delta_half", "delta_low", "delta_high", "p", "p_adj", "level", "adj_low",
           "adj_high", "tost_p", "tost_p_adj", "verdict", "signflip_p", "signflip_exact", "loso_kept", "p_superiority",
           "welch_low", "welch_high", "mde80"]


def default_family(runs: pd.DataFrame, claims: Mapping[str, Any] | None = None) -> list[Comparison]:
    """Every variant against its ablation's reference (ablations in the report's order, variants in natural order),
    then every accuracy claim's comparison that the runs hold and that is not already listed (in either order)."""
    out: list[Comparison] = []
    for a in ablations(runs):
        ref = reference_variant(runs, a)
        if ref is None:
            continue
        variants = sorted(set(runs.loc[runs["ablation"] == a, "variant"]), key=natural_key)
        out += [Comparison(a, v, ref) for v in variants if v != ref]
    seen = {(c.ablation, frozenset((c.variant, c.reference))) for c in out}
    for claim in (claims or {}).get("claims", []):
        if claim.get("kind") != "accuracy":
            continue
        cmp_ = claim["compare"]
        vs = match_variant(runs, cmp_["ablation"], cmp_.get("variant"))
        rs = match_variant(runs, cmp_["ablation"], cmp_.get("reference"))
        if len(vs) != 1 or len(rs) != 1 or vs[0] == rs[0]:
            continue          # absent, or ambiguous: the claims module says which
        key = (cmp_["ablation"], frozenset((vs[0], rs[0])))
        if key not in seen:
            seen.add(key)
            out.append(Comparison(cmp_["ablation"], vs[0], rs[0]))
    return out


def family_size(frame: pd.DataFrame) -> int:
    """The number of distinct hypotheses in the family (duplicates and rows without pairs left out)."""
    if frame.empty:
        return 0
    f = frame[frame["in_family"].astype(bool) & (frame["same_as"].fillna("") == "") & frame["p"].notna()]
    return int(len(f))


def effective_alpha(spec: AnalysisSpec, m: int) -> float:
    """The level of the correction's strictest step, ``alpha / m`` (Holm's first, Bonferroni's every one; for
    Benjamini-Hochberg its smallest threshold), or ``alpha`` with no correction."""
    return spec.alpha if spec.correction == "none" or m <= 1 else spec.alpha / m


def verdict(delta: float, p_adj: float, tost_adj: float, n_pairs: int, alpha: float) -> str:
    """The verdict of one comparison from its family-adjusted p-values (see the module docstring)."""
    if n_pairs < 2 or not math.isfinite(p_adj):
        return "no pairs"
    if p_adj < alpha:
        return "above" if delta > 0 else "below"
    if math.isfinite(tost_adj) and tost_adj < alpha:
        return "equivalent"
    return "inconclusive"


def rule_text(spec: AnalysisSpec, m: int | None = None) -> str:
    """The verdict rule in words, with the preset's level, correction and margin."""
    corr = {"holm": "Holm's step-down correction", "bonferroni": "the Bonferroni correction",
            "bh": "the Benjamini-Hochberg correction (false discovery rate)", "none": "no correction"}[spec.correction]
    fam = ("the preset's declared family" if spec.declared else "the family of every variant against its ablation's "
           "reference and every accuracy claim's comparison")
    size = f" ({m} distinct hypotheses)" if m is not None else ""
    eq = (f"otherwise 'equivalent within ±{spec.delta:g}' when the two one-sided tests (TOST) against "
          f"±{spec.delta:g} points, corrected the same way, give p < alpha; " if spec.delta else
          "(the preset declares no smallest effect of interest, so nothing is called equivalent); ")
    return (f"Each comparison is a variant minus a reference, final top-1 in percentage points, paired by seed over "
            f"the seeds where both finished, with a paired t-test. The p-values of {fam}{size} are adjusted by "
            f"{corr}; comparisons of the same runs count once. Verdict: 'above' or 'below' when the adjusted p < "
            f"alpha = {spec.alpha:g}, by the sign of the mean difference; {eq}otherwise 'inconclusive'; 'no pairs' "
            "with fewer than two paired seeds. '±' is a 95% half-width; the intervals of the figure are drawn at the "
            "level each corrected test used, so they exclude 0 exactly when the verdict is above or below. Beside "
            "the verdict, not part of it: the exact sign-flip p, the leave-one-seed-out deletions that keep the "
            "verdict, P(variant > reference) over runs, Welch's unpaired interval and the effect detectable with "
            "80% power at the correction's strictest level.")


class _Groups:
    """The finished runs of each (ablation, variant) with a value, grouped once: per seed the mean value and the
    identity of the runs (config hashes; two groups with the same identities at the same seeds are the same runs),
    and the values themselves."""

    def __init__(self, runs: pd.DataFrame, metric: str):
        self.groups: dict[tuple[str, str], tuple[dict[int, float], dict[int, tuple], np.ndarray]] = {}
        if runs is None or runs.empty:
            return
        fin = runs[(runs["status"] == "finished") & runs[metric].notna()]
        acc: dict[tuple[str, str], tuple[dict, dict, list]] = {}
        for a, v, s, h, path, x in zip(fin["ablation"], fin["variant"], fin["seed"], fin["config_hash"],
                                       fin["path"], fin[metric]):
            vals, ids, allv = acc.setdefault((a, v), ({}, {}, []))
            vals.setdefault(int(s), []).append(float(x))
            ids.setdefault(int(s), []).append(str(h) if isinstance(h, str) and h else f"path:{path}")
            allv.append(float(x))
        for k, (vals, ids, allv) in acc.items():
            self.groups[k] = ({s: float(np.mean(x)) for s, x in vals.items()},
                              {s: tuple(sorted(x)) for s, x in ids.items()}, np.array(allv))

    def get(self, ablation: str, variant: str):
        return self.groups.get((ablation, variant), ({}, {}, np.empty(0)))

    def pairs(self, c: Comparison):
        """(paired seeds, differences, variant and reference values at those seeds, identity key, all values of
        both sides)."""
        vm, vid, vv = self.get(c.ablation, c.variant)
        rm, rid, rv = self.get(c.ablation, c.reference)
        seeds = sorted(set(vm) & set(rm))
        a = np.array([vm[s] for s in seeds], dtype=float)
        b = np.array([rm[s] for s in seeds], dtype=float)
        key = (tuple(vid[s] for s in seeds), tuple(rid[s] for s in seeds), tuple(seeds))
        return seeds, a - b, a, b, key, vv, rv


def compare(runs: pd.DataFrame, spec: AnalysisSpec | None = None, family: Sequence[Comparison] | None = None,
            *, extra: Iterable[Comparison] = (), metric: str = "val_top1",
            claims: Mapping[str, Any] | None = None, robustness: bool = True) -> pd.DataFrame:
    """The comparisons frame (:data:`COLUMNS`), one row per comparison: the family (``spec.family``, else
    ``family``, else :func:`default_family`), then every variant-vs-reference comparison not in it, and ``extra``
    (rows outside the family get ``verdict = 'not in family'`` and no adjusted p). ``robustness=False`` leaves the
    figures beside the verdict (sign-flip, leave-one-seed-out, Welch, P(superiority), power) as NaN (simulations).

    ``source`` is ``reference`` for a variant against its ablation's reference, ``claim`` otherwise.
    """
    spec = spec or AnalysisSpec()
    fam = list(spec.family) if spec.family is not None else list(family if family is not None
                                                                   else default_family(runs, claims))
    rest = [c for c in default_family(runs, None) if c not in fam and c.reversed() not in fam]
    rest += [c for c in extra
             if c not in fam and c.reversed() not in fam and c not in rest and c.reversed() not in rest]
    refs = {a: reference_variant(runs, a) for a in set(runs["ablation"])} if len(runs) else {}
    groups = _Groups(runs, metric)
    rows, keys, diffs_of = [], {}, []
    for i, c in enumerate(fam + rest):
        in_fam = i < len(fam)
        seeds, d, vm, rm, key, vv, rv = groups.pairs(c)
        rkey = (key[1], key[0], key[2])
        same_as = ""
        if seeds and in_fam:
            if key in keys or rkey in keys:
                same_as = keys.get(key) or keys[rkey]
            else:
                keys[key] = c.label
        ti = stats.t_interval(d, 0.95)
        sf, exact = stats.sign_flip_p(d) if robustness else (math.nan, True)
        _, wl, wh = stats.welch_interval(vm, rm) if seeds and robustness else (math.nan,) * 3
        rows.append({
            "ablation": c.ablation, "variant": c.variant, "reference": c.reference, "in_family": in_fam,
            "same_as": same_as, "source": "reference" if refs.get(c.ablation) == c.reference else "claim",
            "n_pairs": int(len(seeds)), "seeds": [int(s) for s in seeds],
            "mean": float(vv.mean()) if vv.size else math.nan, "ref_mean": float(rv.mean()) if rv.size else math.nan,
            "delta": ti.mean, "sd": ti.sd, "delta_half": ti.half, "delta_low": ti.low, "delta_high": ti.high,
            "p": stats.paired_t(d).p, "tost_p": stats.tost_p(d, spec.delta) if spec.delta else math.nan,
            "signflip_p": sf, "signflip_exact": exact,
            "p_superiority": stats.prob_superiority(vv, rv) if robustness else math.nan,
            "welch_low": wl, "welch_high": wh})
        diffs_of.append(d)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    _judge(frame, diffs_of, spec, robustness)
    return frame[COLUMNS]


class _Family:
    """The arrays the verdicts are computed from: one entry per row of a comparisons frame."""

    def __init__(self, frame: pd.DataFrame):
        labels = list(frame["ablation"] + ": " + frame["variant"] + " vs " + frame["reference"])
        index = {lab: i for i, lab in enumerate(labels)}
        self.delta = frame["delta"].to_numpy(dtype=float).copy()
        self.n = frame["n_pairs"].to_numpy(dtype=int).copy()
        self.p = frame["p"].to_numpy(dtype=float).copy()
        self.tost = frame["tost_p"].to_numpy(dtype=float).copy()
        self.in_family = frame["in_family"].to_numpy(dtype=bool)
        self.orig = np.array([index[s] if s else -1 for s in frame["same_as"]], dtype=int)

    def judge(self, spec: AnalysisSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(verdicts, adjusted p, adjusted TOST p): the family's distinct members adjusted together, duplicates
        sharing their original's adjusted p-values."""
        mask = self.in_family & (self.orig < 0) & ~np.isnan(self.p)
        p_adj = np.full(self.p.shape, math.nan)
        t_adj = np.full(self.p.shape, math.nan)
        if mask.any():
            p_adj[mask] = stats.adjust(self.p[mask], spec.correction)
            if spec.delta:
                t_adj[mask] = stats.adjust(np.nan_to_num(self.tost[mask], nan=1.0), spec.correction)
        dup = self.orig >= 0
        p_adj[dup], t_adj[dup] = p_adj[self.orig[dup]], t_adj[self.orig[dup]]
        out = [verdict(self.delta[i], p_adj[i], t_adj[i], int(self.n[i]), spec.alpha) if self.in_family[i]
               else ("not in family" if self.n[i] >= 2 else "no pairs") for i in range(len(self.p))]
        return out, p_adj, t_adj


def _judge(frame: pd.DataFrame, diffs_of: list[np.ndarray], spec: AnalysisSpec, robustness: bool) -> None:
    fam = _Family(frame)
    verdicts, p_adj, t_adj = fam.judge(spec)
    frame["p_adj"], frame["tost_p_adj"], frame["verdict"] = p_adj, t_adj, verdicts
    alpha_eff = effective_alpha(spec, family_size(frame))
    levels, lows, highs, kept, mde = [], [], [], [], []
    for i, d in enumerate(diffs_of):
        p, pa = fam.p[i], p_adj[i]
        level = math.nan
        if fam.in_family[i]:
            # the level the corrected test used: its interval excludes 0 exactly when p_adj < alpha
            level = 1.0 - spec.alpha * p / pa if math.isfinite(pa) and p > 0 and pa > 0 else 1.0 - spec.alpha
        ti = stats.t_interval(d, level) if math.isfinite(level) and d.size >= 2 else None
        levels.append(level)
        lows.append(ti.low if ti else math.nan)
        highs.append(ti.high if ti else math.nan)
        sd, n = frame["sd"].iloc[i], int(fam.n[i])
        mde.append(stats.detectable_effect(sd, n, alpha_eff) if robustness and n >= 2 else math.nan)
        kept.append(_loso(fam, diffs_of, i, verdicts[i], spec) if robustness and fam.in_family[i]
                    and fam.orig[i] < 0 else math.nan)
    kept = np.array(kept, dtype=float)
    kept[fam.orig >= 0] = kept[fam.orig[fam.orig >= 0]]        # a duplicate shares its original's deletions
    frame["level"], frame["adj_low"], frame["adj_high"], frame["mde80"] = levels, lows, highs, mde
    frame["loso_kept"] = kept


def _loso(fam: _Family, diffs_of: list[np.ndarray], i: int, base: str, spec: AnalysisSpec) -> float:
    """How many of comparison ``i``'s leave-one-seed-out deletions keep its verdict ``base`` (the other comparisons
    as they are, the family corrected again each time)."""
    d = diffs_of[i]
    if d.size < 2:
        return math.nan
    saved = fam.delta[i], fam.n[i], fam.p[i], fam.tost[i]
    kept = 0
    try:
        for k in range(d.size):
            rest = np.delete(d, k)
            fam.delta[i], fam.n[i] = float(rest.mean()), rest.size
            fam.p[i] = stats.paired_t(rest).p
            fam.tost[i] = stats.tost_p(rest, spec.delta) if spec.delta else math.nan
            kept += int(fam.judge(spec)[0][i] == base)
    finally:
        fam.delta[i], fam.n[i], fam.p[i], fam.tost[i] = saved
    return float(kept)


_FLIP_VERDICT = {"above": "below", "below": "above"}


def compare_pair(runs: pd.DataFrame, ablation: str, variant: str, reference: str, spec: AnalysisSpec | None = None,
                 *, claims: Mapping[str, Any] | None = None, extra: Iterable[Comparison] = (),
                 metric: str = "val_top1") -> dict[str, Any]:
    """``variant`` minus ``reference`` of one ablation, as the report's comparisons frame has it (``attnrepro
    compare``): :func:`compare` over the report's family (``claims``, ``extra``: what the report passes) with this
    pair added, and the pair's row, as a dict of :data:`COLUMNS`.

    When the frame holds the pair the other way round (``se vs none`` asked as ``none vs se``), the row is turned
    round: the differences change sign, the means swap, ``above`` and ``below`` swap. A pair outside the family
    keeps the frame's ``'not in family'`` verdict; ``alone`` is then its verdict as one test at the preset's alpha,
    without the family's correction (the rule of :func:`verdict`), for reading as exploratory. Added keys:
    ``family_size`` (distinct hypotheses in the family), ``alpha``, ``correction``, ``margin`` (the preset's
    ``delta``), ``alone``.
    """
    spec = spec or AnalysisSpec()
    c = Comparison(ablation, variant, reference)
    frame = compare(runs, spec, extra=[*extra, c], claims=claims, metric=metric)
    sel = frame[(frame["ablation"] == ablation) & (frame["variant"] == variant) & (frame["reference"] == reference)]
    flip = sel.empty
    if flip:
        sel = frame[(frame["ablation"] == ablation) & (frame["variant"] == reference)
                    & (frame["reference"] == variant)]
    row = sel.iloc[0].to_dict()
    if flip:
        row["variant"], row["reference"] = variant, reference
        row["source"] = f"{row['source']} (turned round)"
        row["mean"], row["ref_mean"] = row["ref_mean"], row["mean"]
        row["delta"] = -row["delta"]
        for lo, hi in (("delta_low", "delta_high"), ("adj_low", "adj_high"), ("welch_low", "welch_high")):
            row[lo], row[hi] = -row[hi], -row[lo]
        row["p_superiority"] = 1.0 - row["p_superiority"]
        row["verdict"] = _FLIP_VERDICT.get(row["verdict"], row["verdict"])
    row["alone"] = (verdict(row["delta"], row["p"], row["tost_p"], int(row["n_pairs"]), spec.alpha)
                    if row["verdict"] == "not in family" else row["verdict"])
    row.update(family_size=family_size(frame), alpha=spec.alpha, correction=spec.correction, margin=spec.delta)
    return row
