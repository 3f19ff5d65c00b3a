"""attnrepro.analysis.comparisons: family-wise verdicts on run records with a known truth (simulated in memory,
:mod:`synthetic`), duplicates, declared families, equivalence and the figures beside the verdict."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from synthetic import frame, null_family, run_rows

from attnrepro.analysis import stats
from attnrepro.analysis.comparisons import compare, family_size, verdict
from attnrepro.config import ConfigError
from attnrepro.design import AnalysisSpec, Comparison, analysis_spec

HOLM = AnalysisSpec(correction="holm")
NONE = AnalysisSpec(correction="none")
FAMILIES, M, N = 200, 20, 8


def _false_resolved_rate(spec: AnalysisSpec) -> float:
    """Of FAMILIES simulated families of M null comparisons (n = N, seeded), the share with at least one
    comparison called above or below."""
    rng = np.random.default_rng(20261204)
    hits = 0
    for _ in range(FAMILIES):
        c = compare(null_family(rng, M, N), spec, robustness=False)
        assert family_size(c) == M
        hits += int(c["verdict"].isin(["above", "below"]).any())
    return hits / FAMILIES


def test_the_family_wise_false_resolved_rate_is_at_most_alpha():
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / FAMILIES)
    assert _false_resolved_rate(HOLM) <= bound
    # the same test fails for the uncorrected rule: about 1 - 0.95^20 of the families resolve something
    assert _false_resolved_rate(NONE) > bound


def test_a_true_effect_of_two_sd_resolves_at_n_8():
    """One variant 2 SDs (of the paired differences) above the reference among 5 comparisons: resolved above at least
    as often as the noncentral-t power at Holm's strictest level says (3 SE), never below."""
    rng = np.random.default_rng(7)
    sd_diff = math.sqrt(2.0)             # null_family's paired SD with sd_run 1
    trials, above, below = 60, 0, 0
    for _ in range(trials):
        c = compare(null_family(rng, 5, N, effects=[2 * sd_diff, 0, 0, 0, 0]), HOLM, robustness=False)
        v = c.loc[c["variant"] == "v00", "verdict"].iloc[0]
        above += v == "above"
        below += c["verdict"].eq("below").any()
    power = stats.paired_t_power(2 * sd_diff, sd_diff, N, 0.05 / 5)
    assert power > 0.9 and above / trials >= power - 3 * math.sqrt(power * (1 - power) / trials) - 1e-9
    assert below <= 3


@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_equivalence_at_n_30(effect):
    """Margin delta = 1 (the paired SD). A true difference of 0 at n = 30: every comparison is equivalent but for
    the false 'resolved' ones, which take precedence and stay within alpha (+3 SE). A true difference of delta (on
    the margin): at most alpha (+3 SE) are called equivalent."""
    rng = np.random.default_rng(11)
    spec = AnalysisSpec(correction="holm", delta=1.0, delta_why="test")
    trials = 200
    got = pd.Series([compare(null_family(rng, 1, 30, effects=[effect], sd_seed=1.0, sd_run=1 / math.sqrt(2)), spec,
                             robustness=False)["verdict"].iloc[0] for _ in range(trials)]).value_counts()
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    resolved = got.get("above", 0) + got.get("below", 0)
    if effect == 0.0:
        assert got.get("equivalent", 0) + resolved == trials and resolved / trials <= bound
    else:
        assert got.get("equivalent", 0) / trials <= bound


def test_verdict_rule():
    assert verdict(0.4, 0.01, 0.5, 8, 0.05) == "above" and verdict(-0.4, 0.01, 0.5, 8, 0.05) == "below"
    assert verdict(0.1, 0.2, 0.01, 8, 0.05) == "equivalent"
    assert verdict(0.1, 0.2, 0.2, 8, 0.05) == "inconclusive" and verdict(0.1, 0.2, math.nan, 8, 0.05) == "inconclusive"
    assert verdict(0.1, math.nan, math.nan, 1, 0.05) == "no pairs"
    assert verdict(0.1, 0.05, 0.5, 8, 0.05) == "inconclusive"          # the level is strict: p < alpha


