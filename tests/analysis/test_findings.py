"""attnrepro.analysis.findings: the per-ablation findings from the family-wise verdicts, and the README block."""
import math

import pandas as pd
import pytest

from attnrepro.analysis import figures, findings
from attnrepro.analysis.comparisons import COLUMNS


def table(ref: str, ref_mean: float, rows: list[tuple[str, float, float, float]], n: int = 5) -> pd.DataFrame:
    """An ablation table as results.ablation_table gives it: rows are (variant, mean, delta_low, delta_high)."""
    recs = [{"variant": ref, "is_reference": True, "n": n, "mean": ref_mean, "half": 0.3, "n_pairs": n,
             "delta": 0.0, "delta_low": math.nan, "delta_high": math.nan, "delta_half": math.nan}]
    for v, mean, lo, hi in rows:
        recs.append({"variant": v, "is_reference": False, "n": n, "mean": mean, "half": 0.4, "n_pairs": n,
                     "delta": (lo + hi) / 2, "delta_low": lo, "delta_high": hi, "delta_half": (hi - lo) / 2})
    return pd.DataFrame(recs)


def comps(*rows) -> pd.DataFrame:
    """A comparisons frame: rows are (ablation, variant, reference, mean, delta_low, delta_high, verdict[, extra])."""
    recs = []
    for ablation, v, r, mean, lo, hi, verdict, *extra in rows:
        rec = {c: math.nan for c in COLUMNS}
        rec.update(ablation=ablation, variant=v, reference=r, in_family=True, same_as="", source="reference",
                   n_pairs=5, seeds=[0, 1, 2, 3, 4], mean=mean, delta=(lo + hi) / 2, delta_low=lo, delta_high=hi,
                   delta_half=(hi - lo) / 2, p=0.01, p_adj=0.04, verdict=verdict, mde80=1.5)
        rec.update(extra[0] if extra else {})
        recs.append(rec)
    return pd.DataFrame(recs, columns=COLUMNS)


def test_best_variant_resolved_above_the_reference():
    t = {"kernel": table("gaussian", 90.0, [("laplacian", 91.0, 0.4, 1.6), ("uniform", 89.0, -1.5, -0.5),
                                           ("cauchy", 90.1, -0.3, 0.5)])}
    c = comps(("kernel", "laplacian", "gaussian", 91.0, 0.4, 1.6, "above"),
              ("kernel", "uniform", "gaussian", 89.0, -1.5, -0.5, "below"),
              ("kernel", "cauchy", "gaussian", 90.1, -0.3, 0.5, "equivalent"))
    f = findings.findings(t, c).iloc[0]
    assert f["best"] == "laplacian" and f["best_resolved"]
    assert (f["above"], f["below"], f["equivalent"], f["inconclusive"]) == ("laplacian", "uniform", "cauchy", "")
    assert f["best_delta"] == pytest.approx(1.0) and f["best_low"] == pytest.approx(0.4)
    assert f["median_half"] == pytest.approx(0.5)          # halves 0.6, 0.5, 0.4
    assert "best: laplacian +1.00 [+0.40, +1.60] points, resolved above the reference" in f["finding"]
    assert "equivalent: cauchy" in f["finding"]


def test_the_verdict_decides_not_the_raw_interval():
    """A raw interval above 0 whose family-wise verdict is inconclusive is not resolved."""
    t = {"kernel": table("gaussian", 90.0, [("laplacian", 90.8, 0.1, 1.5)])}
    f = findings.findings(t, comps(("kernel", "laplacian", "gaussian", 90.8, 0.1, 1.5, "inconclusive"))).iloc[0]
    assert f["best"] == "laplacian" and not f["best_resolved"] and f["inconclusive"] == "laplacian"
    assert "not resolved from the reference" in f["finding"]


@pytest.mark.parametrize("aa_verdict,resolved", [("below", True), ("inconclusive", False), ("equivalent", False)])
def test_reference_best_is_resolved_only_when_every_other_variant_is_below(aa_verdict, resolved):
    t = {"baseline": table("none", 92.0, [("se", 91.0, -1.6, -0.4), ("aa", 91.8, -0.9, -0.1)])}
    c = comps(("baseline", "se", "none", 91.0, -1.6, -0.4, "below"),
              ("baseline", "aa", "none", 91.8, -0.9, -0.1, aa_verdict))
    f = findings.findings(t, c).iloc[0]
    assert f["best"] == "none" and bool(f["best_resolved"]) is resolved


