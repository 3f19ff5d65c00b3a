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
from attnrepro.report import Report, evaluate_claims, judge_claim, load_claims

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
    cost = judge_claim(_claim(kind="cost", metric="params", direction="less",
                              compare={"ablation": "baseline", "variant": "expatt", "reference": "aa"}), runs)
    assert cost["status"] == "consistent"
    assert cost["value"] == pytest.approx(100 * (PARAMS["expatt"] - PARAMS["aa"]) / PARAMS["aa"])


def test_package_claims_all_evaluate(runs):
    claims = load_claims()
    assert len(claims["claims"]) >= 8 and "not testable" in claims["rule"]
    ev = evaluate_claims(runs)
    assert set(ev.status) <= {"consistent", "inconsistent", "not testable"}
    row = ev.set_index("id").loc["expatt_over_resnet"]
    assert row.status == "consistent" and row.variant == "expatt" and row.reference == "none"
    assert evaluate_claims(runs.iloc[0:0]).status.eq("not testable").all()


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
    assert {p.name for p in paths} >= {"runs.csv", "baseline.csv", "claims.csv"}
    empty = Report(tmp_path / "none", "smoke")
    html = " ".join(x.data for x in empty.provenance_items() if isinstance(getattr(x, "data", None), str))
    assert "No runs found" in html
    for a in empty.ablation_names:
        assert "No runs of this ablation" in empty.ablation_items(a)[-1].data
    empty.claims_items()
    empty.write_csvs(tmp_path / "empty")
