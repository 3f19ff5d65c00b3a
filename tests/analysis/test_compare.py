"""`attnrepro compare --preset P ABLATION A B`: B minus A paired by seed, as the report's comparisons frame has it
(synthetic records with known numbers, the on-disk records of analysis_records, and the committed cpu records
against the committed reports/cpu/comparisons.csv)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_records import PRESET
from synthetic import frame, run_rows

from attnrepro import cli
from attnrepro.analysis import stats
from attnrepro.analysis.claims import claim_comparisons, load_claims
from attnrepro.analysis.comparisons import compare, compare_pair
from attnrepro.design import AnalysisSpec

ROOT = Path(__file__).resolve().parents[2]
NONE = np.array([80.0, 81.0, 82.5, 83.0, 80.5])
SE = NONE + [1.0, 1.5, 0.5, 1.0, 1.2]
CBAM = NONE + [0.2, 1.9, 0.1, 1.6, 0.4]


@pytest.fixture
def syn() -> pd.DataFrame:
    return frame(run_rows("baseline", "none", NONE, reference=True),
                 run_rows("baseline", "se", SE, config={"attention": "se"}),
                 run_rows("baseline", "cbam", CBAM, config={"attention": "cbam"}))


def main(argv) -> int:
    return cli.main([str(a) for a in argv])


def test_a_pair_outside_the_family_gets_the_paired_figures_and_a_verdict_alone(syn):
    spec = AnalysisSpec(delta=0.5)
    row = compare_pair(syn, "baseline", "cbam", "se", spec)
    diffs = CBAM - SE
    ti = stats.t_interval(diffs, 0.95)
    assert row["variant"] == "cbam" and row["reference"] == "se" and row["n_pairs"] == 5
    assert row["delta"] == pytest.approx(diffs.mean()) == pytest.approx(-0.2)
    assert (row["delta_low"], row["delta_high"]) == pytest.approx((ti.low, ti.high))
    assert row["p"] == pytest.approx(stats.paired_t(diffs).p)
    assert row["verdict"] == "not in family" and not row["in_family"]
    assert row["alone"] == "inconclusive" and row["family_size"] == 2


def test_a_pair_the_report_compares_is_the_reports_row_either_way_round(syn):
    spec = AnalysisSpec(delta=0.5)
    full = compare(syn, spec)
    want = full[(full["variant"] == "se") & (full["reference"] == "none")].iloc[0].to_dict()
    got = compare_pair(syn, "baseline", "se", "none", spec)
    assert got["verdict"] == "above" and want["verdict"] == "above"
    for k, v in want.items():
        assert got[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(got[k])), k
    back = compare_pair(syn, "baseline", "none", "se", spec)       # none minus se: the same test, turned round
    assert back["verdict"] == "below" and back["delta"] == pytest.approx(-got["delta"])
    assert (back["delta_low"], back["delta_high"]) == pytest.approx((-got["delta_high"], -got["delta_low"]))
    assert (back["mean"], back["ref_mean"]) == (got["ref_mean"], got["mean"])
    assert back["p_adj"] == got["p_adj"] and back["p"] == got["p"]


def test_the_command_reads_the_records_and_prints_the_row(runs_root, runs, capsys):
    args = ["compare", "--preset", PRESET, "--runs-dir", runs_root]
    assert main([*args, "baseline", "none", "aa", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    claims = load_claims()          # the report's family: every variant against the reference, and the claims'
    want = compare_pair(runs, "baseline", "aa", "none", claims=claims, extra=claim_comparisons(runs, claims))
    assert got["delta"] == pytest.approx(want["delta"]) and got["verdict"] == want["verdict"]
    assert got["seeds"] == want["seeds"] and got["variant"] == "aa" and got["reference"] == "none"
    assert main([*args, "baseline", "se", "aa"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{PRESET} / baseline: aa vs se (final top-1 of aa minus se, paired by seed)")
    assert "paired seeds" in text and "verdict" in text


@pytest.mark.parametrize("words, error", [
    (["nosuch", "none", "se"], "unknown ablation 'nosuch' in preset 'tiny'; choose from: kernel, radius_init, "
                               "placement, baseline"),
    (["baseline", "none", "eca"], "unknown variant 'eca' of tiny/baseline; choose from: aa, expatt, none, se"),
    (["baseline", "se", "se"], "A and B are both 'se'"),
])
def test_an_unknown_ablation_or_variant_exits_2_naming_the_choices(words, error, runs_root, capsys):
    assert main(["compare", "--preset", PRESET, "--runs-dir", runs_root, *words]) == 2
    assert error in capsys.readouterr().err


def test_a_preset_without_records_exits_2(runs_root, capsys):
    assert main(["compare", "--preset", "nosuch", "--runs-dir", runs_root, "baseline", "none", "se"]) == 2
    assert f"no run records of preset 'nosuch' under {runs_root}; presets with records: {PRESET}" in \
        capsys.readouterr().err


# ---------------------------------------------------------------------------- the committed cpu records
def _cpu(words, capsys) -> dict:
    if not (ROOT / "runs" / "cpu").is_dir() or not (ROOT / "reports" / "cpu" / "comparisons.csv").is_file():
        pytest.skip("no committed cpu records and report")
    assert main(["compare", "--preset", "cpu", "--runs-dir", ROOT / "runs", "--notebooks-dir", ROOT / "notebooks",
                 *words, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("a, b", [("none", "se"), ("se", "aa"), ("cbam", "aw+cbam")])
def test_on_the_cpu_records_a_pair_the_report_compares_gives_its_row(a, b, capsys):
    got = _cpu(["baseline", a, b], capsys)
    table = pd.read_csv(ROOT / "reports" / "cpu" / "comparisons.csv")
    want = table[(table["ablation"] == "baseline") & (table["variant"] == b) & (table["reference"] == a)]
    assert len(want) == 1
    want = want.iloc[0]
    assert got["verdict"] == want["verdict"] and got["n_pairs"] == want["n_pairs"]
    assert " ".join(map(str, got["seeds"])) == str(want["seeds"])
    for k in ("mean", "ref_mean", "delta", "sd", "delta_low", "delta_high", "p", "p_adj", "level", "adj_low",
              "adj_high", "tost_p", "tost_p_adj", "signflip_p", "loso_kept", "welch_low", "welch_high", "mde80"):
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


def test_on_the_cpu_records_se_vs_cbam_is_outside_the_family_and_paired_by_seed(capsys):
    got = _cpu(["baseline", "se", "cbam"], capsys)
    runs = pd.read_csv(ROOT / "reports" / "cpu" / "runs.csv")
    base = runs[(runs["ablation"] == "baseline") & (runs["status"] == "finished")]
    top1 = {v: dict(zip(g["seed"], g["val_top1"])) for v, g in base.groupby("variant")}
    diffs = [top1["cbam"][s] - top1["se"][s] for s in sorted(set(top1["cbam"]) & set(top1["se"]))]
    assert got["verdict"] == "not in family" and got["n_pairs"] == len(diffs) == 5
    assert got["delta"] == pytest.approx(float(np.mean(diffs)), abs=1e-9)
    assert got["alone"] in ("above", "below", "equivalent", "inconclusive")


def test_one_seed_gives_a_delta_and_no_verdict():
    from attnrepro.analysis.cli import _compare_text

    runs = frame(run_rows("baseline", "none", [80.0], reference=True),
                 run_rows("baseline", "se", [81.5], config={"attention": "se"}))
    row = compare_pair(runs, "baseline", "se", "none")
    assert row["n_pairs"] == 1 and row["delta"] == pytest.approx(1.5) and row["verdict"] == "no pairs"
    text = _compare_text(row, "syn")
    assert "delta          +1.50 pt, 95% t interval [n/a, n/a]" in text
    assert "verdict        no pairs (fewer than two seeds where both finished)" in text
