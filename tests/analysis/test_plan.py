"""attnrepro.analysis.plan and `attnrepro plan`: the seeds a preset needs, from the paired SDs of its records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import null_family

from attnrepro import cli
from attnrepro.analysis import stats
from attnrepro.analysis.comparisons import compare
from attnrepro.analysis.plan import plan_table
from attnrepro.design import AnalysisSpec

ROOT = Path(__file__).resolve().parents[2]


def test_plan_is_the_power_calculation_at_the_strictest_level():
    rng = np.random.default_rng(3)
    comp = compare(null_family(rng, 4, 6), AnalysisSpec(), robustness=False)
    table, m, alpha = plan_table(comp, AnalysisSpec(), 0.5)
    assert m == 4 and alpha == pytest.approx(0.05 / 4)
    row = table.set_index("ablation").loc["sim"]
    sds = comp["sd"]
    assert row["sd_median"] == pytest.approx(sds.median()) and row["sd_max"] == pytest.approx(sds.max())
    assert row["seeds_median_sd"] == stats.seeds_needed(0.5, sds.median(), 0.05 / 4)
    assert row["seeds_max_sd"] == stats.seeds_needed(0.5, sds.max(), 0.05 / 4)
    assert row["detectable_now"] == pytest.approx(stats.detectable_effect(sds.median(), 6, 0.05 / 4))
    # a larger family, a given SD, no correction
    t2, m2, a2 = plan_table(comp, AnalysisSpec(), 0.5, m=11, sd=0.7)
    assert (m2, a2) == (11, pytest.approx(0.05 / 11))
    assert (t2["seeds_median_sd"] == stats.seeds_needed(0.5, 0.7, 0.05 / 11)).all()
    t3, _, a3 = plan_table(comp, AnalysisSpec(correction="none"), 0.5)
    assert a3 == 0.05 and (t3["seeds_median_sd"] <= table["seeds_median_sd"]).all()
    with pytest.raises(ValueError, match="delta"):
        plan_table(comp, AnalysisSpec(), 0.0)


def test_cli_plans_the_cpu_preset_from_its_records(capsys):
    assert cli.main(["plan", "--preset", "cpu", "--delta", "0.5", "--runs-dir", str(ROOT / "runs"),
                     "--notebooks-dir", str(ROOT / "notebooks")]) == 0
    out = capsys.readouterr().out
    assert "preset cpu: a family of 20 distinct comparisons, Holm at alpha 0.05" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert set(lines) == {"kernel", "radius_init", "placement", "baseline", "all"}
    assert lines["all"].split()[1] == "20"


@pytest.mark.parametrize("args,msg", [(["--preset", "nosuch", "--delta", "0.5"], "unknown preset 'nosuch'"),
                                      (["--preset", "cpu", "--delta", "-1"], "--delta -1.0: must be > 0"),
                                      (["--preset", "cpu", "--delta", "1", "--power", "1.5"], "--power 1.5")])
def test_cli_rejects_bad_input(args, msg, capsys):
    assert cli.main(["plan", *args, "--notebooks-dir", str(ROOT / "notebooks")]) == 2
    assert msg in capsys.readouterr().err
