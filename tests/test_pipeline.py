"""The ablation pipeline: grids, presets, notebooks, the runner's skip/lock/failure rules, and (slow) papermill runs.

The slow tests execute the real notebooks (copied into a temporary notebooks folder with a tiny preset: synthetic
data, resnet20 x0.25, 2 steps) seven times in all; kernel start-up dominates their time.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from attnrepro import cli, pipeline
from attnrepro.config import KEYS, RunConfig
from attnrepro.notebook import ABLATION_NOTEBOOKS, OPTIONS, build_notebook, cli_value, torchrun_command

REPO = Path(__file__).resolve().parents[1]
NB = REPO / "notebooks"
ABLATIONS = ("kernel", "radius_init", "placement", "baseline")
PRESETS = ("smoke", "fashion", "cifar100", "imagenet")

TINY = {"dataset": "synthetic", "model": "resnet20", "width": 0.25, "heads": 1, "max_steps": 2, "batch_size": 16,
        "eval_batch_size": 64, "checkpoint": False, "device": "cpu"}


def main(argv, monkeypatch):
    """``attnrepro`` with only the pipeline's commands (so this test does not depend on the other modules)."""
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("run", "list")})
    return cli.main([str(a) for a in argv])


@pytest.fixture
def nbdir(tmp_path):
    """A copy of notebooks/ (notebooks, grids) with a tiny preset."""
    d = tmp_path / "nb"
    (d / "presets").mkdir(parents=True)
    for a in ABLATIONS:
        shutil.copy(NB / f"{a}.ipynb", d)
        shutil.copy(NB / f"{a}.yaml", d)
    (d / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0], "base": TINY}))
    return d


