"""attnrepro.analysis.report and .sections: what the report shows, without a kernel."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from analysis_records import (PRESET, SEEDS, top1)

from attnrepro.analysis.formats import bold_best
from attnrepro.analysis.comparisons import family_size, rule_text
from attnrepro.analysis.report import Report


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_bold_marks_the_highest_top1_and_the_fewest_params():
    t = pd.DataFrame([
        {"variant": "a", "is_reference": True, "n": 3, "n_expected": 3, "n_failed": 0, "n_incomplete": 0,
         "n_missing": 0, "mean": 90.0, "half": 0.5, "n_pairs": 3, "delta": 0.0, "delta_low": math.nan,
         "delta_high": math.nan, "params": 300.0, "macs": 10.0, "images_per_s": 5.0, "epochs": 12},
        {"variant": "b", "is_reference": False, "n": 3, "n_expected": 3, "n_failed": 0, "n_incomplete": 0,
         "n_missing": 0, "mean": 91.0, "half": 0.5, "n_pairs": 3, "delta": 1.0, "delta_low": 0.5,
         "delta_high": 1.5, "params": 200.0, "macs": 20.0, "images_per_s": 4.0, "epochs": 12}])
    from attnrepro.analysis.formats import display_table
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


def test_report_items_with_runs_and_without(runs_root, tmp_path):
    rep = Report(runs_root, PRESET)
    figs = {a: len(rep.figures(a)) for a in rep.ablation_names}
    # curves everywhere; + acc-vs-MACs (baseline), + per placement, + radius + maps (expatt ablations), + kernels
    assert figs == {"kernel": 5, "radius_init": 4, "placement": 5, "baseline": 5}   # each with paired seeds
    bad = rep.problem_runs()
    assert set(zip(bad.variant, bad.status)) == {("aa", "failed"), ("uniform", "incomplete"), ("se", "missing")}
    paths = rep.write_csvs(tmp_path / "out")
    base = pd.read_csv(tmp_path / "out" / "baseline.csv").set_index("variant")
    assert base.loc["expatt", "mean"] == pytest.approx(np.mean([top1("baseline", "expatt", s) for s in SEEDS]))
    assert {p.name for p in paths} >= {"runs.csv", "baseline.csv", "claims.csv", "paper_tables.csv",
                                       "comparisons.csv", "analysis.json"}
    design = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert design["correction"] == "holm" and design["family_size"] == family_size(rep.comparisons) > 0
    assert design["rule"] == rule_text(rep.spec, design["family_size"])
    text = " ".join(x.data for x in rep.findings_items() if isinstance(getattr(x, "data", None), str))
    assert "Design." in text and "distinct hypotheses" in text and "With n &lt; 6 paired seeds" in text
    assert "sign-flip p" in rep.findings_items()[2].to_html()
    from attnrepro.analysis import tables
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
