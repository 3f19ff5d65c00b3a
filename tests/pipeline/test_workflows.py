"""A researcher's workflows on a runs folder that holds finished records: tweak a parameter, add seeds or variants,
change the preset. No command replaces a finished record unasked (``--replace``, ``--force``: the records stay byte-identical),
overrides go to folders of their own, reuse links are checked, and a record whose files disagree is ``corrupt``.

The notebooks are not executed here (``_papermill`` is replaced by a stand-in that writes what the engine writes);
tests/pipeline/test_pipeline.py executes the real ones. The rarer paths (a twin skipped or reused, two ``data_dir`` in
one preflight, an ablation with no named variant) are at the end.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
from data_files import make_fashion

from attnrepro import cli, pipeline
from attnrepro.analysis import results
from attnrepro.pipeline import execution, preflight, runstate

NB = Path(__file__).resolve().parents[2] / "notebooks"
TINY = {"dataset": "synthetic", "model": "resnet20", "width": 0.25, "heads": 1, "max_steps": 2, "batch_size": 16,
        "eval_batch_size": 64, "checkpoint": False, "device": "cpu"}


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "nb"
    (d / "presets").mkdir(parents=True)
    for a in ("kernel", "radius_init", "placement", "baseline"):
        shutil.copy(NB / f"{a}.ipynb", d)
        shutil.copy(NB / f"{a}.yaml", d)
    (d / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0, 1], "base": TINY}))
    return d


@pytest.fixture
def calls(monkeypatch):
    """Stand in for papermill: write config.json and a finished metrics.json, as the engine does."""
    made: list[str] = []

    def fake(run, kernel_name, start_timeout):
        made.append(run.name)
        h = run.config.hash()
        (run.out_dir / "config.json").write_text(json.dumps({**run.config.to_dict(), "config_hash": h}))
        (run.out_dir / "metrics.json").write_text(json.dumps(
            {"status": "finished", "reason": None, "config": run.config.to_dict(), "config_hash": h,
             "final": {"val_top1": 50.0 + run.seed}, "wall_time_s": 1.0}))
    monkeypatch.setattr(execution, "_papermill", fake)
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=execution.KERNEL_NAME: name)
    monkeypatch.setattr(execution, "check_runs", lambda runs, **k: None)
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("run", "list")})
    return made


def attn(argv, nbdir, runs) -> int:
    return cli.main([*map(str, argv), "--notebooks-dir", str(nbdir), "--runs-dir", str(runs)])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


def test_the_overwrite_sequence_leaves_every_finished_record_byte_identical(nbdir, tmp_path, calls, capsys):
    runs = tmp_path / "runs"
    assert attn(["run", "kernel", "radius_init", "placement", "--preset", "tiny"], nbdir, runs) == 0
    trained = len(calls)
    before = snapshot(runs / "tiny")
    assert before and all(runstate.reuse_origin(d, runs)[1] is None for d in (runs / "tiny").glob("*/*"))

    # a tweak of a hashed key: its own folder, the preset's records untouched
    assert attn(["run", "kernel", "--preset", "tiny", "-p", "radius_init", "4"], nbdir, runs) == 0
    assert "tiny+radius_init=4.0" in capsys.readouterr().err
    mine = sorted(p.name for p in (runs / "tiny+radius_init=4.0" / "kernel").iterdir() if p.is_dir())
    assert mine == sorted(f"{v}-s{s}" for v in ("gaussian", "laplacian", "cauchy", "uniform") for s in (0, 1))
    info = json.loads((runs / "tiny+radius_init=4.0" / "kernel" / "gaussian-s0" / "variant.json").read_text())
    assert info["overrides"] == {"radius_init": 4.0} and info["preset"] == "tiny+radius_init=4.0"
    # -p seed: refused, with the option that does it
    for verb in ("run", "list"):
        assert attn([verb, "baseline", "--preset", "tiny", "-p", "seed", "5"], nbdir, runs) == 2
        assert "--seeds" in capsys.readouterr().err
    # the preset changed since: its finished records are not replaced without --replace
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0, 1], "base": {**TINY, "lr": 0.01}}))
    n = len(calls)
    assert attn(["run", "kernel", "--preset", "tiny"], nbdir, runs) == 2
    err = capsys.readouterr().err
    assert "--replace" in err and "another config" in err and len(calls) == n
    assert snapshot(runs / "tiny") == before
    # and the reuse links still name the folders that trained those configs
    for d in (runs / "tiny").glob("*/*"):
        origin, broken = runstate.reuse_origin(d, runs)
        assert broken is None
    assert trained < len(list((runs / "tiny").glob("*/*/metrics.json")))    # some were reused, not trained


def test_an_override_that_leaves_a_config_unchanged_reuses_the_presets_run(nbdir, tmp_path, calls):
    runs = tmp_path / "runs"
    assert attn(["run", "placement", "--preset", "tiny", "--variants", "none"], nbdir, runs) == 0
    assert calls == ["placement/none-s0", "placement/none-s1"]
    # kernel is not a key of the plain net: none-s* in the override folder is the preset's run, reused
    assert attn(["run", "placement", "--preset", "tiny", "-p", "kernel", "cauchy"], nbdir, runs) == 0
    assert not any(c.startswith("placement/none") for c in calls[2:])
    m = json.loads((runs / "tiny+kernel=cauchy" / "placement" / "none-s0" / "metrics.json").read_text())
    assert m["reused_from"] == "tiny/placement/none-s0"


def test_seeds_and_variants_run_exactly_those_with_the_references_seeds(nbdir, tmp_path, calls):
    runs = tmp_path / "runs"
    assert attn(["run", "baseline", "--preset", "tiny", "--seeds", "5", "--variants", "se"], nbdir, runs) == 0
    assert sorted(calls) == ["baseline/none-s5", "baseline/se-s5"]
    assert sorted(p.name for p in (runs / "tiny" / "baseline").iterdir() if p.is_dir()) == ["none-s5", "se-s5"]
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "nosuch"], nbdir, runs) == 2
    assert attn(["run", "baseline", "--preset", "tiny", "--seeds", "x"], nbdir, runs) == 2
    assert len(calls) == 2


def test_a_registered_kind_runs_on_request_in_the_baseline_ablation(nbdir, tmp_path, calls, capsys):
    """``--variants mygate`` names a kind the registry knows but the grid does not list: the baseline grid
    (``variants_on_request: attention``) runs it as {attention: mygate} beside the reference; a grid without that
    entry, an unknown kind and an invalid value are refused before anything runs."""
    import attnrepro
    import torch.nn as nn
    runs = tmp_path / "runs"
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "mygate", "--seeds", "0"], nbdir, runs) == 2
    assert "a plugin's kind needs --plugin" in capsys.readouterr().err
    attnrepro.register("mygate", kind="gate", build=lambda channels: nn.Identity())
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "mygate,aw+mygate", "--seeds", "0"],
                nbdir, runs) == 0
    assert sorted(calls) == ["baseline/aw+mygate-s0", "baseline/mygate-s0", "baseline/none-s0"]
    cfg = json.loads((runs / "tiny" / "baseline" / "mygate-s0" / "config.json").read_text())
    assert cfg["attention"] == "mygate"
    info = json.loads((runs / "tiny" / "baseline" / "mygate-s0" / "variant.json").read_text())
    assert info["params"] == {"attention": "mygate"} and info["reference"] == "none"
    # the kernel grid has no variants_on_request: a kind is no kernel variant
    assert attn(["run", "kernel", "--preset", "tiny", "--variants", "mygate"], nbdir, runs) == 2
    assert "not a variant of kernel" in capsys.readouterr().err
    grid = yaml.safe_load((nbdir / "baseline.yaml").read_text())
    (nbdir / "baseline.yaml").write_text(yaml.safe_dump({**grid, "variants_on_request": "nosuchkey"}))
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "other"], nbdir, runs) == 2
    assert "variants_on_request 'nosuchkey' is not a run-config key" in capsys.readouterr().err
    assert len(calls) == 3


def test_a_follow_up_preset_reuses_the_finished_runs_of_the_preset_it_names(nbdir, tmp_path, calls, capsys):
    """``reuse_from: [tiny]``: a follow-up preset's runs whose config a run of ``tiny`` finished are copies of it
    (trained once, counted once); the others train; a preset it cannot name is refused before anything runs."""
    runs = tmp_path / "runs"
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "se", "--seeds", "0"], nbdir, runs) == 0
    before = snapshot(runs / "tiny")
    follow = {"seeds": [0], "base": TINY, "reuse_from": ["tiny"], "ablations": {"baseline": {"only": ["none", "cbam"]}}}
    (nbdir / "presets" / "follow.yaml").write_text(yaml.safe_dump(follow))
    assert attn(["run", "baseline", "--preset", "follow"], nbdir, runs) == 0
    assert calls == ["baseline/none-s0", "baseline/se-s0", "baseline/cbam-s0"]      # none-s0 of follow: reused
    m = json.loads((runs / "follow" / "baseline" / "none-s0" / "metrics.json").read_text())
    assert m["reused_from"] == "tiny/baseline/none-s0" and m["status"] == "finished"
    assert snapshot(runs / "tiny") == before
    # without reuse_from the same preset trains its own reference
    (nbdir / "presets" / "alone.yaml").write_text(yaml.safe_dump({k: v for k, v in follow.items() if k != "reuse_from"}))
    assert attn(["run", "baseline", "--preset", "alone"], nbdir, runs) == 0
    assert calls[3:] == ["baseline/none-s0", "baseline/cbam-s0"]
    for bad in (["nosuch"], ["follow"], "tiny tiny", [3]):
        (nbdir / "presets" / "follow.yaml").write_text(yaml.safe_dump({**follow, "reuse_from": bad}))
        assert attn(["run", "baseline", "--preset", "follow"], nbdir, runs) == 2
        assert "must list other presets" in capsys.readouterr().err
    assert len(calls) == 5


def test_the_report_expects_only_what_was_run(nbdir, tmp_path, calls):
    """Seed 5 of se (and so of the reference) added to a preset of seeds 0, 1: the other variants are not expected
    at seed 5."""
    runs = tmp_path / "runs"
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(
        {"seeds": [0, 1], "base": TINY, "ablations": {"baseline": {"only": ["none", "se", "cbam"]}}}))
    assert attn(["run", "baseline", "--preset", "tiny"], nbdir, runs) == 0
    assert attn(["run", "baseline", "--preset", "tiny", "--seeds", "5", "--variants", "se"], nbdir, runs) == 0
    from attnrepro.analysis.report import expected_runs
    df = results.load_runs(runs, "tiny", grids_dir=nbdir)
    missing = results.missing_runs(df, expected_runs("tiny", ["baseline"], nbdir))
    assert missing.empty, missing
    # without the preset's expansion the seeds found still set what is expected (cbam-s5 missing)
    assert list(results.missing_runs(df)["variant"]) == ["cbam"]


def test_a_config_that_disagrees_with_its_metrics_is_corrupt_and_kept(nbdir, tmp_path, calls, capsys):
    runs = tmp_path / "runs"
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "none", "--seeds", "0"], nbdir, runs) == 0
    d = runs / "tiny" / "baseline" / "none-s0"
    (d / "config.json").write_text("garbage{")
    run = pipeline.expand(["baseline"], "tiny", nb_dir=nbdir, runs_dir=runs, variants="none", seeds="0")[0]
    assert pipeline.run_state(run) == "corrupt"
    before = snapshot(d)
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "none", "--seeds", "0"], nbdir, runs) == 2
    assert "corrupt" in capsys.readouterr().err and snapshot(d) == before
    # --replace (asked for) replaces it, once every check has passed
    assert attn(["list", "baseline", "--preset", "tiny", "--variants", "none", "--seeds", "0"], nbdir, runs) == 0
    assert "corrupt" in capsys.readouterr().out
    row = results.load_runs(runs, "tiny").iloc[0]
    assert row["status"] == "corrupt" and "config.json" in row["reason"]
    # a parseable config of another hash is as corrupt as garbage
    cfg = {**run.config.to_dict(), "lr": 0.5, "config_hash": "0" * 16}
    (d / "config.json").write_text(json.dumps(cfg))
    assert pipeline.run_state(run) == "corrupt"
    assert attn(["run", "baseline", "--preset", "tiny", "--variants", "none", "--seeds", "0", "--replace"],
                nbdir, runs) == 0
    assert pipeline.run_state(run) == "finished"


def test_a_reuse_link_to_a_replaced_folder_is_reported_broken(nbdir, tmp_path, calls, capsys):
    runs = tmp_path / "runs"
    assert attn(["run", "placement", "baseline", "--preset", "tiny", "--variants", "none", "--seeds", "0"],
                nbdir, runs) == 0
    copy = runs / "tiny" / "baseline" / "none-s0"
    origin, broken = runstate.reuse_origin(copy, runs)
    assert origin == "tiny/placement/none-s0" and broken is None
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0], "base": {**TINY, "lr": 0.01}}))
    assert attn(["run", "placement", "--preset", "tiny", "--variants", "none", "--force"], nbdir, runs) == 0
    origin, broken = runstate.reuse_origin(copy, runs)
    assert origin == "tiny/placement/none-s0" and "no longer holds" in broken
    df = results.load_runs(runs, "tiny").set_index("path")
    assert df.loc["tiny/baseline/none-s0", "reused_from"] is None     # its training now counts here


def _engine_record(run, status="finished"):
    h = run.config.hash()
    (run.out_dir / "metrics.json").write_text(json.dumps(
        {"status": status, "reason": None if status == "finished" else "boom", "config": run.config.to_dict(),
         "config_hash": h, "final": {"val_top1": 1.0}}))


def test_ctrl_c_after_training_finished_leaves_the_run_finished(nbdir, tmp_path, monkeypatch):
    """A Ctrl-C during the figure cells: the engine has written a finished record; it stays finished."""
    def finished_then_interrupted(run, kernel_name, start_timeout):
        _engine_record(run)
        raise KeyboardInterrupt
    monkeypatch.setattr(execution, "_papermill", finished_then_interrupted)
    run = pipeline.expand(["baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="none", seeds="0")[0]
    with pytest.raises(KeyboardInterrupt):
        pipeline.execute(run)
    assert pipeline.run_state(run) == "finished"

    def interrupted_mid_training(run, kernel_name, start_timeout):
        raise KeyboardInterrupt
    monkeypatch.setattr(execution, "_papermill", interrupted_mid_training)
    other = pipeline.expand(["baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="none", seeds="1")[0]
    with pytest.raises(KeyboardInterrupt):
        pipeline.execute(other)
    m = json.loads((other.out_dir / "metrics.json").read_text())
    assert pipeline.run_state(other) == "failed" and m["reason"].startswith("interrupted")


def test_log_txt_keeps_every_attempt(nbdir, tmp_path, monkeypatch):
    import papermill
    attempts = []

    def fake(input_path, output_path, parameters=None, stdout_file=None, **kw):
        attempts.append(1)
        print(f"training output of attempt {len(attempts)}", file=stdout_file, flush=True)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")
        _engine_record(run)
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    run = pipeline.expand(["baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="none", seeds="0")[0]
    assert pipeline.execute(run)["status"] == "failed"
    assert pipeline.execute(run)["status"] == "finished"
    log = (run.out_dir / "log.txt").read_text()
    assert "training output of attempt 1" in log and "training output of attempt 2" in log
    assert log.count("attnrepro: attempt started") == 2


def test_the_report_of_an_override_folder_names_the_keys_unlike_the_preset(nbdir, tmp_path, calls):
    from attnrepro.analysis.report import Report
    runs = tmp_path / "runs"
    assert attn(["run", "kernel", "--preset", "tiny", "-p", "radius_init", "4", "--variants", "gaussian"],
                nbdir, runs) == 0
    assert attn(["run", "kernel", "--preset", "tiny", "--variants", "gaussian"], nbdir, runs) == 0
    import yaml as _yaml
    from attnrepro.analysis.claims import load_claims
    no_claims = tmp_path / "claims.yaml"            # the papers' claims (and their model counts) are not this test's
    no_claims.write_text(_yaml.safe_dump({**load_claims(), "claims": []}))
    over = Report(runs, "tiny+radius_init=4.0", grids_dir=nbdir, claims_path=no_claims)
    assert over.config_differences() == {"radius_init": "2.0 declared, 4.0 in 2 run(s)"}
    assert over.missing.empty and len(over.runs) == 2          # it expects what was run in it, not the whole preset
    assert Report(runs, "tiny", grids_dir=nbdir, claims_path=no_claims).config_differences() == {}


# ---------------------------------------------------------------------------- rarer paths
# a run whose identical twin was skipped or reused (the waiting run reuses it; it is not recorded as failed), two
# data_dir in one preflight (each checked), an ablation of which --variants names no variant (its reference is not
# run alone: it would have nothing to be compared with)


def one_seed_few_variants(nbdir):
    pre = {"seeds": [0], "base": TINY, "ablations": {"placement": {"only": ["none", "s1"]},
                                                     "baseline": {"only": ["none", "se"]}}}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))


def finish(run):
    """What the engine leaves in a folder that finished ``run``'s config (as another pipeline would)."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    h = run.config.hash()
    (run.out_dir / "config.json").write_text(json.dumps({**run.config.to_dict(), "config_hash": h}))
    (run.out_dir / "metrics.json").write_text(json.dumps(
        {"status": "finished", "reason": None, "config": run.config.to_dict(), "config_hash": h,
         "final": {"val_top1": 50.0}, "wall_time_s": 1.0}))


