"""attnrepro.analysis.findings: the verdict rule, the per-ablation findings, the README block."""
import math

import pandas as pd
import pytest

from attnrepro.analysis import figures, findings


def table(ref: str, ref_mean: float, rows: list[tuple[str, float, float, float]], n: int = 5) -> pd.DataFrame:
    """An ablation table as results.ablation_table gives it: rows are (variant, mean, delta_low, delta_high)."""
    recs = [{"variant": ref, "is_reference": True, "n": n, "mean": ref_mean, "half": 0.3, "n_pairs": n,
             "delta": 0.0, "delta_low": math.nan, "delta_high": math.nan, "delta_half": math.nan}]
    for v, mean, lo, hi in rows:
        recs.append({"variant": v, "is_reference": False, "n": n, "mean": mean, "half": 0.4, "n_pairs": n,
                     "delta": (lo + hi) / 2, "delta_low": lo, "delta_high": hi, "delta_half": (hi - lo) / 2})
    return pd.DataFrame(recs)


@pytest.mark.parametrize("low,high,n,want", [
    (0.1, 0.5, 5, "above"), (-0.5, -0.1, 5, "below"), (-0.1, 0.3, 5, "unresolved"), (0.0, 0.4, 5, "unresolved"),
    (-0.4, 0.0, 5, "unresolved"), (0.2, 0.6, 1, "no pairs"), (math.nan, math.nan, 0, "no pairs"),
])
def test_verdict(low, high, n, want):
    assert findings.verdict(low, high, n) == want


def test_best_variant_resolved_above_the_reference():
    t = {"kernel": table("gaussian", 90.0, [("laplacian", 91.0, 0.4, 1.6), ("uniform", 89.0, -1.5, -0.5),
                                           ("cauchy", 90.1, -0.3, 0.5)])}
    f = findings.findings(t).iloc[0]
    assert f["best"] == "laplacian" and f["best_resolved"]
    assert f["above"] == "laplacian" and f["below"] == "uniform" and f["unresolved"] == "cauchy"
    assert f["best_delta"] == pytest.approx(1.0) and f["best_low"] == pytest.approx(0.4)
    assert f["median_half"] == pytest.approx(0.5)          # halves 0.6, 0.5, 0.4
    assert "best: laplacian +1.00 [+0.40, +1.60] points, resolved above the reference" in f["finding"]


def test_best_variant_not_resolved_when_its_interval_holds_zero():
    t = {"kernel": table("gaussian", 90.0, [("laplacian", 90.5, -0.2, 1.2), ("uniform", 89.0, -1.5, -0.5)])}
    f = findings.findings(t).iloc[0]
    assert f["best"] == "laplacian" and not f["best_resolved"]
    assert "not resolved from the reference" in f["finding"]


@pytest.mark.parametrize("other_high,resolved", [(-0.1, True), (0.2, False)])
def test_reference_best_is_resolved_only_when_every_other_variant_is_below(other_high, resolved):
    t = {"baseline": table("none", 92.0, [("se", 91.0, -1.6, -0.4), ("aa", 91.8, -0.9, other_high)])}
    f = findings.findings(t).iloc[0]
    assert f["best"] == "none" and bool(f["best_resolved"]) is resolved


def test_comparisons_and_median_half_span_all_ablations():
    t = {"baseline": table("none", 92.0, [("se", 92.5, 0.1, 0.9)]),
         "kernel": table("gaussian", 90.0, [("uniform", 89.0, -1.6, -0.4), ("cauchy", 90.0, -1.0, 1.0)])}
    c = findings.comparisons(t)
    assert list(c["ablation"]) == ["kernel", "kernel", "baseline"]   # the report's order
    assert list(c["verdict"]) == ["below", "unresolved", "above"]
    assert findings.median_half(t) == pytest.approx(0.6)           # halves 0.6, 1.0, 0.4


def test_markdown_carries_the_table_numbers():
    t = {"kernel": table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)])}
    md = findings.findings_markdown(t, "cpu", figure="reports/cpu/figures/findings-deltas.png", command="make x")
    assert "| uniform | 88.50 ± 0.40 | -1.50 [-2.00, -1.00] | 5 | below |" in md
    assert "| gaussian (reference) | 90.00 ± 0.30 | — | 5 | — |" in md
    assert "`make x`" in md and "](reports/cpu/figures/findings-deltas.png)" in md


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
    t.to_csv(tmp_path / "kernel.csv", index=False)
    # the report's other CSVs, with the columns they share with an ablation table
    findings.comparisons({"kernel": t}).to_csv(tmp_path / "comparisons.csv", index=False)
    findings.findings({"kernel": t}).to_csv(tmp_path / "findings.csv", index=False)
    t.assign(status="finished").drop(columns=["half"]).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame({"claim": ["x"]}).to_csv(tmp_path / "claims.csv", index=False)
    got = findings.read_tables(tmp_path)
    assert list(got) == ["kernel"]
    assert findings.findings(got).iloc[0]["below"] == "uniform"
    assert findings.read_csv(tmp_path, "claims")["claim"].tolist() == ["x"]
    assert findings.read_csv(tmp_path, "nothing") is None