def test_median_half_counts_each_hypothesis_once():
    c = comps(("kernel", "uniform", "gaussian", 89.0, -1.6, -0.4, "below"),
              ("kernel", "cauchy", "gaussian", 90.0, -1.0, 1.0, "inconclusive"),
              ("baseline", "se", "none", 92.5, 0.1, 0.9, "above"),
              ("baseline", "x", "none", 92.5, 0.1, 0.9, "above", {"same_as": "baseline: se vs none"}))
    assert findings.median_half(c) == pytest.approx(0.6)           # halves 0.6, 1.0, 0.4; the duplicate once


def test_resolved_sentence_names_each_resolved_comparison_and_counts_the_rest():
    c = comps(("kernel", "uniform", "gaussian", 89.0, -1.6, -0.4, "below", {"p_adj": 0.012}),
              ("kernel", "cauchy", "gaussian", 90.0, -1.0, 1.0, "inconclusive"),
              ("baseline", "se", "none", 92.5, 0.1, 0.9, "above", {"p_adj": 0.0004}),
              ("baseline", "aa", "none", 92.5, -0.2, 0.2, "equivalent"),
              ("baseline", "aw", "none", math.nan, math.nan, math.nan, "no pairs"),
              ("baseline", "x", "none", 92.5, 0.1, 0.9, "above", {"same_as": "baseline: se vs none"}),
              ("baseline", "y", "none", 92.5, 0.1, 0.9, "not in family", {"in_family": False}))
    got = findings.resolved_sentence(c, 0.5)
    assert got == ("Resolved (2 of 5 distinct comparisons, family-wise): kernel uniform vs gaussian: below, -1.00 "
                   "[-1.60, -0.40], adjusted p 0.012; baseline se vs none: above, +0.50 [+0.10, +0.90], adjusted p "
                   "< 0.001. Equivalent within ±0.5 pt: 1. Inconclusive: 1. Without two paired seeds: 1.")
    none = findings.resolved_sentence(comps(("kernel", "cauchy", "gaussian", 90.0, -1.0, 1.0, "inconclusive")))
    assert none == "Resolved family-wise: none of the 1 distinct comparisons. Inconclusive: 1."


def test_markdown_carries_the_table_numbers_and_the_rule():
    t = {"kernel": table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)])}
    c = comps(("kernel", "uniform", "gaussian", 88.5, -2.0, -1.0, "below", {"p": 0.002, "p_adj": 0.03}))
    design = {"rule": "RULE TEXT.", "delta": 0.5, "note": "declared late"}
    md = findings.findings_markdown(t, c, "cpu", design=design, figure="reports/cpu/figures/findings-deltas.png",
                                    command="make x")
    assert "| uniform | 88.50 ± 0.40 | -1.50 [-2.00, -1.00] | 5 | 0.002 | 0.030 | below |" in md
    assert "| gaussian (reference) | 90.00 ± 0.30 | — | 5 | — | — | — |" in md
    assert "`make x`" in md and "](reports/cpu/figures/findings-deltas.png)" in md
    assert "The rule: RULE TEXT. " + findings.BEST_RULE in md and "Note on this preset's design: declared late" in md
    eq = comps(("kernel", "uniform", "gaussian", 88.5, -0.2, 0.1, "equivalent"))
    assert "| equivalent ±0.5 |" in findings.findings_markdown(t, eq, "cpu", design=design)


def test_update_readme_replaces_only_the_block(tmp_path):
    start, end = findings.README_START.format(preset="cpu"), findings.README_END.format(preset="cpu")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{start}\nold text\n{end}\nafter\n")
    assert findings.update_readme(readme, "cpu", "new body\n")
    assert readme.read_text() == f"# title\n\nbefore\n{start}\nnew body\n{end}\nafter\n"
    assert not findings.update_readme(readme, "cpu", "new body\n")       # idempotent
    assert findings.readme_block(readme, "cpu") == "new body\n"
    with pytest.raises(ValueError, match="no findings block for preset 'smoke'"):
        findings.update_readme(readme, "smoke", "x\n")


def test_read_tables_round_trip_takes_only_ablation_tables(tmp_path):
    t = table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)])
    c = comps(("kernel", "uniform", "gaussian", 88.5, -2.0, -1.0, "below"))
    t.to_csv(tmp_path / "kernel.csv", index=False)
    c.to_csv(tmp_path / "comparisons.csv", index=False)        # the report's other CSVs share some columns
    findings.findings({"kernel": t}, c).to_csv(tmp_path / "findings.csv", index=False)
    t.assign(status="finished").drop(columns=["half"]).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame({"claim": ["x"]}).to_csv(tmp_path / "claims.csv", index=False)
    got = findings.read_tables(tmp_path)
    assert list(got) == ["kernel"]
    back = findings.read_comparisons(tmp_path)
    assert findings.findings(got, back).iloc[0]["below"] == "uniform"
    assert findings.read_csv(tmp_path, "claims")["claim"].tolist() == ["x"]
    assert findings.read_csv(tmp_path, "nothing") is None and findings.read_design(tmp_path) == {}


