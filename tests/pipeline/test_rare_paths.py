"""The pipeline's rarer paths: a run whose identical twin was skipped or reused (the waiting run reuses it, it is not
recorded as failed), two ``data_dir`` in one preflight (each checked), and an ablation of which ``--variants`` names
no variant (its reference is not run alone: it has nothing to be compared with).

The notebooks are not executed (``_papermill`` writes what the engine writes, as in test_workflows.py)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from data_files import make_fashion

from attnrepro import pipeline
from attnrepro.pipeline import execution, preflight

NB = Path(__file__).resolve().parents[2] / "notebooks"
TINY = {"dataset": "synthetic", "model": "resnet20", "width": 0.25, "heads": 1, "max_steps": 2, "batch_size": 16,
        "eval_batch_size": 64, "checkpoint": False, "device": "cpu"}


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "nb"
    (d / "presets").mkdir(parents=True)
    for a in ("kernel", "placement", "baseline"):
        shutil.copy(NB / f"{a}.ipynb", d)
        shutil.copy(NB / f"{a}.yaml", d)
    pre = {"seeds": [0], "base": TINY, "ablations": {"placement": {"only": ["none", "s1"]},
                                                     "baseline": {"only": ["none", "se"]}}}
    (d / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    return d


def finish(run):
    """What the engine leaves in a folder that finished ``run``'s config."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    h = run.config.hash()
    (run.out_dir / "config.json").write_text(json.dumps({**run.config.to_dict(), "config_hash": h}))
    (run.out_dir / "metrics.json").write_text(json.dumps(
        {"status": "finished", "reason": None, "config": run.config.to_dict(), "config_hash": h,
         "final": {"val_top1": 50.0}, "wall_time_s": 1.0}))


@pytest.fixture
def calls(monkeypatch):
    made: list[str] = []

    def fake(run, kernel_name, start_timeout):
        made.append(run.name)
        finish(run)
    monkeypatch.setattr(execution, "_papermill", fake)
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=execution.KERNEL_NAME: name)
    monkeypatch.setattr(execution, "check_runs", lambda runs, jobs=1: None)
    return made


def statuses(results):
    return {r["run"]: (r["status"], r.get("reused_from")) for r in results}


def test_the_twin_of_a_run_that_was_reused_reuses_it_too(nbdir, tmp_path, calls):
    """placement/none and baseline/none share a config. In an override folder whose config of the plain net is the
    preset's, placement/none is reused from the preset's folder; baseline/none, waiting for it, reuses it in turn
    (it is neither trained nor recorded as failed)."""
    runs_dir = tmp_path / "runs"
    pipeline.run_all(pipeline.expand(["placement"], "tiny", nb_dir=nbdir, runs_dir=runs_dir), progress=False)
    assert calls == ["placement/none-s0", "placement/s1-s0"]
    calls.clear()
    runs = pipeline.expand(["placement", "baseline"], "tiny", {"kernel": "cauchy"}, nb_dir=nbdir, runs_dir=runs_dir)
    assert {r.preset for r in runs} == {"tiny+kernel=cauchy"}
    got = statuses(pipeline.run_all(runs, progress=False))
    assert sorted(calls) == ["baseline/se-s0", "placement/s1-s0"]       # the plain net is not trained again
    assert got["placement/none-s0"] == ("reused", "tiny/placement/none-s0")
    assert got["baseline/none-s0"] == ("reused", "tiny/placement/none-s0")
    m = json.loads((runs_dir / "tiny+kernel=cauchy" / "baseline" / "none-s0" / "metrics.json").read_text())
    assert m["status"] == "finished" and m["reused_from"] == "tiny/placement/none-s0"


def test_the_twin_of_a_run_that_was_skipped_reuses_it(nbdir, tmp_path, calls, monkeypatch):
    """Another pipeline finishes placement/none after this one planned it: it is skipped, and baseline/none, waiting
    for it, reuses its record (not a failure, not a second training)."""
    runs = pipeline.expand(["placement", "baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path)
    plan = execution.plan

    def plan_then_another_pipeline_finishes(rs, force=False):
        firsts, waiting = plan(rs, force=force)
        first = next(r for r in firsts if waiting[r.name])
        assert first.name == "placement/none-s0"
        finish(first)
        return firsts, waiting
    monkeypatch.setattr(execution, "plan", plan_then_another_pipeline_finishes)
    got = statuses(pipeline.run_all(runs, progress=False))
    assert got["placement/none-s0"] == ("skipped", None)
    assert got["baseline/none-s0"] == ("reused", "tiny/placement/none-s0")
    assert sorted(calls) == ["baseline/se-s0", "placement/s1-s0"]
    m = json.loads((tmp_path / "tiny" / "baseline" / "none-s0" / "metrics.json").read_text())
    assert m["status"] == "finished" and m["reused_from"] == "tiny/placement/none-s0"


def test_each_data_dir_of_one_preflight_is_checked(nbdir, tmp_path, monkeypatch):
    """Two runs of one dataset with two ``data_dir``: the one that holds the data passes, the other is named, in
    either order (the check is not made once per dataset)."""
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    make_fashion(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    base = pipeline.expand(["baseline"], "tiny", {"dataset": "fashion_mnist"}, nb_dir=nbdir, runs_dir=tmp_path)[:2]

    def with_dir(run, d):
        return dataclasses.replace(run, config=run.config.replace(data_dir=str(tmp_path / d)))
    for order in (("good", "empty"), ("empty", "good")):
        runs = [with_dir(r, d) for r, d in zip(base, order)]
        problems = preflight.run_problems(runs)
        bad = runs[order.index("empty")].name
        assert len(problems) == 1, problems
        (msg, hit), = problems.items()
        assert hit == [bad] and f"data_dir={str(tmp_path / 'empty')!r}" in msg
    assert preflight.run_problems([with_dir(r, "good") for r in base]) == {}


def test_an_ablation_with_no_named_variant_runs_nothing_not_its_reference_alone(nbdir, tmp_path, calls, capsys):
    """``--variants se`` over kernel and baseline: baseline runs se and its reference; kernel, where se is not a
    variant, runs nothing (its reference alone would have nothing to be compared with)."""
    runs = pipeline.expand(["kernel", "baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="se")
    assert sorted(r.name for r in runs) == ["baseline/none-s0", "baseline/se-s0"]
    pipeline.run_all(runs, progress=False)
    assert sorted(calls) == ["baseline/none-s0", "baseline/se-s0"] and not (tmp_path / "tiny" / "kernel").exists()
    # an ablation whose named variant is its reference runs that reference
    runs = pipeline.expand(["kernel", "baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="gaussian")
    assert [r.name for r in runs] == ["kernel/gaussian-s0"]
