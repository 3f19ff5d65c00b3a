"""`attnrepro report` end to end: one papermill execution of notebooks/report.ipynb on run folders written by the
tests (a failed run, an incomplete run, a missing seed), then checks on the HTML and CSVs against those files."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attnrepro import cli
from analysis_records import FAIL_REASON, PRESET, SEEDS, top1, write_runs

BENCH_MD = "# attnrepro bench (cpu)\n\n- date: today\n\n| layer | ms |\n|---|---|\n| expatt-bench-row | 1.25 |\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    write_runs(root / "runs")
    (root / "reports" / "bench").mkdir(parents=True)
    (root / "reports" / "bench" / "bench.md").write_text(BENCH_MD)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        rc = cli.main(["report", "--preset", PRESET, "--runs-dir", "runs", "--out", "reports"])
    finally:
        mp.undo()
    assert rc == 0
    out = root / "reports" / PRESET
    return out, (out / "report.html").read_text()


@pytest.mark.slow
def test_html_is_self_contained_with_figures(built):
    out, html = built
    imgs = re.findall(r"<img[^>]*src=\"data:image/png;base64,[A-Za-z0-9+/=]{100,}", html)
    # 1 (findings) + 5 (kernel) + 4 (radius_init) + 5 (placement) + 5 (baseline) figures
    assert len(imgs) == 20
    assert not re.search(r"<script[^>]*src=", html) and "cdnjs" not in html and "mathjax" not in html.lower()
    assert "from attnrepro.analysis.report import" not in html          # code cells hidden
    for section in ("Findings", "Provenance", "Ablation: kernel", "Ablation: radius_init", "Ablation: placement",
                    "Ablation: baseline", "claims beside these runs", "Paper tables", "Benchmarks"):
        assert section in html
    assert "expatt-bench-row" in html and re.search(r"<table[^>]*>.*expatt-bench-row", html, re.S)
    assert re.search(r"<h3[^>]*>attnrepro bench \(cpu\)", html)          # its h1, under the report's h2


@pytest.mark.slow
def test_html_names_failed_and_missing_runs(built):
    _, html = built
    assert FAIL_REASON in html
    assert "no run folder se-s2" in html and "incomplete" in html
    assert "29: 27 finished, 1 failed, 1 incomplete; 1 expected but missing" in html


@pytest.mark.slow
def test_paper_tables_section(built):
    _, html = built
    section = html[html.index("Paper tables"):html.index("Benchmarks")]
    for model in ("AA-ResNet-50", "SE-WRN-28-10", "expatt vs aa on resnet152"):
        assert model in section
    assert "no convention reproduces every row" in section or "reproduced within the paper" in section
    assert section.count("<code>resnet-v1-strides") >= 1 and "fvcore-default" in section


@pytest.mark.slow
def test_tables_match_the_run_files(built):
    out, html = built
    x = [top1("baseline", "expatt", s) for s in SEEDS]
    half = stats.t.ppf(0.975, 2) * stats.sem(x)
    assert f"{np.mean(x):.2f} ± {half:.2f} (n=3)" in html
    d = [top1("baseline", "aa", s) - top1("baseline", "none", s) for s in (0, 2)]   # aa seed 1 failed
    lo, hi = stats.t.interval(0.95, 1, loc=np.mean(d), scale=stats.sem(d))
    assert f"{np.mean(d):+.2f} [{lo:+.2f}, {hi:+.2f}] (n=2)" in html
    base = pd.read_csv(out / "baseline.csv").set_index("variant")
    assert base.loc["expatt", "mean"] == pytest.approx(np.mean(x)) and base.loc["aa", "n_failed"] == 1
    assert base.loc["se", "n_missing"] == 1
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.status) == {"finished", "failed", "incomplete", "missing"}
    claims = pd.read_csv(out / "claims.csv").set_index("id")
    assert claims.loc["expatt_over_resnet", "status"] == "consistent"
    # cost claims are judged on the paper's models, not on these runs' resnet20s
    from attnrepro.analysis import tables
    paper = pd.read_csv(out / "paper_tables.csv")
    rel = paper[(paper.table == "claim expatt_fewer_params_than_aa") & (paper.convention == "fvcore-default")]
    assert claims.loc["expatt_fewer_params_than_aa", "value"] == pytest.approx(rel.measured.iloc[0])
    assert claims.loc["expatt_fewer_params_than_aa", "status"] in ("consistent", "inconsistent")
    assert len(paper) == len(tables.load_paper_rows()) * len(tables.CONVENTIONS)
    assert (out / "report.ipynb").is_file() and (out / "figures" / "baseline-top1_vs_macs.png").is_file()


@pytest.mark.slow
def test_findings_at_the_top_generated_from_the_tables(built):
    from attnrepro.analysis import findings

    out, html = built
    assert html.index("<h2>Findings</h2>") < html.index("<h2>Provenance</h2>") < html.index("Ablation: kernel")
    tables = findings.read_tables(out)
    assert set(tables) == {"baseline", "kernel", "radius_init", "placement"}   # and none of the other CSVs
    f = pd.read_csv(out / "findings.csv").set_index("ablation")
    again = findings.findings(tables, findings.read_comparisons(out)).set_index("ablation")
    assert list(f["finding"]) == list(again["finding"])
    for sentence in again["finding"]:
        assert sentence.replace("±", "&plusmn;") in html or sentence in html
    assert (out / "figures" / "findings-deltas.png").is_file()
    assert "training time" in html and "s summed over the" in html


def test_export_html_is_the_same_for_the_same_notebook(tmp_path):
    """papermill gives its injected cell a random id and the HTML shows cell ids: the export numbers them instead."""
    import uuid

    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from attnrepro.analysis import report

    pages = []
    for k in range(2):
        cell = new_code_cell("x = 1")
        cell["id"] = uuid.uuid4().hex[:8]          # as papermill's injected-parameters cell
        nb = tmp_path / f"r{k}.ipynb"
        nbformat.write(new_notebook(cells=[new_markdown_cell("# hi"), cell]), str(nb))
        pages.append(report.export_html(nb, tmp_path / f"r{k}.html").read_text())
    assert pages[0] == pages[1]


def test_an_unknown_preset_exits_2_with_the_choices_and_builds_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine" / "kernel").mkdir(parents=True)
    assert cli.main(["report", "--preset", "nosuch", "--runs-dir", "runs", "--out", "reports"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown preset 'nosuch'" in err
    assert "smoke" in err and "mine" in err          # the declared presets and the runs folders found
    assert not (tmp_path / "reports").exists()