def _two_ablations():
    """placement/s3 and baseline/expatt train the same configs (one hash per seed), as do both ablations' none."""
    vals = np.array([87.0, 86.5, 88.0, 87.4, 86.9, 87.8])
    return frame(run_rows("placement", "none", vals, reference=True, hash_of="none"),
                 run_rows("placement", "s3", vals + [0.9, 1.1, 0.8, 1.2, 1.0, 0.7], config={"attention": "expatt"},
                          hash_of="expatt-s3"),
                 run_rows("baseline", "none", vals, reference=True, hash_of="none"),
                 run_rows("baseline", "expatt", vals + [0.9, 1.1, 0.8, 1.2, 1.0, 0.7], config={"attention": "expatt"},
                          hash_of="expatt-s3"),
                 run_rows("baseline", "se", vals + [0.1, -0.3, 0.2, 0.4, -0.2, 0.0], config={"attention": "se"}))


def test_the_same_runs_are_one_hypothesis():
    c = compare(_two_ablations(), HOLM)
    dup = c[(c["ablation"] == "baseline") & (c["variant"] == "expatt")].iloc[0]
    orig = c[(c["ablation"] == "placement") & (c["variant"] == "s3")].iloc[0]
    assert dup["same_as"] == "placement: s3 vs none" and orig["same_as"] == ""
    assert family_size(c) == 2                       # s3 (= expatt) and se
    assert dup["p_adj"] == orig["p_adj"] and dup["verdict"] == orig["verdict"] == "above"
    # with Holm over 2 the smaller p is doubled: the duplicate did not make it 3
    assert orig["p_adj"] == pytest.approx(min(1.0, 2 * min(orig["p"], c.loc[c["variant"] == "se", "p"].iloc[0])))


def test_a_reversed_comparison_of_the_same_runs_is_the_same_hypothesis():
    runs = _two_ablations()
    c = compare(runs, HOLM, extra=[Comparison("baseline", "none", "expatt")])
    rev = c[(c["variant"] == "none") & (c["reference"] == "expatt")]
    assert rev.empty                                  # listed once: the claims module reads it the other way
    fam = compare(runs, HOLM, family=[Comparison("placement", "s3", "none"), Comparison("baseline", "none", "expatt")])
    row = fam[fam["variant"] == "none"].iloc[0]
    assert row["same_as"] == "placement: s3 vs none" and row["verdict"] == "below" and family_size(fam) == 1


def test_a_declared_family_is_judged_alone():
    runs = _two_ablations()
    spec = analysis_spec({"family": ["baseline: se vs none"]})
    c = compare(runs, spec)
    se = c[c["variant"] == "se"].iloc[0]
    assert bool(se["in_family"]) and se["p_adj"] == pytest.approx(se["p"])     # a family of one
    others = c[c["variant"] != "se"]
    assert (others["verdict"] == "not in family").all() and others["p_adj"].isna().all()
    with pytest.raises(ConfigError, match="ABLATION: VARIANT vs REFERENCE"):
        analysis_spec({"family": ["se minus none"]})
    with pytest.raises(ConfigError, match="twice"):
        analysis_spec({"family": ["baseline: se vs none", "baseline: none vs se"]})
    with pytest.raises(ConfigError, match="delta_why"):
        analysis_spec({"delta": 0.5})
    with pytest.raises(ConfigError, match="choose one of: holm, bonferroni, bh, none"):
        analysis_spec({"correction": "fdr"})
    with pytest.raises(ConfigError, match="valid entries: alpha"):
        analysis_spec({"margin": 0.5})


