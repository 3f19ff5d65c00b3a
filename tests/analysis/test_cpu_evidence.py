"""The committed evidence of the `cpu` preset: run records under runs/cpu/, the report's tables under reports/cpu/,
and the README's findings block. A fresh clone must rebuild the same tables from the records, skip every finished
run, and show in the README what the tables say.

Until the preset's runs are committed these tests skip (saying so); once runs/cpu/ holds records they must hold.
"""
from pathlib import Path

import pandas as pd
import pytest

from attnrepro.analysis import findings
from attnrepro.analysis.report import ABLATIONS, Report
from attnrepro.pipeline import expand, run_state

ROOT = Path(__file__).resolve().parents[2]
RUNS, REPORT = ROOT / "runs", ROOT / "reports" / "cpu"

committed = pytest.mark.skipif(not any((RUNS / "cpu").glob("*/*/metrics.json")),
                               reason="the cpu preset's run records are not committed yet (runs/cpu/)")


def _preset_runs():
    return expand(list(ABLATIONS), "cpu", nb_dir=ROOT / "notebooks", runs_dir=RUNS)


def test_the_cpu_preset_expands_and_trains_each_distinct_config_once():
    runs = _preset_runs()
    seeds = {r.seed for r in runs}
    assert len(seeds) >= 5 and min(r.config.epochs for r in runs) >= 10
    distinct = {r.config.hash() for r in runs}
    assert len(distinct) < len(runs)          # ablations share configs (e.g. placement/none = baseline/none)


@committed
def test_every_finished_run_is_skipped_on_a_rerun():
    runs = _preset_runs()
    states = {r.name: run_state(r) for r in runs}
    finished = [n for n, s in states.items() if s == "finished"]
    assert finished, "no finished run in the committed records"
    bad = {n: s for n, s in states.items() if s in ("stale",)}
    assert not bad, f"committed records that do not match the preset's configs: {bad}"


@committed
def test_the_committed_tables_are_what_the_records_give(tmp_path):
    rep = Report(RUNS, "cpu", grids_dir=ROOT / "notebooks")
    out = tmp_path / "cpu"
    rep.write_csvs(out)
    names = [*rep.tables, "findings", "comparisons", "claims", "runs"]
    for name in names:
        got, want = pd.read_csv(out / f"{name}.csv"), pd.read_csv(REPORT / f"{name}.csv")
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=f"reports/cpu/{name}.csv")


@committed
def test_the_readme_block_is_generated_from_the_committed_tables():
    block = findings.readme_block(ROOT / "README.md", "cpu")
    assert block is not None, "README.md has no cpu findings block"
    want = findings.report_markdown(REPORT, "cpu", relative_to=ROOT)
    assert block == want, ("README's cpu findings differ from reports/cpu: run attnrepro findings --preset cpu "
                           "--readme README.md")
