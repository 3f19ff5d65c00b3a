"""attnrepro.results (runs -> frames -> statistics), the claims rule and the report's figures, on run folders written
here in the contract's format (with a failed run, an incomplete run and a missing seed)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attnrepro import figures, results
from attnrepro.report import (Report, bold_best, check_claim, evaluate_claims, judge_claim, judge_cost_claim,
                              load_claims)

PRESET = "tiny"
EPOCHS = 12
# (ablation, variant, seeds, config, reference?) ; final top-1 = BASE[variant] + NOISE[seed] (+ ablation offset)
GRID = {
    "baseline": {"ref": "none", "base": {"attention": "none"},
                 "variants": {"none": {"attention": "none"}, "expatt": {"attention": "expatt"},
                              "aa": {"attention": "aa"}, "se": {"attention": "se"}}},
    "kernel": {"ref": "gaussian", "base": {"attention": "expatt"},
               "variants": {"gaussian": {"kernel": "gaussian"}, "uniform": {"kernel": "uniform"}}},
    "radius_init": {"ref": "r2-learn", "base": {"attention": "expatt", "kernel": "gaussian"},
                    "variants": {"r2-learn": {"radius_init": 2.0}, "r0.5-learn": {"radius_init": 0.5}}},
    "placement": {"ref": "none", "base": {"attention": "expatt"},
                  "variants": {"none": {"attention": "none"}, "s3": {"stages": [3]}}},
}
SEEDS = (0, 1, 2)
TOP1 = {"none": 85.0, "expatt": 87.0, "aa": 82.0, "se": 85.1, "gaussian": 86.0, "uniform": 84.0,
        "r2-learn": 86.0, "r0.5-learn": 85.5, "s3": 86.5}
NOISE = {0: 0.0, 1: 0.4, 2: -0.3}
PARAMS = {"none": 270_000, "expatt": 268_000, "aa": 280_000, "se": 272_000}
FAILED = ("baseline", "aa", 1)            # metrics.json status failed
INCOMPLETE = ("kernel", "uniform", 2)     # metrics.jsonl only
MISSING = ("baseline", "se", 2)           # no folder at all
FAIL_REASON = "RuntimeError: CUDA out of memory (fixture)"


def top1(ablation: str, variant: str, seed: int) -> float:
    jitter = 0.1 * seed * (len(variant) % 3)  # so that paired deltas differ by seed
    return TOP1[variant] + NOISE[seed] + jitter


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def write_runs(root: Path, preset: str = PRESET, epochs: int = EPOCHS) -> Path:
    """Run folders in the contract's format under root/preset; returns root."""
    for ablation, g in GRID.items():
        for variant, keys in g["variants"].items():
            for seed in SEEDS:
                if (ablation, variant, seed) == MISSING:
                    continue
                d = root / preset / ablation / f"{variant}-s{seed}"
                d.mkdir(parents=True)
                cfg = {"dataset": "fashion_mnist", "model": "resnet20", "epochs": epochs, "seed": seed,
                       "kernel": "gaussian", "radius_init": 2.0, "learn_radius": True, "stages": None,
                       "max_steps": 0, "train_subset": 0, **g["base"], **keys}
                _write(d / "variant.json", {"ablation": ablation, "variant": variant, "seed": seed, "preset": preset,
                                            "is_reference": variant == g["ref"], "params": keys})
                _write(d / "config.json", {**cfg, "config_hash": f"h{ablation}{variant}{seed}"})
                expatt = cfg["attention"] == "expatt"
                final = top1(ablation, variant, seed)
                n_ep = epochs if (ablation, variant, seed) not in (FAILED, INCOMPLETE) else 2
                lines = []
                for e in range(1, n_ep + 1):
                    r = cfg["radius_init"] * (1 + 0.05 * e) + 0.01 * seed
                    lines.append({"epoch": e, "train_loss": 1.0 / e, "train_top1": final - 5 + e * 0.1,
                                  "val_loss": 1.2 / e, "val_top1": final - (epochs - e) * 0.5, "val_top5": 99.0,
                                  "lr": 0.1, "images_per_s": 1000.0 + seed, "epoch_time_s": 2.0,
                                  "radius": {"layer3.0.conv1": [r], "layer3.1.conv1": [r * 1.1]} if expatt else {}})
                (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
                if (ablation, variant, seed) == INCOMPLETE:
                    continue
                failed = (ablation, variant, seed) == FAILED
                _write(d / "metrics.json", {
                    "status": "failed" if failed else "finished", "reason": FAIL_REASON if failed else None,
                    "config": cfg, "config_hash": f"h{ablation}{variant}{seed}",
                    "env": {"python": "3.11.2", "torch": "2.14.1", "torchvision": "0.29.1", "device": "cpu",
                            "device_name": "cpu", "git_commit": "abc123"},
                    "wall_time_s": 10.0, "epochs_completed": n_ep,
                    "final": None if failed else {"val_top1": final, "val_top5": 99.0, "val_loss": 0.1,
                                                  "train_loss": 0.1, "train_top1": 90.0},
                    "best_val_top1": None if failed else final,
                    "params": PARAMS.get(variant, 268_000), "macs": 41_000_000 + PARAMS.get(variant, 268_000),
                    "images_per_s": 1000.0 + seed, "peak_mem_mb": 100.0,
                    "radius": lines[-1]["radius"]})
                (d / "log.txt").write_text("fixture\n")
    return root


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return write_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(runs_root) -> pd.DataFrame:
    return results.load_runs(runs_root, PRESET)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


# ------------------------------------------------------------------------------------------------ statistics
def test_t_interval_matches_scipy():
    x = [91.2, 90.5, 92.0, 91.7]
    ti = results.t_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert ti.n == 4 and ti.mean == pytest.approx(np.mean(x))
    assert (ti.low, ti.high) == (pytest.approx(lo), pytest.approx(hi))


def test_t_interval_hand_computed():
    # n = 2: values 1 and 3, mean 2, sd sqrt(2), half = t_{0.975,1} * sqrt(2)/sqrt(2) = 12.7062...
    ti = results.t_interval([1.0, 3.0])
    assert ti.mean == 2.0 and ti.half == pytest.approx(12.7062047, rel=1e-6)
    one = results.t_interval([5.0, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.half)
    assert results.t_interval([]).n == 0
    with pytest.raises(ValueError, match="confidence"):
        results.t_interval([1, 2], confidence=95)


# ------------------------------------------------------------------------------------------------ loading
def test_load_runs_statuses_and_values(runs, runs_root):
    n_folders = sum(len(g["variants"]) * len(SEEDS) for g in GRID.values()) - 1
    assert len(runs) == n_folders
    row = runs[(runs.ablation == "baseline") & (runs.variant == "aa") & (runs.seed == 1)].iloc[0]
    assert row.status == "failed" and row.reason == FAIL_REASON and math.isnan(row.val_top1)
    inc = runs[(runs.ablation == "kernel") & (runs.variant == "uniform") & (runs.seed == 2)].iloc[0]
    assert inc.status == "incomplete" and "no metrics.json" in inc.reason and inc.epochs_completed == 2
    fin = runs[runs.status == "finished"]
    for r in fin.itertuples():
        m = json.loads((runs_root / r.path / "metrics.json").read_text())
        assert r.val_top1 == m["final"]["val_top1"] and r.params == m["params"]
    assert runs.groupby("ablation")["is_reference"].sum().to_dict() == \
        {"baseline": 3, "kernel": 3, "radius_init": 3, "placement": 3}


def test_reference_from_grid_when_variant_json_lacks_it(tmp_path):
    root = write_runs(tmp_path)
    for p in (root / PRESET / "kernel").glob("*/variant.json"):
        vj = json.loads(p.read_text())
        del vj["is_reference"]
        p.write_text(json.dumps(vj))
    assert results.reference_variant(results.load_runs(root, PRESET), "kernel") is None
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "kernel.yaml").write_text("reference: gaussian\nvariants: {}\n")
    assert results.reference_variant(results.load_runs(root, PRESET, grids_dir=grids), "kernel") == "gaussian"


def test_missing_runs(runs):
    miss = results.missing_runs(runs)
    assert [tuple(x) for x in miss[["ablation", "variant", "seed"]].to_numpy()] == [MISSING]


def test_missing_runs_from_the_grid(runs):
    expected = pd.DataFrame([{"preset": PRESET, "ablation": "kernel", "variant": v, "seed": s}
                             for v in ("gaussian", "uniform", "cauchy") for s in SEEDS]
                            + [{"preset": PRESET, "ablation": "other", "variant": "x", "seed": 0}])
    miss = results.missing_runs(runs, expected)
    got = set(zip(miss.ablation, miss.variant, miss.seed))
    # the grid's cauchy (no folder at all) + the seed-inferred one; ablations without any run are not listed
    assert got == {("kernel", "cauchy", 0), ("kernel", "cauchy", 1), ("kernel", "cauchy", 2), MISSING}
    t = results.ablation_table(runs, "kernel", missing=miss).set_index("variant")
    assert t.loc["cauchy", "n"] == 0 and t.loc["cauchy", "n_missing"] == 3 and t.loc["uniform", "n_missing"] == 0


def test_empty_runs_dir(tmp_path):
    df = results.load_runs(tmp_path / "nothing", "smoke")
    assert df.empty and "val_top1" in df.columns
    assert results.missing_runs(df).empty and results.summarize(df).empty
    assert results.load_curves(tmp_path, "smoke").empty and results.load_radii(tmp_path, "smoke").empty


# ------------------------------------------------------------------------------------------------ tables
def test_summarize_against_files(runs):
    summ = results.summarize(runs)
    aa = summ[(summ.ablation == "baseline") & (summ.variant == "aa")].iloc[0]
    want = [top1("baseline", "aa", s) for s in (0, 2)]   # seed 1 failed
    ti = stats.t.interval(0.95, 1, loc=np.mean(want), scale=stats.sem(want))
    assert aa.n == 2 and aa.n_failed == 1 and aa.n_expected == 3 and aa.seeds == [0, 2]
    assert aa["mean"] == pytest.approx(np.mean(want)) and aa.low == pytest.approx(ti[0])
    se = summ[(summ.ablation == "baseline") & (summ.variant == "se")].iloc[0]
    assert se.n == 2 and se.n_missing == 1 and se.n_expected == 3
    uni = summ[(summ.ablation == "kernel") & (summ.variant == "uniform")].iloc[0]
    assert uni.n == 2 and uni.n_incomplete == 1


def test_summary_epochs_is_the_fewest_and_costs_are_medians(runs):
    short = runs.copy()
    i = short.index[(short.ablation == "baseline") & (short.variant == "expatt") & (short.seed == 2)][0]
    short.loc[i, "epochs_completed"] = 4
    short.loc[i, "params"] = 1.0           # an outlier: the median ignores it, a mean would not
    summ = results.summarize(short).set_index(["ablation", "variant"])
    assert summ.loc[("baseline", "expatt"), "epochs"] == 4
    assert summ.loc[("baseline", "none"), "epochs"] == EPOCHS
    assert summ.loc[("baseline", "expatt"), "params"] == PARAMS["expatt"]
    # failed and incomplete runs are not among the finished: their 2 epochs do not count
    assert summ.loc[("baseline", "aa"), "epochs"] == EPOCHS and summ.loc[("kernel", "uniform"), "epochs"] == EPOCHS
    assert summ.loc[("baseline", "expatt"), "images_per_s"] == pytest.approx(np.mean([1000.0 + s for s in SEEDS]))


def test_statuses_read_from_metrics_json(tmp_path):
    root = write_runs(tmp_path)
    base = root / PRESET / "baseline"

    def edit(run, **kw):
        p = base / run / "metrics.json"
        m = json.loads(p.read_text())
        m.update(kw)
        p.write_text(json.dumps(m))

    edit("none-s0", status="running")
    edit("none-s1", status="exploded", reason="oops")
    edit("expatt-s0", status="failed", reason=None)         # a failed run keeps no final top-1, even if written
    edit("expatt-s1", env={"python": "3.11", "git_commit": "abc", "git_dirty": True})
    with open(base / "expatt-s2" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 13, "val_to')                      # torn last line: skipped
    df = results.load_runs(root, PRESET).set_index(["ablation", "variant", "seed"])
    r = df.loc[("baseline", "none", 0)]
    assert r.status == "incomplete" and "running" in r.reason and math.isnan(r.val_top1)
    r = df.loc[("baseline", "none", 1)]
    assert r.status == "failed" and r.reason == "unknown status 'exploded': oops"
    r = df.loc[("baseline", "expatt", 0)]
    assert r.status == "failed" and r.reason == "failed (no reason recorded)" and math.isnan(r.val_top1)
    assert math.isnan(r.best_val_top1)
    assert df.loc[("baseline", "expatt", 1), "git_commit"] == "abc (with uncommitted changes)"
    assert df.loc[("baseline", "expatt", 2), "git_commit"] == "abc123"
    cur = results.load_curves(root, PRESET)
    assert cur[(cur.variant == "expatt") & (cur.seed == 2) & (cur.ablation == "baseline")].epoch.max() == EPOCHS


def test_match_variant_needs_every_key(runs):
    m = results.match_variant
    assert m(runs, "radius_init", {"attention": "expatt", "radius_init": 0.5}) == ["r0.5-learn"]
    assert m(runs, "radius_init", {"radius_init": 0.5 + 1e-12}) == ["r0.5-learn"]      # numbers compared as numbers
    assert m(runs, "placement", {"stages": [3]}) == ["s3"] and m(runs, "placement", {"stages": None}) == ["none"]
    assert m(runs, "kernel", None) == ["gaussian"] and m(runs, "kernel", "uniform") == ["uniform"]
    assert m(runs, "kernel", "cauchy") == [] and m(runs, "kernel", {"kernel": "cauchy"}) == []
    assert m(runs, "nothing", {"kernel": "uniform"}) == []


def test_natural_order_and_ablation_order(runs):
    assert sorted(["r10", "r2", "r0.5", "r1", "s10", "s2"], key=results.natural_key) == \
        ["r0.5", "r1", "r2", "r10", "s2", "s10"]
    extra = runs.iloc[:1].copy()
    extra["ablation"] = "aaa"
    assert results.ablations(pd.concat([extra, runs])) == ["kernel", "radius_init", "placement", "baseline", "aaa"]


def test_bold_marks_the_highest_top1_and_the_fewest_params():
    t = pd.DataFrame([
        {"variant": "a", "is_reference": True, "n": 3, "n_expected": 3, "n_failed": 0, "n_incomplete": 0,
         "n_missing": 0, "mean": 90.0, "half": 0.5, "n_pairs": 3, "delta": 0.0, "delta_low": math.nan,
         "delta_high": math.nan, "params": 300.0, "macs": 10.0, "images_per_s": 5.0, "epochs": 12},
        {"variant": "b", "is_reference": False, "n": 3, "n_expected": 3, "n_failed": 0, "n_incomplete": 0,
         "n_missing": 0, "mean": 91.0, "half": 0.5, "n_pairs": 3, "delta": 1.0, "delta_low": 0.5,
         "delta_high": 1.5, "params": 200.0, "macs": 20.0, "images_per_s": 4.0, "epochs": 12}])
    from attnrepro.report import display_table
    disp, num = display_table(t)
    css = bold_best(disp, num)._compute().ctx          # (row, column) -> [(property, value)]
    bold = {(disp.index[i], disp.columns[j]) for (i, j), v in css.items() if ("font-weight", "bold") in v}
    assert (1, "top-1 % (mean ± 95% CI)") in bold and (1, "params") in bold and (0, "MACs") in bold
    assert (0, "images/s") in bold and (0, "params") not in bold and (1, "MACs") not in bold
    # the same table gives the same HTML (no random CSS id), another table another id
    assert bold_best(disp, num).to_html() == bold_best(disp, num).to_html()
    other = disp.copy()
    other.iloc[0, 0] = "z"
    assert bold_best(disp, num).uuid != bold_best(other, num).uuid


def test_scale_warning_names_the_fewest_epochs_and_seeds(runs):
    rep = Report.__new__(Report)     # only the frames _scale_warning reads
    rep.claims_data = {"defaults": {"min_epochs": 10, "min_seeds": 2}}
    rep.runs = runs
    assert rep._scale_warning() is None
    short = runs.copy()
    short.loc[short.index[short.status == "finished"][0], "epochs_completed"] = 3
    rep.runs = short
    assert "only 3 epochs (< 10)" in rep._scale_warning()
    one = runs[runs.seed == 0]
    rep.runs = one
    assert "only 1 finished seed (< 2)" in rep._scale_warning()


def test_paired_deltas(runs):
    d = results.paired_deltas(runs, "baseline").set_index("variant")
    # aa: seed 1 failed, so pairs are seeds 0 and 2 only
    diffs = [top1("baseline", "aa", s) - top1("baseline", "none", s) for s in (0, 2)]
    assert d.loc["aa", "seeds"] == [0, 2] and d.loc["aa", "n_pairs"] == 2
    assert d.loc["aa", "delta"] == pytest.approx(np.mean(diffs))
    lo, hi = stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (d.loc["aa", "delta_low"], d.loc["aa", "delta_high"]) == (pytest.approx(lo), pytest.approx(hi))
    # expatt: three pairs; the paired CI is tighter than the unpaired one would be for seed-correlated noise
    diffs = [top1("baseline", "expatt", s) - top1("baseline", "none", s) for s in SEEDS]
    assert d.loc["expatt", "n_pairs"] == 3 and d.loc["expatt", "delta"] == pytest.approx(np.mean(diffs))
    assert d.loc["expatt", "delta_half"] == pytest.approx(stats.t.ppf(0.975, 2) * stats.sem(diffs))
    assert d.loc["none", "delta"] == 0.0
    with pytest.raises(ValueError, match="valid variants"):
        results.paired_deltas(runs, "baseline", reference="nope")


def test_ablation_table_reference_first(runs):
    t = results.ablation_table(runs, "radius_init")
    assert t.variant.tolist() == ["r2-learn", "r0.5-learn"] and bool(t.is_reference.iloc[0])


def test_curves_and_radii(runs_root):
    cur = results.load_curves(runs_root, PRESET)
    one = cur[(cur.ablation == "kernel") & (cur.variant == "gaussian") & (cur.seed == 0)]
    assert one.epoch.tolist() == list(range(1, EPOCHS + 1))
    assert one.val_top1.iloc[-1] == pytest.approx(top1("kernel", "gaussian", 0))
    rad = results.load_radii(runs_root, PRESET)
    g = rad[(rad.ablation == "radius_init") & (rad.variant == "r0.5-learn") & (rad.seed == 1)
            & (rad.layer == "layer3.0.conv1")]
    assert g.epoch.tolist() == list(range(0, EPOCHS + 1)) and g.radius.iloc[0] == 0.5
    assert g.radius.iloc[-1] == pytest.approx(0.5 * (1 + 0.05 * EPOCHS) + 0.01)
    assert rad[rad.ablation == "baseline"].variant.unique().tolist() == ["expatt"]


# ------------------------------------------------------------------------------------------------ claims
def _claim(**kw):
    c = {"id": "x", "paper": "p", "claim": "c", "reported": "r", "kind": "accuracy", "metric": "val_top1",
         "direction": "greater", "effect": None, "setting": {},
         "compare": {"ablation": "baseline", "variant": {"attention": "expatt"}, "reference": {"attention": "none"}}}
    c.update(kw)
    return c


def test_claims_rule(runs):
    assert judge_claim(_claim(), runs)["status"] == "consistent"          # +2 pp with 3 pairs
    aa = judge_claim(_claim(compare={"ablation": "baseline", "variant": "aa", "reference": "none"}), runs)
    assert aa["status"] == "inconsistent" and aa["n_pairs"] == 2
    se = judge_claim(_claim(compare={"ablation": "baseline", "variant": "se"}), runs)   # reference: the ablation's
    assert se["status"] == "not testable" and "includes 0" in se["why"]
    less = judge_claim(_claim(direction="less"), runs)
    assert less["status"] == "inconsistent"
    # the claimed size is judged only in the paper's own setting
    big = _claim(compare={"ablation": "baseline", "variant": "se", "reference": "none"}, effect=5.0)
    assert judge_claim(big, runs)["status"] == "not testable"
    big["setting"] = {"dataset": "fashion_mnist", "model": "resnet20"}
    assert judge_claim(big, runs)["status"] == "inconsistent"
    smoke = runs.copy()
    smoke["epochs_completed"] = 1
    r = judge_claim(_claim(), smoke)
    assert r["status"] == "not testable" and "1 epoch < 10" in r["why"]
    one = runs[runs.seed == 0]
    r = judge_claim(_claim(), one)
    assert r["status"] == "not testable" and "1 paired seed < 2" in r["why"]
    absent = judge_claim(_claim(compare={"ablation": "baseline", "variant": {"attention": "aw"}}), runs)
    assert absent["status"] == "not testable" and "no variant" in absent["why"]


def _se_vs_none():
    """se vs none in the baseline: paired deltas over seeds 0 and 1 (se seed 2 is missing)."""
    d = [top1("baseline", "se", s) - top1("baseline", "none", s) for s in (0, 1)]
    return stats.t.interval(0.95, 1, loc=np.mean(d), scale=stats.sem(d))


def test_claimed_size_judged_with_the_far_end_of_the_interval(runs):
    # an interval that holds both 0 and the claimed effect cannot tell them apart: not testable, in the setting too
    lo, hi = _se_vs_none()
    effect = round(hi / 2, 2)
    assert lo < 0 < effect < hi
    c = _claim(compare={"ablation": "baseline", "variant": "se", "reference": "none"}, effect=effect,
               setting={"dataset": "fashion_mnist", "model": "resnet20"})
    r = judge_claim(c, runs)
    assert r["status"] == "not testable" and "includes 0" in r["why"]
    assert (r["low"], r["high"]) == (pytest.approx(lo), pytest.approx(hi))
    c["effect"] = round(hi + 0.5, 2)    # beyond the interval's far end: excluded, so inconsistent
    assert judge_claim(c, runs)["status"] == "inconsistent"


def test_in_the_setting_an_interval_above_zero_but_below_the_claimed_size_is_inconsistent(runs):
    """expatt beats none by about 2 pp (interval above 0): consistent with a claimed +1, but in the paper's setting
    a claimed +20 lies beyond the interval, and that contradicts the claim although the sign agrees."""
    c = _claim(effect=1.0, setting={"dataset": "fashion_mnist", "model": "resnet20"})
    r = judge_claim(c, runs)
    assert r["status"] == "consistent" and r["low"] > 0 and r["high"] > 1.0
    c["effect"] = round(r["high"] + 5, 1)
    r = judge_claim(c, runs)
    assert r["status"] == "inconsistent" and "excludes the claimed" in r["why"]
    c["setting"] = {}                          # outside the setting the size is not judged
    assert judge_claim(c, runs)["status"] == "consistent"


def test_direction_less_uses_the_mirrored_interval(runs):
    lo, hi = _se_vs_none()
    c = _claim(compare={"ablation": "baseline", "variant": "se", "reference": "none"}, direction="less")
    assert lo < 0 < hi and judge_claim(c, runs)["status"] == "not testable"
    c = _claim(compare={"ablation": "baseline", "variant": "none", "reference": "expatt"}, direction="less")
    assert judge_claim(c, runs)["status"] == "consistent"
    # in the setting, a "less" claim of a size beyond the interval's far end
    c = _claim(compare={"ablation": "baseline", "variant": "se", "reference": "none"}, direction="less",
               effect=round(-lo + 0.5, 2), setting={"dataset": "fashion_mnist", "model": "resnet20"})
    r = judge_claim(c, runs)
    assert r["status"] == "inconsistent" and "excludes the claimed" in r["why"]


def test_the_fewest_epochs_and_any_truncated_run_make_a_claim_untestable(runs):
    short = runs.copy()
    i = short.index[(short.ablation == "baseline") & (short.variant == "expatt") & (short.seed == 1)][0]
    short.loc[i, "epochs_completed"] = 5          # one run of six stopped early
    r = judge_claim(_claim(), short)
    assert r["status"] == "not testable" and "5 epochs < 10" in r["why"]
    cut = runs.copy()
    cut.loc[i, "max_steps"] = 3
    r = judge_claim(_claim(), cut)
    assert r["status"] == "not testable" and "max_steps=3" in r["why"]
    # a finished run outside the pairs does not count: without expatt seed 2, the reference's seed 2 is unpaired
    other = runs[~((runs.ablation == "baseline") & (runs.variant == "expatt") & (runs.seed == 2))].copy()
    j = other.index[(other.ablation == "baseline") & (other.variant == "none") & (other.seed == 2)][0]
    other.loc[j, ["epochs_completed", "max_steps"]] = [1, 3]
    r = judge_claim(_claim(), other)
    assert r["status"] == "consistent" and r["n_pairs"] == 2


def test_setting_needs_every_compared_run(runs):
    big = _claim(compare={"ablation": "baseline", "variant": "se", "reference": "none"}, effect=5.0,
                 setting={"dataset": "fashion_mnist", "model": "resnet20"})
    mixed = runs.copy()
    mixed.loc[(mixed.variant == "se") & (mixed.seed == 0), "model"] = "resnet32"
    assert judge_claim(big, mixed)["status"] == "not testable"   # not the paper's setting: size not judged


def test_aw_on_top_of_gates_compares_the_combined_kinds(runs):
    claims = {c["id"]: c for c in load_claims()["claims"]}
    for gate in ("se", "cbam"):
        c = claims[f"aw_on_top_of_{gate}"]
        assert c["compare"] == {"ablation": "baseline", "variant": {"attention": f"aw+{gate}"},
                                "reference": {"attention": gate}}
        assert c.get("testable", True) is not False
    # with runs of aw+se beside se, the claim is judged on them
    se = runs[(runs.ablation == "baseline") & (runs.variant == "se")].copy()
    aw = se.copy()
    aw["variant"], aw["attention"] = "aw+se", "aw+se"
    aw["val_top1"] = aw["val_top1"] + [2.0, 2.1]
    aw["varied"] = [{"attention": "aw+se"}] * len(aw)
    aw["config"] = [{**c, "attention": "aw+se"} for c in aw["config"]]
    aw["is_reference"] = False
    both = pd.concat([runs, aw], ignore_index=True)
    r = judge_claim(claims["aw_on_top_of_se"], both)
    assert (r["variant"], r["reference"], r["n_pairs"]) == ("aw+se", "se", 2)
    assert r["status"] == "consistent" and r["value"] == pytest.approx(2.05)
    r = judge_claim(claims["aw_on_top_of_cbam"], both)
    assert r["status"] == "not testable" and "no variant" in r["why"]


# ------------------------------------------------------------------------------------------------ cost claims
def _cost(**kw):
    c = {"id": "cost", "paper": "p", "claim": "c", "reported": "r", "kind": "cost", "metric": "params",
         "direction": "less", "effect": None, "tolerance": 0.5,
         "build": {"model": "resnet20", "input_size": 16, "num_classes": 10, "variant": {"attention": "expatt"},
                   "reference": {"attention": "aa"}}}
    c.update(kw)
    return c


def test_cost_claims_are_judged_on_the_built_models_against_the_claimed_size():
    from attnrepro.flops import count_macs, count_params
    from attnrepro.models import build_model

    ex = build_model("resnet20", 10, attention="expatt", input_size=16)
    aa = build_model("resnet20", 10, attention="aa", input_size=16)
    rel = 100 * (count_params(ex) - count_params(aa)) / count_params(aa)
    assert rel < 0
    no_runs = pd.DataFrame()
    ok = judge_cost_claim(_cost(effect=round(rel + 0.4, 1)))      # within 0.5 pp
    assert ok["status"] == "consistent" and ok["value"] == pytest.approx(rel)
    assert judge_claim(_cost(effect=round(rel + 0.4, 1)), no_runs)["status"] == "consistent"   # runs play no part
    wrong = judge_cost_claim(_cost(effect=round(rel - 1.0, 1)))   # the right sign, the wrong size
    assert wrong["status"] == "inconsistent" and "> the declared tolerance 0.5 pp" in wrong["why"]
    assert judge_cost_claim(_cost(effect=round(rel - 1.0, 1), tolerance=1.5))["status"] == "consistent"
    # sign only when the paper gives no size
    assert judge_cost_claim(_cost())["status"] == "consistent"
    assert judge_cost_claim(_cost(direction="greater"))["status"] == "inconsistent"
    macs = 100 * (count_macs(ex, 16) - count_macs(aa, 16)) / count_macs(aa, 16)
    m = judge_cost_claim(_cost(metric="macs", effect=round(macs, 1)))
    assert m["status"] == "consistent" and m["value"] == pytest.approx(macs)
    no_mm = judge_cost_claim(_cost(metric="macs", effect=round(macs, 1), convention="no-attention-matmuls"))
    assert no_mm["value"] != pytest.approx(macs)


def test_cost_claims_are_checked():
    with pytest.raises(ValueError, match="tolerance"):
        check_claim(_cost(effect=-5.0, tolerance=None))
    with pytest.raises(ValueError, match="choose one of: fvcore-default"):
        check_claim(_cost(convention="tf"))
    with pytest.raises(ValueError, match="does not have the sign"):
        check_claim(_cost(effect=5.0))
    with pytest.raises(ValueError, match="choose one of: params, macs"):
        check_claim(_cost(metric="val_top1"))
    with pytest.raises(ValueError, match="build"):
        check_claim(_cost(build={"model": "resnet20"}))
    with pytest.raises(ValueError, match="lacks 'compare'"):
        check_claim({k: v for k, v in _claim().items() if k != "compare"})


def test_package_claims_all_evaluate(runs):
    claims = load_claims()
    assert len(claims["claims"]) >= 8 and "not testable" in claims["rule"]
    assert "tolerance" in claims["rule"] and "paper's own setting" in claims["rule"]
    ev = evaluate_claims(runs)
    assert set(ev.status) <= {"consistent", "inconsistent", "not testable"}
    row = ev.set_index("id").loc["expatt_over_resnet"]
    assert row.status == "consistent" and row.variant == "expatt" and row.reference == "none"
    cost = [c for c in claims["claims"] if c["kind"] == "cost"]
    assert len(cost) == 2
    for c in cost:
        assert c["build"]["model"] == "resnet152" and c["build"]["input_size"] == 224
        assert c["tolerance"] > 0 and len(c["tolerance_why"]) > 100
    empty = evaluate_claims(runs.iloc[0:0]).set_index("id")
    kinds = {c["id"]: c["kind"] for c in claims["claims"]}
    assert all(empty.loc[i, "status"] == "not testable" for i, k in kinds.items() if k == "accuracy")
    # cost claims need no runs: judged on ResNet-152 at 224 px whatever the runs hold
    from attnrepro.flops import count_params
    from attnrepro.models import build_model
    p = {a: count_params(build_model("resnet152", 1000, attention=a)) for a in ("expatt", "aa")}
    rel = 100 * (p["expatt"] - p["aa"]) / p["aa"]
    r = empty.loc["expatt_fewer_params_than_aa"]
    assert r.value == pytest.approx(rel) and r.status == ("consistent" if abs(rel + 6.4) <= 1.0 else "inconsistent")
    assert empty.loc["expatt_fewer_macs_than_aa", "status"] in ("consistent", "inconsistent")


# ------------------------------------------------------------------------------------------------ figures + report
def test_kernel_formulas_match_the_module():
    functional = pytest.importorskip("attnrepro.modules.functional")
    import torch

    H = W = 7
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - 3, xx - 3)
    for kernel in figures.KERNELS:
        k = figures.kernel_value(d, 1.7, kernel)
        mod = functional.explicit_attention_map(H, W, torch.tensor([1.7], dtype=torch.float64), kernel)[0, 24]
        assert np.allclose(k / k.sum(), mod.reshape(H, W).numpy(), atol=1e-9), kernel
    with pytest.raises(ValueError, match="gaussian"):
        figures.kernel_value(d, 1.0, "box")


def test_feature_size():
    assert figures.feature_size({"dataset": "fashion_mnist", "model": "resnet20"}, "layer3.0.conv1") == (7, 7)
    assert figures.feature_size({"dataset": "cifar10", "model": "resnet20"}, "layer2.1.conv1") == (16, 16)
    assert figures.feature_size({"dataset": "imagefolder", "image_size": 224, "model": "resnet50"},
                                "layer4.0.conv2") == (7, 7)


def test_report_items_with_runs_and_without(runs_root, tmp_path):
    rep = Report(runs_root, PRESET)
    figs = {a: len(rep.figures(a)) for a in rep.ablation_names}
    # curves everywhere; + acc-vs-MACs (baseline), + per placement, + radius + maps (expatt ablations), + kernels
    assert figs == {"kernel": 4, "radius_init": 3, "placement": 4, "baseline": 4}
    bad = rep.problem_runs()
    assert set(zip(bad.variant, bad.status)) == {("aa", "failed"), ("uniform", "incomplete"), ("se", "missing")}
    paths = rep.write_csvs(tmp_path / "out")
    base = pd.read_csv(tmp_path / "out" / "baseline.csv").set_index("variant")
    assert base.loc["expatt", "mean"] == pytest.approx(np.mean([top1("baseline", "expatt", s) for s in SEEDS]))
    assert {p.name for p in paths} >= {"runs.csv", "baseline.csv", "claims.csv", "paper_tables.csv"}
    from attnrepro import tables
    want = tables.build_tables()     # the report's section and CSV are this table (counted once per process)
    got = pd.read_csv(tmp_path / "out" / "paper_tables.csv")
    assert len(got) == len(want) and np.allclose(got["measured"], want["measured"])
    assert got["reported"].tolist() == want["reported"].tolist()
    items = rep.paper_tables_items()
    text = " ".join(x.data for x in items if isinstance(getattr(x, "data", None), str))
    assert "Paper tables" in text and "fvcore-default" in text
    for line in tables.column_verdicts(want):
        assert line.split(":")[0] in text
    assert len(items[-1].data) == len(tables.load_paper_rows())      # one table row per paper row
    empty = Report(tmp_path / "none", "smoke")
    html = " ".join(x.data for x in empty.provenance_items() if isinstance(getattr(x, "data", None), str))
    assert "No runs found" in html
    for a in empty.ablation_names:
        assert "No runs of this ablation" in empty.ablation_items(a)[-1].data
    empty.claims_items()
    empty.write_csvs(tmp_path / "empty")


def test_run_seconds_counts_a_reused_run_once(tmp_path):
    root = write_runs(tmp_path / "r")
    base = results.load_runs(root, PRESET)
    t = results.run_seconds(base)
    assert t["reused"] == 0 and t["trained"] == len(base)
    assert t["total"] == pytest.approx(10.0 * base["wall_time_s"].notna().sum())
    # placement/none is baseline/none's config: the pipeline copies the record and marks it reused_from
    for s in SEEDS:
        p = root / PRESET / "placement" / f"none-s{s}" / "metrics.json"
        m = json.loads(p.read_text())
        m["reused_from"] = f"{PRESET}/baseline/none-s{s}"
        p.write_text(json.dumps(m))
    runs = results.load_runs(root, PRESET)
    assert set(runs.loc[runs["reused_from"].notna(), "path"]) == {f"{PRESET}/placement/none-s{s}" for s in SEEDS}
    t2 = results.run_seconds(runs)
    assert t2["reused"] == 3 and t2["trained"] == len(runs) - 3 and t2["total"] == pytest.approx(t["total"] - 30.0)


def test_written_comes_from_the_record_not_the_file_time(tmp_path):
    root = write_runs(tmp_path / "r")
    p = root / PRESET / "baseline" / "none-s0" / "metrics.json"
    m = json.loads(p.read_text())
    m["finished_at"] = "2026-01-02T03:04:05+00:00"
    p.write_text(json.dumps(m))
    runs = results.load_runs(root, PRESET)
    row = runs[runs["path"] == f"{PRESET}/baseline/none-s0"].iloc[0]
    assert row["written"] == "2026-01-02 03:04 UTC"