def test_the_adjusted_interval_excludes_zero_exactly_when_resolved():
    rng = np.random.default_rng(5)
    for spec in (HOLM, AnalysisSpec(correction="bh"), AnalysisSpec(correction="bonferroni"), NONE):
        for _ in range(15):
            c = compare(null_family(rng, 6, 8, effects=rng.normal(0, 1.2, 6)), spec, robustness=False)
            resolved = c["verdict"].isin(["above", "below"])
            excludes = (c["adj_low"] > 0) | (c["adj_high"] < 0)
            assert (resolved == excludes).all(), c[["delta", "p", "p_adj", "adj_low", "adj_high", "verdict"]]


def test_bh_resolves_at_least_what_holm_does():
    rng = np.random.default_rng(8)
    runs = null_family(rng, 10, 8, effects=[1.6] * 5 + [0.0] * 5)
    holm = compare(runs, HOLM, robustness=False)
    bh = compare(runs, AnalysisSpec(correction="bh"), robustness=False)
    h, b = holm["verdict"].isin(["above", "below"]), bh["verdict"].isin(["above", "below"])
    assert (b | ~h).all() and b.sum() >= h.sum() and (bh["p_adj"] <= holm["p_adj"] + 1e-12).all()


def test_leave_one_seed_out_counts_the_deletions_that_keep_the_verdict():
    """One pair carries the effect: without it the comparison is no longer resolved, with any other gone it is."""
    ref = np.array([80.0, 80.2, 79.9, 80.1, 80.0, 80.3, 79.8])
    diff = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 4.0])
    runs = frame(run_rows("a", "ref", ref, reference=True), run_rows("a", "v", ref + diff, config={"attention": "se"}))
    c = compare(runs, HOLM).iloc[0]
    assert c["verdict"] == "above" and c["loso_kept"] == 7      # every deletion keeps it (tight pairs)
    diff2 = np.array([0.2, -0.3, 0.1, 0.4, -0.1, 0.0, 6.0])     # the one large pair makes it
    runs2 = frame(run_rows("a", "ref", ref, reference=True), run_rows("a", "v", ref + diff2,
                                                                       config={"attention": "se"}))
    c2 = compare(runs2, NONE).iloc[0]
    keep = sum((stats.paired_t(np.delete(diff2, k)).p < 0.05) == (c2["verdict"] == "above") for k in range(7))
    assert c2["loso_kept"] == keep


def test_robustness_figures():
    rng = np.random.default_rng(9)
    runs = null_family(rng, 1, 5, effects=[0.5])
    c = compare(runs, HOLM).iloc[0]
    d = (runs[runs.variant == "v00"].sort_values("seed")["val_top1"].to_numpy()
         - runs[runs.variant == "ref"].sort_values("seed")["val_top1"].to_numpy())
    assert c["signflip_p"] == pytest.approx(stats.sign_flip_p(d)[0]) and bool(c["signflip_exact"])
    v, r = runs[runs.variant == "v00"]["val_top1"], runs[runs.variant == "ref"]["val_top1"]
    assert c["p_superiority"] == pytest.approx(stats.prob_superiority(v, r))
    _, lo, hi = stats.welch_interval(v, r)
    assert (c["welch_low"], c["welch_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert c["mde80"] == pytest.approx(stats.detectable_effect(c["sd"], 5, 0.05))     # a family of one
    assert c["delta"] == pytest.approx(d.mean()) and c["n_pairs"] == 5


def test_unpaired_seeds_are_left_out():
    runs = frame(run_rows("a", "ref", [80, 81, 82, 83], reference=True),
                 run_rows("a", "v", [81, 82, 84], seeds=[0, 1, 3], config={"attention": "se"}),
                 run_rows("a", "w", [90], seeds=[9], config={"attention": "cbam"}))
    c = compare(runs, HOLM).set_index("variant")
    assert c.loc["v", "n_pairs"] == 3 and c.loc["v", "seeds"] == [0, 1, 3]
    assert c.loc["v", "delta"] == pytest.approx(np.mean([1, 1, 1]))
    assert c.loc["w", "verdict"] == "no pairs" and family_size(compare(runs, HOLM)) == 1
    assert pd.isna(c.loc["w", "p_adj"])