def test_markdown_cost_counts_trained_runs_once_and_leaves_missing_out():
    runs = pd.DataFrame({"status": ["finished", "finished", "finished", "missing"],
                         "wall_time_s": [1000.0, 3000.0, 3000.0, math.nan],
                         "reused_from": [math.nan, math.nan, "kernel/gaussian-s0", math.nan]})
    t = {"kernel": table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)])}
    c = comps(("kernel", "uniform", "gaussian", 88.5, -2.0, -1.0, "below"))
    md = findings.findings_markdown(t, c, "cpu", runs=runs)
    assert ("Training cost: 4,000 s summed over the 2 runs that trained (median 2000 s a run); 1 run reused an "
            "identical config's result and counts once.") in md
    assert "Training cost" not in findings.findings_markdown(t, c, "cpu")


def test_markdown_claims_table_keeps_its_cells_whole():
    claims = pd.DataFrame({"id": ["a_over_b", "cost"], "comparison": ["baseline: a vs b", "built: x vs y"],
                           "measured": [math.nan, "-6.24%"], "status": ["not run", "consistent"],
                           "why": ["no runs of\nablation 'baseline'", "|-6.24 - (-6.4)| = 0.16 pp <= 1 pp"]})
    md = findings.findings_markdown({"kernel": table("gaussian", 90.0, [])}, comps(), "cpu", claims=claims)
    assert "1 not run, 1 consistent." in md
    assert "| a_over_b | baseline: a vs b | — | not run | no runs of ablation 'baseline' |" in md
    assert "| cost | built: x vs y | -6.24% | consistent | \\|-6.24 - (-6.4)\\| = 0.16 pp <= 1 pp |" in md


def test_paired_deltas_figure_draws_each_hypothesis_once():
    c = comps(("kernel", "uniform", "gaussian", 88.5, -2.0, -1.0, "below", {"adj_low": -2.3, "adj_high": -0.7}),
              ("kernel", "cauchy", "gaussian", 90.2, -0.5, 0.9, "inconclusive"),
              ("baseline", "x", "none", 92.5, 0.1, 0.9, "above", {"same_as": "kernel: cauchy vs gaussian"}))
    fig = figures.paired_deltas(c)
    assert fig is not None and len(fig.axes[0].get_yticklabels()) == 2
    figures.to_png(fig)
    assert figures.paired_deltas(comps()) is None


def test_markdown_without_runs_shows_dashes_and_names_absent_ablations():
    t = table("none", 90.0, [])
    t = pd.concat([t, pd.DataFrame([{"variant": "s1", "is_reference": False, "n": 0, "mean": math.nan,
                                     "half": math.nan, "n_pairs": 0, "delta": math.nan, "delta_low": math.nan,
                                     "delta_high": math.nan, "delta_half": math.nan}])], ignore_index=True)
    c = comps(("placement", "s1", "none", math.nan, math.nan, math.nan, "no pairs",
               {"n_pairs": 0, "p": math.nan, "p_adj": math.nan}))
    md = findings.findings_markdown({"placement": t}, c, "cpu")
    assert "| s1 | — | — | 0 | — | — | no pairs |" in md and "nan" not in md
    assert "No finished run yet in: kernel, radius_init, baseline." in md


def test_cli_writes_the_block_report_markdown_gives(tmp_path, monkeypatch, capsys):
    from attnrepro import cli

    d = tmp_path / "reports" / "cpu"
    d.mkdir(parents=True)
    table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)]).to_csv(d / "kernel.csv", index=False)
    comps(("kernel", "uniform", "gaussian", 88.5, -2.0, -1.0, "below")).to_csv(d / "comparisons.csv", index=False)
    pd.DataFrame({"status": ["finished"], "wall_time_s": [12.0], "reused_from": [math.nan]}).to_csv(
        d / "runs.csv", index=False)
    (d / "analysis.json").write_text('{"rule": "THE RULE.", "delta": 0.5}')
    start, end = findings.README_START.format(preset="cpu"), findings.README_END.format(preset="cpu")
    (tmp_path / "README.md").write_text(f"# x\n{start}\nold\n{end}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["findings", "--preset", "cpu", "--readme", "README.md"]) == 0
    block = findings.readme_block(tmp_path / "README.md", "cpu")
    assert block == findings.report_markdown(d, "cpu", relative_to=tmp_path)
    assert "Training cost: 12 s" in block and "| uniform |" in block and "THE RULE." in block
    assert cli.main(["findings", "--preset", "smoke"]) == 2
    assert "no ablation tables under reports/smoke" in capsys.readouterr().err