def statuses(results):
    return {r["run"]: (r["status"], r.get("reused_from")) for r in results}


def test_the_twin_of_a_run_that_was_reused_reuses_it_too(nbdir, tmp_path, calls):
    """placement/none and baseline/none share a config. In an override folder whose config of the plain net is the
    preset's, placement/none is reused from the preset's folder; baseline/none, waiting for it, reuses it in turn
    (it is neither trained nor recorded as failed)."""
    one_seed_few_variants(nbdir)
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
    one_seed_few_variants(nbdir)
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
    one_seed_few_variants(nbdir)
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


def test_an_ablation_with_no_named_variant_runs_nothing_not_its_reference_alone(nbdir, tmp_path, calls):
    """``--variants se`` over kernel and baseline: baseline runs se and its reference; kernel, where se is not a
    variant, runs nothing (its reference alone would have nothing to be compared with)."""
    one_seed_few_variants(nbdir)
    runs = pipeline.expand(["kernel", "baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="se")
    assert sorted(r.name for r in runs) == ["baseline/none-s0", "baseline/se-s0"]
    pipeline.run_all(runs, progress=False)
    assert sorted(calls) == ["baseline/none-s0", "baseline/se-s0"] and not (tmp_path / "tiny" / "kernel").exists()
    # an ablation whose named variant is its reference runs that reference
    runs = pipeline.expand(["kernel", "baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path, variants="gaussian")
    assert [r.name for r in runs] == ["kernel/gaussian-s0"]


def test_each_model_of_one_preflight_is_checked(nbdir, tmp_path, monkeypatch):
    """Two runs of one dataset, one whose model cannot be built: only that one is named, in either order (the size
    check is made once per distinct model, not once in all)."""
    one_seed_few_variants(nbdir)
    base = pipeline.expand(["baseline"], "tiny", nb_dir=nbdir, runs_dir=tmp_path)[:2]
    bad = dataclasses.replace(base[1], config=base[1].config.replace(model="resnet50", width=0.5))
    for runs in ([base[0], bad], [bad, base[0]]):
        problems = preflight.run_problems(runs)
        (msg, hit), = problems.items()
        assert hit == [bad.name] and "resnet50" in msg and "cannot be built" in msg


@pytest.mark.parametrize("attention", ["none", "expatt", "aa", "aw", "se", "cbam", "aw+se", "aw+cbam"])
def test_the_preflight_size_check_builds_every_kind_on_the_meta_device(attention):
    """The size check (a model on the meta device, one batch) passes for every built-in kind: AW asks autocast for
    its dtype, which the meta device has none of (``make demo`` stopped on it)."""
    from attnrepro.config import RunConfig
    from attnrepro.pipeline.preflight import _size_problem
    cfg = RunConfig.from_dict({"attention": attention, "model": "resnet20", "width": 0.5, "stages": [3]})
    assert _size_problem(cfg, (1, 28, 10)) is None
