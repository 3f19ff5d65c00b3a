"""attnrepro.analysis.results and .stats: run folders -> frames -> statistics over seeds."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from analysis_records import (EPOCHS, GRID, FAIL_REASON, MISSING, PARAMS, PRESET, SEEDS, top1,
                              write_runs)

from attnrepro.analysis import results


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


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


def test_natural_order_and_ablation_order(runs):
    assert sorted(["r10", "r2", "r0.5", "r1", "s10", "s2"], key=results.natural_key) == \
        ["r0.5", "r1", "r2", "r10", "s2", "s10"]
    extra = runs.iloc[:1].copy()
    extra["ablation"] = "aaa"
    assert results.ablations(pd.concat([extra, runs])) == ["kernel", "radius_init", "placement", "baseline", "aaa"]


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


def test_run_seconds_counts_a_reused_run_once(tmp_path):
    root = write_runs(tmp_path / "r")
    base = results.load_runs(root, PRESET)
    t = results.run_seconds(base)
    assert t["reused"] == 0 and t["trained"] == len(base)
    assert t["total"] == pytest.approx(10.0 * base["wall_time_s"].notna().sum())
    # placement/none is baseline/none's config: the pipeline copies the record and marks it reused_from
    # (and the link is only trusted while the folder it names holds that config: same hash, finished)
    for s in SEEDS:
        src, dst = root / PRESET / "baseline" / f"none-s{s}", root / PRESET / "placement" / f"none-s{s}"
        m = {**json.loads((dst / "metrics.json").read_text()),
             "config_hash": json.loads((src / "metrics.json").read_text())["config_hash"],
             "reused_from": f"{PRESET}/baseline/none-s{s}"}
        if (dst / "config.json").exists():
            c = json.loads((dst / "config.json").read_text())
            (dst / "config.json").write_text(json.dumps({**c, "config_hash": m["config_hash"]}))
        (dst / "metrics.json").write_text(json.dumps(m))
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


def test_the_training_code_line_says_same_or_names_the_groups_that_differ(tmp_path):
    a = {"train": "t1", "models": "m1", "modules": "x1", "data": "d1", "config": "c1"}
    assert results.training_code_text({"p/k/a-s0": a, "p/k/a-s1": dict(a)}).startswith(
        "same training code in all 2 trained run(s)")
    text = results.training_code_text({"p/k/a-s0": a, "p/k/a-s1": {**a, "train": "t2"}, "p/k/a-s2": dict(a)})
    assert "differs" in text and "train (2 versions: t1 in 2, t2 in 1)" in text and "models" not in text
    assert "1 run(s) record no code hashes" in results.training_code_text({"p/k/a-s0": a, "p/k/b-s0": {}})
    assert results.training_code_text({"p/k/a-s0": {}}).startswith("not recorded")
    # from the files: a reused copy is not counted again, a failed run not at all
    root = write_runs(tmp_path / "r")
    dirs = sorted(p.parent for p in (root / PRESET).glob("*/*/metrics.json"))
    for i, d in enumerate(dirs):
        m = json.loads((d / "metrics.json").read_text())
        m.setdefault("env", {})["code"] = {**a, "train": "t2" if i == 0 else "t1"}
        (d / "metrics.json").write_text(json.dumps(m))
    code = results.training_code(root, PRESET)
    finished = [d for d in dirs if json.loads((d / "metrics.json").read_text()).get("status") == "finished"]
    assert len(code) == len(finished) and "differs" in results.training_code_text(code)