# ---------------------------------------------------------------------------- notebooks and grids
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_committed_notebook_is_generated_and_clean(ablation):
    committed = nbformat.read(str(NB / f"{ablation}.ipynb"), as_version=4)
    fresh = build_notebook(ablation)
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], \
        "notebook out of date: run `python -m attnrepro.notebook notebooks`"
    for c in committed.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, "commit notebooks without outputs"
    tagged = [c for c in committed.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert committed.metadata.kernelspec.name == pipeline.KERNEL_NAME


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_notebook_parameters_are_config_keys_or_options(ablation):
    params = pipeline.notebook_parameters(NB / f"{ablation}.ipynb")
    unknown = set(params) - set(KEYS) - set(OPTIONS)
    assert not unknown, f"{ablation}.ipynb declares parameters that are neither run-config keys nor options"
    assert set(KEYS) <= set(params), f"{ablation}.ipynb lacks run-config keys {set(KEYS) - set(params)}"
    assert "out_dir" in params
    # the declared defaults build a valid config (the notebook runs by hand as it is)
    ns = {k: eval(v["default"]) for k, v in params.items()}   # literals written by build_notebook
    cfg = RunConfig.from_dict({k: ns[k] for k in KEYS})
    for k, v in ABLATION_NOTEBOOKS[ablation]["defaults"].items():
        assert getattr(cfg, k) == v


@pytest.mark.parametrize("preset", PRESETS)
def test_every_grid_expands_under_every_preset(preset, tmp_path):
    over = {"data_dir": "/data/imagenet"} if preset == "imagenet" else {}
    runs = pipeline.expand(list(ABLATIONS), preset, over, nb_dir=NB, runs_dir=tmp_path)
    names = {(r.ablation, r.variant, r.seed) for r in runs}
    assert len(names) == len(runs)
    seeds = pipeline.load_preset(NB, preset)["seeds"]
    for a in ABLATIONS:
        mine = [r for r in runs if r.ablation == a]
        assert {r.seed for r in mine} == set(seeds)
        grid = pipeline.load_grid(NB, a)
        assert grid["reference"] in {r.variant for r in mine}, f"{a}: reference not run under {preset}"
        for r in mine:
            assert r.out_dir == tmp_path / preset / a / f"{r.variant}-s{r.seed}"
            assert r.config.seed == r.seed
            info = r.variant_info()
            assert info["is_reference"] == (r.variant == grid["reference"])
            assert set(info["params"]) <= set(KEYS)
    hashes = {r.config.hash() for r in runs if r.ablation == "kernel"}
    assert len(hashes) == len([r for r in runs if r.ablation == "kernel"])   # variants really differ


def test_merge_order_and_stage_aliases(nbdir, tmp_path):
    pre = {"seeds": [3], "base": {**TINY, "kernel": "laplacian", "lr": 0.3, "epochs": 2},
           "ablations": {"placement": {"base": {"lr": 0.2}, "variants": {"first": {"stages": "first1"}},
                                       "only": ["all", "last2", "first", "s1"]}}}
    (nbdir / "presets" / "p.yaml").write_text(yaml.safe_dump(pre))
    runs = pipeline.expand(["kernel", "placement"], "p", [("epochs", "3")], nb_dir=nbdir, runs_dir=tmp_path)
    by = {r.name: r.config for r in runs}
    assert by["kernel/cauchy-s3"].kernel == "cauchy"          # the variant beats the preset
    assert by["kernel/cauchy-s3"].lr == 0.3                   # preset base kept where nothing overrides it
    assert by["placement/all-s3"].lr == 0.2                   # preset's per-ablation base beats preset base
    assert all(c.epochs == 3 for c in by.values())            # -p beats everything
    assert all(c.seed == 3 for c in by.values())
    assert by["placement/all-s3"].stages == [1, 2, 3]
    assert by["placement/last2-s3"].stages == [2, 3]
    assert by["placement/first-s3"].stages == [1]
    assert [r.variant for r in runs if r.ablation == "placement"] == ["all", "last2", "first", "s1"]
    assert pipeline.resolve_stages("last2", "resnet50") == [3, 4]
    assert pipeline.resolve_stages("all", "resnet50") == [1, 2, 3, 4]


def test_axes_product_names():
    grid = {"axes": {"radius_init": {"r1": 1.0, "r2": 2.0}, "learn_radius": {"learn": True, "frozen": False}},
            "variants": {"extra": {"kernel": "cauchy"}}}
    v = pipeline.grid_variants(grid)
    assert list(v) == ["extra", "r1-learn", "r1-frozen", "r2-learn", "r2-frozen"]
    assert v["r2-frozen"] == {"radius_init": 2.0, "learn_radius": False}


@pytest.mark.parametrize("argv, words", [
    (["run", "nosuch", "--preset", "tiny"], ["unknown ablation 'nosuch'", "kernel", "placement"]),
    (["run", "kernel", "--preset", "nosuch"], ["unknown preset 'nosuch'", "tiny"]),
    (["run", "kernel", "--preset", "tiny", "-p", "kernal", "cauchy"], ["unknown key 'kernal'", "kernel"]),
    (["run", "kernel", "--preset", "tiny", "-p", "model", "resnet21"], ["model='resnet21'", "resnet20"]),
    (["run", "placement", "--preset", "tiny", "-p", "stages", "4"], ["stage 4 does not exist", "[1, 2, 3]"]),
    (["list", "kernel", "--preset", "nosuch"], ["unknown preset"]),
])
def test_bad_input_exits_2_naming_choices(argv, words, nbdir, tmp_path, monkeypatch, capsys):
    rc = main(argv + ["--notebooks-dir", nbdir, "--runs-dir", tmp_path / "runs"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2
    for w in words:
        assert w in err
    assert not (tmp_path / "runs").exists()     # nothing ran, nothing was created


@pytest.mark.parametrize("grid_text, words", [
    ("reference: a\nbase: {attention: expatt}\nvariants: {a: {kernal: cauchy}}\n", ["unknown config key 'kernal'"]),
    ("reference: a\nvariants: {a: {heads: 0}}\n", ["heads=0", ">= 1"]),
    ("reference: a\nvariants: [a, b]\n", ["variant"]),
    ("reference: a\nvariants: {a: {}}\nvarients: {}\n", ["unknown entry 'varients'"]),
    ("reference: a\nvariants: {a: {kernel: cauchy}\n", ["invalid YAML"]),
    ("reference: zz\nvariants: {a: {}}\n", ["reference 'zz'"]),
])
def test_bad_grid_exits_2(grid_text, words, nbdir, tmp_path, monkeypatch, capsys):
    (nbdir / "kernel.yaml").write_text(grid_text)
    rc = main(["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2, err
    for w in words:
        assert w in err


def test_list(nbdir, tmp_path, monkeypatch, capsys):
    assert main(["list", "--notebooks-dir", nbdir], monkeypatch) == 0
    out = capsys.readouterr().out
    for a in ABLATIONS:
        assert a in out
    assert "tiny" in out
    assert main(["list", "radius_init", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path],
                monkeypatch) == 0
    out = capsys.readouterr().out
    assert "radius_init/r2-frozen-s0" in out and "new" in out and "(reference)" in out


def test_torchrun_command_round_trips():
    cfg = RunConfig.from_dict({"stages": [3, 4], "model": "resnet50", "lr": 0.05, "learn_radius": False,
                               "data_dir": "/d"})
    cmd = torchrun_command(cfg, "out", 8)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=8" in cmd
    i = cmd.index("train")
    assert cmd[i - 2:i] == ["-m", "attnrepro"]
    pairs = {cmd[j + 1]: cmd[j + 2] for j in range(len(cmd)) if cmd[j] == "-p"}
    back = RunConfig.from_dict({k: v for k, v in pairs.items()})
    assert back == cfg
    assert cmd[-2:] == ["--out", "out"]
    assert "--standalone" not in torchrun_command(cfg, "o", 8, "--nnodes 2 --rdzv_endpoint h:1")
    assert cli_value(None) == "none" and cli_value(True) == "true"


# ---------------------------------------------------------------------------- runner rules without a kernel
def _fake_papermill(calls, *, fail=None, delay=0.0):
    def fake(run, kernel_name, start_timeout):
        calls.append(run.name)
        time.sleep(delay)
        if fail and run.variant in fail:
            raise fail[run.variant]
        m = {"status": "finished", "reason": None, "config": run.config.to_dict(), "config_hash": run.config.hash(),
             "final": {"val_top1": 50.0}, "wall_time_s": 0.1}
        (run.out_dir / "config.json").write_text(json.dumps({**run.config.to_dict(),
                                                             "config_hash": run.config.hash()}))
        (run.out_dir / "metrics.json").write_text(json.dumps(m))
    return fake


def test_failures_are_recorded_and_the_others_run(nbdir, tmp_path, monkeypatch, capsys):
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError
    calls: list = []
    boom = PapermillExecutionError(2, 1, "src", "ValueError", "bad thing", ["tb"])
    monkeypatch.setattr(pipeline, "_papermill", _fake_papermill(
        calls, fail={"laplacian": boom, "cauchy": DeadKernelError("Kernel died")}))
    monkeypatch.setattr(pipeline, "ensure_kernel", lambda name=None: name)
    rc = main(["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path], monkeypatch)
    out = capsys.readouterr()
    assert rc == 1
    assert calls == ["kernel/gaussian-s0", "kernel/laplacian-s0", "kernel/cauchy-s0", "kernel/uniform-s0"]
    d = tmp_path / "tiny" / "kernel"
    lap = json.loads((d / "laplacian-s0" / "metrics.json").read_text())
    assert lap["status"] == "failed" and lap["reason"] == "ValueError: bad thing"
    assert lap["config_hash"] == RunConfig.from_dict({**TINY, "attention": "expatt", "kernel": "laplacian"}).hash()
    dead = json.loads((d / "cauchy-s0" / "metrics.json").read_text())
    assert dead["status"] == "failed" and "DeadKernelError" in dead["reason"]
    assert json.loads((d / "uniform-s0" / "metrics.json").read_text())["status"] == "finished"
    info = json.loads((d / "gaussian-s0" / "variant.json").read_text())
    assert info == {**info, "ablation": "kernel", "variant": "gaussian", "seed": 0, "preset": "tiny",
                    "is_reference": True, "params": {"kernel": "gaussian"}}
    assert "failed" in out.out and "2 of 4 run(s) failed" in out.err
    # the failed runs (only) run again
    calls.clear()
    monkeypatch.setattr(pipeline, "_papermill", _fake_papermill(calls))
    assert main(["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path],
                monkeypatch) == 0
    assert calls == ["kernel/laplacian-s0", "kernel/cauchy-s0"]


def test_engine_reason_is_kept(nbdir, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    def fake(run, kernel_name, start_timeout):
        (run.out_dir / "metrics.json").write_text(json.dumps(
            {"status": "failed", "reason": "non-finite loss at epoch 1 step 3", "config_hash": run.config.hash()}))
        raise PapermillExecutionError(2, 1, "src", "NonFiniteLoss", "non-finite loss at epoch 1 step 3", [])
    monkeypatch.setattr(pipeline, "_papermill", fake)
    runs = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[:1]
    res = pipeline.execute(runs[0])
    assert res["status"] == "failed" and res["reason"] == "non-finite loss at epoch 1 step 3"


def test_changed_config_clears_the_folder_and_force_reruns(nbdir, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(pipeline, "_papermill", _fake_papermill(calls))
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    assert pipeline.run_state(run) == "new"
    assert pipeline.execute(run)["status"] == "finished"
    (run.out_dir / "checkpoint.pt").write_text("old")
    assert pipeline.run_state(run) == "finished"
    assert pipeline.execute(run)["status"] == "skipped" and len(calls) == 1
    assert pipeline.execute(run, force=True)["status"] == "finished" and len(calls) == 2
    assert not (run.out_dir / "checkpoint.pt").exists()      # --force starts afresh
    (run.out_dir / "checkpoint.pt").write_text("old")
    other = pipeline.expand(["kernel"], "tiny", [("lr", "0.01")], nb_dir=nbdir, runs_dir=tmp_path)[0]
    assert pipeline.run_state(other) == "stale"
    assert pipeline.execute(other)["status"] == "finished" and len(calls) == 3
    assert not (run.out_dir / "checkpoint.pt").exists()      # another config's checkpoint is never resumed


def test_lock_keeps_two_pipelines_from_running_one_config(nbdir, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(pipeline, "_papermill", _fake_papermill(calls, delay=0.5))
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    results = []
    threads = [threading.Thread(target=lambda: results.append(pipeline.execute(run))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [run.name]
    assert sorted(r["status"] for r in results) == ["finished", "skipped"]


# ---------------------------------------------------------------------------- real notebooks (papermill)
@pytest.mark.slow
def test_notebooks_execute_skip_and_rerun_only_what_changed(nbdir, tmp_path, monkeypatch, capsys):
    runs_dir = tmp_path / "runs"
    pre = {"seeds": [0], "base": TINY, "ablations": {
        "kernel": {"only": ["cauchy"]}, "radius_init": {"only": ["r1-learn"]},
        "placement": {"only": ["none", "s3"]}, "baseline": {"only": ["aa"]}}}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    args = ["--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", runs_dir]

    # 1. each notebook executes (two at a time) and writes its results
    assert main(["run", *ABLATIONS, "--jobs", "2", *args], monkeypatch) == 0, capsys.readouterr().err
    expected = {"kernel/cauchy-s0", "radius_init/r1-learn-s0", "placement/none-s0", "placement/s3-s0",
                "baseline/aa-s0"}
    folders = {f"{p.parent.name}/{p.name}" for p in (runs_dir / "tiny").glob("*/*") if p.is_dir()}
    assert folders == expected
    for name in expected:
        d = runs_dir / "tiny" / name
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "finished" and m["epochs_completed"] == 1
        assert json.loads((d / "variant.json").read_text())["variant"] == name.split("/")[1][:-3]
        nb = nbformat.read(str(d / "notebook.ipynb"), as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no figure"
        assert "finished: val top-1" in (d / "log.txt").read_text()
    cfg = json.loads((runs_dir / "tiny" / "kernel" / "cauchy-s0" / "config.json").read_text())
    assert cfg["kernel"] == "cauchy" and cfg["attention"] == "expatt" and cfg["width"] == 0.25
    capsys.readouterr()

    # 2. a second run of the same grid skips every run
    mtimes = {p: p.stat().st_mtime_ns for p in (runs_dir / "tiny").glob("*/*/notebook.ipynb")}
    assert main(["run", *ABLATIONS, *args], monkeypatch) == 0
    out = capsys.readouterr()
    assert "5 run(s) up to date (skipped), 0 to run" in out.err
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # 3. one changed value re-runs only its run; a run that raises is recorded and the next one still runs
    grid = yaml.safe_load((nbdir / "placement.yaml").read_text())
    grid["variants"]["s3"] = {"stages": [2]}
    grid["variants"] = {"none": grid["variants"]["none"], "broken": {"dataset": "cifar10",
                                                                     "data_dir": str(tmp_path / "empty")},
                        "s3": grid["variants"]["s3"]}
    (nbdir / "placement.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    pre["ablations"]["placement"]["only"] = ["none", "broken", "s3"]
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    none_nb = runs_dir / "tiny" / "placement" / "none-s0" / "notebook.ipynb"
    before = none_nb.stat().st_mtime_ns
    assert main(["run", "placement", *args], monkeypatch) == 1
    out = capsys.readouterr()
    assert "1 run(s) up to date (skipped), 2 to run" in out.err
    assert none_nb.stat().st_mtime_ns == before
    d = runs_dir / "tiny" / "placement"
    broken = json.loads((d / "broken-s0" / "metrics.json").read_text())
    assert broken["status"] == "failed" and "cifar" in broken["reason"].lower(), broken["reason"]
    s3 = json.loads((d / "s3-s0" / "metrics.json").read_text())
    assert s3["status"] == "finished" and s3["config"]["stages"] == [2]
    assert "1 of 3 run(s) failed" in out.err