def test_markdown_cost_counts_trained_runs_once_and_leaves_missing_out():
    runs = pd.DataFrame({"status": ["finished", "finished", "finished", "missing"],
                         "wall_time_s": [1000.0, 3000.0, 3000.0, math.nan],
                         "reused_from": [math.nan, math.nan, "kernel/gaussian-s0", math.nan]})
    t = {"kernel": table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)])}
    md = findings.findings_markdown(t, "cpu", runs=runs)
    assert ("Training cost: 4,000 s summed over the 2 runs that trained (median 2000 s a run); 1 run reused an "
            "identical config's result and counts once.") in md
    assert "Training cost" not in findings.findings_markdown(t, "cpu")


def test_markdown_claims_table_keeps_its_cells_whole():
    claims = pd.DataFrame({"id": ["a_over_b", "cost"], "comparison": ["baseline: a vs b", "built: x vs y"],
                           "measured": [math.nan, "-6.24%"], "status": ["not testable", "consistent"],
                           "why": ["no runs of\nablation 'baseline'", "|-6.24 - (-6.4)| = 0.16 pp <= 1 pp"]})
    md = findings.findings_markdown({"kernel": table("gaussian", 90.0, [])}, "cpu", claims=claims)
    assert "1 not testable, 1 consistent." in md
    assert "| a_over_b | baseline: a vs b | — | not testable | no runs of ablation 'baseline' |" in md
    assert "| cost | built: x vs y | -6.24% | consistent | \\|-6.24 - (-6.4)\\| = 0.16 pp <= 1 pp |" in md


def test_paired_deltas_figure():
    t = {"kernel": table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0), ("cauchy", 90.2, -0.5, 0.9)])}
    fig = figures.paired_deltas(findings.comparisons(t))
    assert fig is not None and len(fig.axes[0].get_yticklabels()) == 2
    figures.to_png(fig)
    assert figures.paired_deltas(findings.comparisons({})) is None


def test_markdown_without_runs_shows_dashes_and_names_absent_ablations():
    t = table("none", 90.0, [])
    t = pd.concat([t, pd.DataFrame([{"variant": "s1", "is_reference": False, "n": 0, "mean": math.nan,
                                     "half": math.nan, "n_pairs": 0, "delta": math.nan, "delta_low": math.nan,
                                     "delta_high": math.nan, "delta_half": math.nan}])], ignore_index=True)
    md = findings.findings_markdown({"placement": t}, "cpu")
    assert "| s1 | — | — | 0 | no pairs |" in md and "nan" not in md
    assert "No finished run yet in: kernel, radius_init, baseline." in md


def test_resolved_sentence_names_each_resolved_comparison_and_counts_the_rest():
    t = {"baseline": table("none", 92.0, [("se", 92.5, 0.1, 0.9), ("aa", 91.8, -0.9, 0.3)]),
         "kernel": table("gaussian", 90.0, [("uniform", 89.0, -1.6, -0.4), ("cauchy", 90.0, -1.0, 1.0)])}
    t["kernel"].loc[2, ["n_pairs"]] = 1                              # cauchy: one paired seed only
    got = findings.resolved_sentence(findings.comparisons(t))
    assert got == ("Resolved (2 of 4 comparisons, the interval excludes 0): kernel uniform below gaussian, "
                   "-1.00 [-1.60, -0.40]; baseline se above none, +0.50 [+0.10, +0.90]. Unresolved (the interval "
                   "holds 0): 1. Without two paired seeds: 1.")
    none = findings.resolved_sentence(findings.comparisons({"kernel": table("gaussian", 90.0, [
        ("cauchy", 90.0, -1.0, 1.0)])}))
    assert none == "Resolved: none of the 1 comparisons (no interval excludes 0). Unresolved (the interval holds 0): 1."
    md = findings.findings_markdown(t, "cpu")
    assert got in md


def test_cli_writes_the_block_report_markdown_gives(tmp_path, monkeypatch, capsys):
    from attnrepro import cli

    d = tmp_path / "reports" / "cpu"
    d.mkdir(parents=True)
    table("gaussian", 90.0, [("uniform", 88.5, -2.0, -1.0)]).to_csv(d / "kernel.csv", index=False)
    pd.DataFrame({"status": ["finished"], "wall_time_s": [12.0], "reused_from": [math.nan]}).to_csv(
        d / "runs.csv", index=False)
    start, end = findings.README_START.format(preset="cpu"), findings.README_END.format(preset="cpu")
    (tmp_path / "README.md").write_text(f"# x\n{start}\nold\n{end}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["findings", "--preset", "cpu", "--readme", "README.md"]) == 0
    block = findings.readme_block(tmp_path / "README.md", "cpu")
    assert block == findings.report_markdown(d, "cpu", relative_to=tmp_path)
    assert "Training cost: 12 s" in block and "| uniform |" in block
    assert cli.main(["findings", "--preset", "smoke"]) == 2
    assert "no ablation tables under reports/smoke" in capsys.readouterr().err
