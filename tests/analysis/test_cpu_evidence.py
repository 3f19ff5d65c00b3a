"""The committed evidence of the CPU presets (`cpu`, `cpu2`, `cpu2-control`): run records under runs/<preset>/, the
report's tables under reports/<preset>/, and the README's findings blocks. A fresh clone must rebuild the same tables from the
records, skip every finished run, and show in the README what the tables say.

Until a preset's runs are committed its tests skip (saying so); once runs/<preset>/ holds records they must hold.
"""
from pathlib import Path

import pandas as pd
import pytest

from attnrepro.analysis import findings
from attnrepro.analysis.report import Report
from attnrepro.pipeline import expand, run_state

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs"
PRESETS = ("cpu", "cpu2", "cpu2-control")


def _committed(preset: str) -> bool:
    return any((RUNS / preset).glob("*/*/metrics.json"))


def _reported(preset: str) -> bool:
    return (ROOT / "reports" / preset / "comparisons.csv").is_file()


def _ablations(preset: str) -> list[str]:
    """The ablations the preset's records hold (a preset need not run all four)."""
    return sorted(p.name for p in (RUNS / preset).iterdir() if p.is_dir()) if (RUNS / preset).is_dir() else []


def _preset_runs(preset: str):
    return expand(_ablations(preset) or list(findings.ABLATION_ORDER), preset, nb_dir=ROOT / "notebooks",
                  runs_dir=RUNS)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_expands_and_trains_each_distinct_config_once(preset):
    if preset not in {p.stem for p in (ROOT / "notebooks" / "presets").glob("*.yaml")}:
        pytest.skip(f"no preset {preset} yet")
    runs = _preset_runs(preset)
    seeds = {r.seed for r in runs}
    assert len(seeds) >= 5 and min(r.config.epochs for r in runs) >= 10
    distinct = {r.config.hash() for r in runs}
    if len({r.ablation for r in runs}) > 1:
        assert len(distinct) < len(runs)      # ablations share configs (e.g. placement/none = baseline/none)
    else:                                     # within one ablation no two arms may be the same config
        assert len(distinct) == len(runs)     # (e.g. the A/A control must differ from its reference)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_finished_run_is_skipped_on_a_rerun(preset):
    if not _committed(preset):
        pytest.skip(f"the {preset} preset's run records are not committed yet (runs/{preset}/)")
    runs = _preset_runs(preset)
    states = {r.name: run_state(r) for r in runs}
    finished = [n for n, s in states.items() if s == "finished"]
    assert finished, "no finished run in the committed records"
    bad = {n: s for n, s in states.items() if s in ("stale",)}
    assert not bad, f"committed records that do not match the preset's configs: {bad}"


@pytest.mark.parametrize("preset", PRESETS)
def test_the_committed_tables_are_what_the_records_give(preset, tmp_path):
    if not (_committed(preset) and _reported(preset)):
        pytest.skip(f"the {preset} preset has no committed records and report yet")
    report = ROOT / "reports" / preset
    rep = Report(RUNS, preset, grids_dir=ROOT / "notebooks")
    out = tmp_path / preset
    rep.write_csvs(out)
    names = [*rep.tables, "findings", "comparisons", "claims", "runs"]
    for name in names:
        got, want = pd.read_csv(out / f"{name}.csv"), pd.read_csv(report / f"{name}.csv")
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=f"reports/{preset}/{name}.csv")
    assert findings.read_design(out) == findings.read_design(report)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_readme_block_is_generated_from_the_committed_tables(preset):
    if not _reported(preset):
        pytest.skip(f"the {preset} preset has no committed report yet")
    block = findings.readme_block(ROOT / "README.md", preset)
    assert block is not None, f"README.md has no {preset} findings block"
    want = findings.report_markdown(ROOT / "reports" / preset, preset, relative_to=ROOT)
    assert block == want, (f"README's {preset} findings differ from reports/{preset}: run attnrepro findings "
                           f"--preset {preset} --readme README.md")
