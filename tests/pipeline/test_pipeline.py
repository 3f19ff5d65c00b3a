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
from attnrepro.pipeline import execution, preflight, runstate
from attnrepro.config import KEYS, RunConfig
from attnrepro.errors import UsageError
from attnrepro.pipeline.notebook import ABLATION_NOTEBOOKS, OPTIONS, build_notebook, cli_value, torchrun_command

REPO = Path(__file__).resolve().parents[2]
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
        "notebook out of date: run `python -m attnrepro.pipeline.notebook notebooks`"
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
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(
        calls, fail={"laplacian": boom, "cauchy": DeadKernelError("Kernel died")}))
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
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
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    assert main(["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path],
                monkeypatch) == 0
    assert calls == ["kernel/laplacian-s0", "kernel/cauchy-s0"]


def test_engine_reason_is_kept(nbdir, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    def fake(run, kernel_name, start_timeout):
        (run.out_dir / "metrics.json").write_text(json.dumps(
            {"status": "failed", "reason": "non-finite loss at epoch 1 step 3", "config_hash": run.config.hash()}))
        raise PapermillExecutionError(2, 1, "src", "NonFiniteLoss", "non-finite loss at epoch 1 step 3", [])
    monkeypatch.setattr(execution, "_papermill", fake)
    runs = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[:1]
    res = pipeline.execute(runs[0])
    assert res["status"] == "failed" and res["reason"] == "non-finite loss at epoch 1 step 3"


def _edit_tiny(nbdir, **base):
    """The tiny preset with changed base keys (the preset changed since its runs were made)."""
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump({"seeds": [0], "base": {**TINY, **base}}))


def test_a_finished_record_of_another_config_is_kept_unless_forced(nbdir, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    assert pipeline.run_state(run) == "new"
    assert pipeline.execute(run)["status"] == "finished"
    (run.out_dir / "checkpoint.pt").write_text("old")
    assert pipeline.run_state(run) == "finished"
    assert pipeline.execute(run)["status"] == "skipped" and len(calls) == 1
    assert pipeline.execute(run, force=True)["status"] == "finished" and len(calls) == 2
    assert not (run.out_dir / "checkpoint.pt").exists()      # --force starts afresh
    (run.out_dir / "checkpoint.pt").write_text("old")
    before = {p.name: p.read_bytes() for p in run.out_dir.iterdir()}
    _edit_tiny(nbdir, lr=0.01)
    other = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    assert other.out_dir == run.out_dir and pipeline.run_state(other) == "stale"
    with pytest.raises(UsageError, match="(?s)another config.*--replace"):
        pipeline.run_all([other], progress=False)
    with pytest.raises(UsageError, match="--replace"):
        pipeline.execute(other)
    assert {p.name: p.read_bytes() for p in run.out_dir.iterdir()} == before and len(calls) == 2
    assert pipeline.execute(other, force=True)["status"] == "finished" and len(calls) == 3
    assert not (run.out_dir / "checkpoint.pt").exists()      # another config's checkpoint is never resumed


def test_a_folder_with_another_configs_checkpoint_and_no_final_record_is_stale(nbdir, tmp_path, monkeypatch):
    """A run killed mid-way leaves config.json and checkpoint.pt but no metrics.json. Under a changed config that
    folder is stale (cleared and trained afresh: there is no finished record to lose), not 'incomplete' (which would
    resume another config's checkpoint and fail with a conflict on every re-run); under the same config it is
    incomplete (resumed)."""
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    old = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    old.out_dir.mkdir(parents=True)
    (old.out_dir / "config.json").write_text(json.dumps({**old.config.to_dict(), "config_hash": old.config.hash()}))
    (old.out_dir / "checkpoint.pt").write_text("old")
    assert pipeline.run_state(old) == "incomplete"
    _edit_tiny(nbdir, lr=0.01)
    new = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    assert new.out_dir == old.out_dir and pipeline.run_state(new) == "stale"
    assert pipeline.execute(new)["status"] == "finished" and len(calls) == 1
    assert not (new.out_dir / "checkpoint.pt").exists()


def test_lock_keeps_two_pipelines_from_running_one_config(nbdir, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls, delay=0.5))
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
    assert [p for p in runs_dir.rglob("*") if p.name.endswith(".lock")] == []
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
    #    (its data files are there, so the checks up front pass, but they are not IDX files)
    grid = yaml.safe_load((nbdir / "placement.yaml").read_text())
    grid["variants"]["s3"] = {"stages": [2]}
    grid["variants"] = {"none": grid["variants"]["none"], "broken": {"dataset": "fashion_mnist",
                                                                     "data_dir": str(tmp_path / "corrupt")},
                        "s3": grid["variants"]["s3"]}
    (nbdir / "placement.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    pre["ablations"]["placement"]["only"] = ["none", "broken", "s3"]
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    (tmp_path / "corrupt").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / "corrupt" / name).write_bytes(b"not an idx file")
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    none_nb = runs_dir / "tiny" / "placement" / "none-s0" / "notebook.ipynb"
    before = none_nb.stat().st_mtime_ns
    s3_record = (runs_dir / "tiny" / "placement" / "s3-s0" / "metrics.json").read_bytes()
    assert main(["run", "placement", *args], monkeypatch) == 2      # s3-s0 holds the old config's finished run
    err = capsys.readouterr().err
    assert "s3-s0" in err and "--replace" in err
    assert (runs_dir / "tiny" / "placement" / "s3-s0" / "metrics.json").read_bytes() == s3_record
    assert main(["run", "placement", "--replace", *args], monkeypatch) == 1
    out = capsys.readouterr()
    assert "1 run(s) up to date (skipped), 2 to run" in out.err
    assert none_nb.stat().st_mtime_ns == before
    d = runs_dir / "tiny" / "placement"
    broken = json.loads((d / "broken-s0" / "metrics.json").read_text())
    assert broken["status"] == "failed" and "not an IDX file" in broken["reason"], broken["reason"]
    s3 = json.loads((d / "s3-s0" / "metrics.json").read_text())
    assert s3["status"] == "finished" and s3["config"]["stages"] == [2]
    assert "1 of 3 run(s) failed" in out.err


# ---------------------------------------------------------------------------- kernel start (issue: flaky kernel start)
def _fake_execute_notebook(calls, behaviour):
    """A stand-in for papermill.execute_notebook: ``behaviour(n, kwargs)`` for the n-th call (1-based)."""
    def fake(input_path, output_path, parameters=None, **kw):
        calls.append(kw)
        behaviour(len(calls), kw)
        out = Path(parameters["out_dir"])
        cfg = RunConfig.from_dict({k: parameters[k] for k in KEYS})
        (out / "metrics.json").write_text(json.dumps({"status": "finished", "config_hash": cfg.hash(),
                                                      "config": cfg.to_dict(), "final": {"val_top1": 1.0}}))
    return fake


def test_kernels_talk_over_private_unix_sockets(nbdir, tmp_path, monkeypatch):
    """Two kernels started at once must not be able to pick the same endpoint: each gets ZeroMQ's IPC transport
    in a folder of its own (TCP ports picked as "free" by two workers can collide: `Address already in use`)."""
    import papermill
    seen = []

    def check(n, kw):
        km = kw["config"]["KernelManager"]
        sock_dir = Path(km["ip"]).parent
        assert km["transport"] == "ipc" and sock_dir.is_dir() and not any(sock_dir.iterdir())
        assert len(km["ip"]) < 90            # a Unix socket path is limited to about 104 bytes
        seen.append(sock_dir)
    calls: list = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute_notebook(calls, check))
    runs = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[:2]
    for r in runs:
        assert pipeline.execute(r)["status"] == "finished"
    assert len(seen) == 2 and seen[0] != seen[1]
    assert not any(d.exists() for d in seen)      # removed with the kernel


def test_a_kernel_that_dies_before_it_replies_is_started_again(nbdir, tmp_path, monkeypatch):
    import papermill

    def die_once(n, kw):
        if n == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
    calls: list = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute_notebook(calls, die_once))
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    res = pipeline.execute(run)
    assert res["status"] == "finished" and len(calls) == 2, res
    assert "died before it replied" in (run.out_dir / "log.txt").read_text()


def test_the_kernel_start_retry_is_bounded_and_only_for_start_deaths(nbdir, tmp_path, monkeypatch):
    import papermill
    from nbclient.exceptions import DeadKernelError

    def always_die(n, kw):
        raise RuntimeError("Kernel died before replying to kernel_info")
    calls: list = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute_notebook(calls, always_die))
    runs = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)
    res = pipeline.execute(runs[0])
    assert res["status"] == "failed" and len(calls) == 3, res
    assert "died before it replied, 3 times" in res["reason"] and pipeline.KERNEL_START_ATTEMPTS == 3

    def die_while_running(n, kw):   # cells may have run: not retried
        raise DeadKernelError("Kernel died")
    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute_notebook(calls, die_while_running))
    res = pipeline.execute(runs[1])
    assert res["status"] == "failed" and len(calls) == 1 and "DeadKernelError" in res["reason"]


# ---------------------------------------------------------------------------- checks up front (issue item 2)
@pytest.mark.parametrize("over, words", [
    ([("device", "cuda")], ["4 of 4 run(s) cannot start here", "device='cuda' but no CUDA GPU", "(all)"]),
    ([("dataset", "cifar10"), ("data_dir", "{tmp}/empty")],
     ["4 of 4", "data_dir='{tmp}/empty'", "cifar-10-batches-py"]),
    ([("dataset", "fashion_mnist"), ("data_dir", "{tmp}/nowhere")], ["data_dir='{tmp}/nowhere' does not exist"]),
    ([("model", "resnet50"), ("width", "0.5")], ["resnet50", "cannot be built", "width"]),
    ([("amp", "fp16")], ["amp='fp16' needs a CUDA device"]),
    ([("nproc_per_node", "2"), ("device", "cuda")], ["nproc_per_node=2 needs 2 GPUs per run, but each run gets 1"]),
    ([("nproc_per_node", "0")], ["nproc_per_node=0 is not valid"]),
])
def test_a_run_that_cannot_start_here_starts_nothing(over, words, nbdir, tmp_path, monkeypatch, capsys):
    """Every check that needs no training runs for every run before the first notebook starts: exit 2, one line."""
    import torch
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    if over == [("nproc_per_node", "2"), ("device", "cuda")]:      # a machine with one GPU
        from attnrepro.train import cuda
        monkeypatch.setattr(cuda, "resolve_device", lambda name, rank=0: torch.device("cuda", 0))
        monkeypatch.setattr(preflight, "gpu_count", lambda: 1)
    else:                                                            # a machine without a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(preflight, "gpu_count", lambda: 0)
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
    argv = ["run", "kernel", "--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path / "runs", "-j", "1"]
    for k, v in over:
        argv += ["-p", k, v.replace("{tmp}", str(tmp_path))]
    rc = main(argv, monkeypatch)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert calls == [] and not (tmp_path / "runs").exists()
    assert len(err.splitlines()) == 1 and err.startswith("attnrepro run: error:"), err
    for w in words:
        assert w.replace("{tmp}", str(tmp_path)) in err, err


def test_the_cifar100_preset_without_gpu_or_data_starts_nothing(tmp_path, monkeypatch, capsys):
    """The issue's case: `attnrepro run baseline --preset cifar100 -p epochs 1 -j 1` on a CPU machine without
    CIFAR-100 used to start 18 notebooks that each failed after 3 s."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(preflight, "gpu_count", lambda: 0)
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    monkeypatch.setenv("ATTNREPRO_DATA", str(tmp_path / "data"))
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    rc = main(["run", "baseline", "--preset", "cifar100", "-p", "epochs", "1", "-j", "1", "--notebooks-dir", NB,
               "--runs-dir", tmp_path / "runs"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and calls == [] and not (tmp_path / "runs").exists()
    n = len(pipeline.expand(["baseline"], "cifar100", {}, nb_dir=NB, runs_dir=tmp_path / "x"))   # 18 then
    assert f"{n} of {n} run(s) cannot start" in err and "device='cuda'" in err and "'cifar100' not found" in err, err
    rc = main(["run", "baseline", "--preset", "cifar100", "-p", "epochs", "1", "-p", "device", "cpu", "-p", "amp",
               "none", "-j", "1", "--notebooks-dir", NB, "--runs-dir", tmp_path / "runs"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and calls == [] and "device='cuda'" not in err and "'cifar100' not found" in err, err


# ---------------------------------------------------------------------------- re-runs use their config (item 3)
def _engine_papermill(run, kernel_name, start_timeout):
    """The notebook's work without a kernel: train ``run.config`` into its folder in this process."""
    from attnrepro.pipeline.notebook import train
    train(run.config, run.out_dir)


def test_a_rerun_uses_the_config_it_is_given(nbdir, tmp_path, monkeypatch):
    """Keys left out of the hash (device, data_dir) let a failed run try again, and the new values are used and
    recorded: never the old attempt's reason or values."""
    import torch
    from attnrepro import data
    from data_files import make_fashion
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ATTNREPRO_OFFLINE", "1")
    monkeypatch.setattr(data.sources, "FASHION_MNIST_DIRS", [str(tmp_path / "no-debian")])   # no other copy to be found
    monkeypatch.setenv("ATTNREPRO_DATA", str(tmp_path / "no-cache"))
    monkeypatch.setattr(execution, "_papermill", _engine_papermill)
    (tmp_path / "empty").mkdir()
    make_fashion(tmp_path / "fmnist", n_train=40, n_test=20)
    base = {**TINY, "dataset": "fashion_mnist", "data_dir": str(tmp_path / "fmnist")}

    def attempt(**changes):
        run = pipeline.expand(["placement"], "tiny", {**base, **changes}, nb_dir=nbdir, runs_dir=tmp_path)[0]
        assert run.variant == "none"
        return run, pipeline.execute(run)

    run, res = attempt(device="cuda")
    h = run.config.hash()
    assert res["status"] == "failed" and "device='cuda'" in res["reason"]
    run, res = attempt(device="cpu", data_dir=str(tmp_path / "empty"))
    assert run.config.hash() == h and res["status"] == "failed"
    m = json.loads((run.out_dir / "metrics.json").read_text())
    assert "device='cuda'" not in m["reason"] and str(tmp_path / "empty") in m["reason"], m["reason"]
    assert m["config"]["device"] == "cpu" and m["config"]["data_dir"] == str(tmp_path / "empty")
    c = json.loads((run.out_dir / "config.json").read_text())
    assert (c["device"], c["data_dir"], c["config_hash"]) == ("cpu", str(tmp_path / "empty"), h)
    run, res = attempt(device="cpu")
    assert res["status"] == "finished", res
    m = json.loads((run.out_dir / "metrics.json").read_text())
    c = json.loads((run.out_dir / "config.json").read_text())
    assert m["config"]["device"] == c["device"] == "cpu" and m["env"]["device"] == "cpu"
    assert m["config"]["data_dir"] == c["data_dir"] == str(tmp_path / "fmnist") and m["reason"] is None


# ---------------------------------------------------------------------------- lock files (item 6)
def test_no_lock_file_is_left_and_none_is_listed(nbdir, tmp_path, monkeypatch, capsys):
    from attnrepro.analysis import results
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
    args = ["--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path]
    assert main(["run", "kernel", *args], monkeypatch) == 0
    assert len(calls) == 4
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".lock")] == []
    # while a run holds its locks, the report's loader and `attnrepro list` see only run folders
    run = pipeline.expand(["kernel"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)[0]
    with runstate._run_locks(run):
        assert run.lock_path.exists() and runstate._config_lock_path(run).exists()
        df = results.load_runs(tmp_path, "tiny")
        assert sorted(df["path"]) == sorted(f"tiny/kernel/{v}-s0" for v in ("gaussian", "laplacian", "cauchy",
                                                                              "uniform"))
        capsys.readouterr()
        assert main(["list", "kernel", *args], monkeypatch) == 0
        assert ".lock" not in capsys.readouterr().out
    assert not run.lock_path.exists() and not runstate._config_lock_path(run).exists()
    from attnrepro._io import held_lock
    with held_lock(tmp_path / "x.lock"):
        pass
    assert not (tmp_path / "x.lock").exists()


# ---------------------------------------------------------------------------- one config, one training
def _twins(runs):
    by: dict = {}
    for r in runs:
        by.setdefault(r.config.hash(), []).append(r)
    return [g for g in by.values() if len(g) > 1]


@pytest.mark.parametrize("preset", PRESETS)
def test_identical_configs_train_once_in_every_preset(preset, tmp_path, monkeypatch):
    """placement/none and baseline/none (and the other twins of a preset) share a config hash: one trains, the others
    get a copy of its record that says so; the report reads them as finished runs."""
    from attnrepro.analysis import results
    over = {"data_dir": "/data/imagenet"} if preset == "imagenet" else {}
    runs = pipeline.expand(list(ABLATIONS), preset, over, nb_dir=NB, runs_dir=tmp_path)
    twins = _twins(runs)
    assert twins, f"{preset}: no two runs share a config"
    calls: list = []
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
    monkeypatch.setattr(execution, "check_runs", lambda runs, **k: None,   # this machine has no such GPU or data
                        raising=False)
    res = pipeline.run_all(runs, jobs=1, progress=False)
    first_of: dict = {}
    for r in runs:
        first_of.setdefault(r.config.hash(), r.name)
    assert sorted(calls) == sorted(first_of.values())        # each config trained once, by its first run
    by = {r["run"]: r for r in res}
    for g in twins:
        first = g[0]
        assert by[first.name]["status"] == "finished"
        for r in g[1:]:
            assert by[r.name]["status"] == "reused" and by[r.name]["reused_from"] == f"{preset}/{first.ablation}/" \
                                                                                      f"{first.out_dir.name}"
            vj = json.loads((r.out_dir / "variant.json").read_text())
            m = json.loads((r.out_dir / "metrics.json").read_text())
            assert vj["ablation"] == r.ablation and vj["variant"] == r.variant
            assert vj["reused_from"] == m["reused_from"] == by[r.name]["reused_from"]
            assert m["config_hash"] == r.config.hash() and m["status"] == "finished"
            assert (r.out_dir / "config.json").read_bytes() == (first.out_dir / "config.json").read_bytes()
    df = results.load_runs(tmp_path, preset)
    assert len(df) == len(runs) and set(df["status"]) == {"finished"}
    # a run-time budget counts each training once: the reused rows are the ones whose metrics.json says so
    reused = {r.name for g in twins for r in g[1:]}
    assert {f"{r.ablation}/{r.out_dir.name}" for r in runs
            if json.loads((r.out_dir / "metrics.json").read_text()).get("reused_from")} == reused
    # a second run finds everything done
    calls.clear()
    assert {r["status"] for r in pipeline.run_all(runs, jobs=1, progress=False)} == {"skipped"} and calls == []


def test_identical_configs_run_in_parallel_train_once(nbdir, tmp_path, monkeypatch):
    """With --jobs 2, the second run of a config waits for the first instead of training beside it."""
    pre = {"seeds": [0], "base": TINY, "ablations": {"placement": {"only": ["none", "s1"]},
                                                     "baseline": {"only": ["none", "se"]}}}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    runs = pipeline.expand(["placement", "baseline"], "tiny", {}, nb_dir=nbdir, runs_dir=tmp_path)
    assert [[r.name for r in g] for g in _twins(runs)] == [["placement/none-s0", "baseline/none-s0"]]
    spans: dict = {}
    calls: list = []
    fake = _fake_papermill(calls, delay=0.3)

    def timed(run, kernel_name, start_timeout):
        t0 = time.monotonic()
        fake(run, kernel_name, start_timeout)
        spans[run.name] = (t0, time.monotonic())
    monkeypatch.setattr(execution, "_papermill", timed)
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
    import concurrent.futures as cf
    monkeypatch.setattr(execution, "_make_pool", lambda workers, envs: cf.ThreadPoolExecutor(workers))
    res = {r["run"]: r["status"] for r in pipeline.run_all(runs, jobs=2, progress=False)}
    assert sorted(calls) == ["baseline/se-s0", "placement/none-s0", "placement/s1-s0"]
    assert res == {"placement/none-s0": "finished", "placement/s1-s0": "finished", "baseline/none-s0": "reused",
                   "baseline/se-s0": "finished"}
    a, b = spans["placement/s1-s0"], spans["placement/none-s0"]
    assert a[0] < b[1] and b[0] < a[1]          # the pool did run two notebooks at once


def test_a_twin_finished_earlier_is_reused_and_a_failed_one_is_not(nbdir, tmp_path, monkeypatch, capsys):
    from papermill.exceptions import PapermillExecutionError
    calls: list = []
    boom = PapermillExecutionError(2, 1, "src", "ValueError", "bad thing", ["tb"])
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls, fail={"none": boom}))
    monkeypatch.setattr(execution, "ensure_kernel", lambda name=None: name)
    pre = {"seeds": [0], "base": TINY, "ablations": {"placement": {"only": ["none"]},
                                                     "baseline": {"only": ["none"]}}}
    (nbdir / "presets" / "tiny.yaml").write_text(yaml.safe_dump(pre))
    args = ["--preset", "tiny", "--notebooks-dir", nbdir, "--runs-dir", tmp_path]
    # the first of two twins fails: the second is recorded as failed with that reason, not trained
    assert main(["run", "placement", "baseline", *args], monkeypatch) == 1
    assert calls == ["placement/none-s0"]
    m = json.loads((tmp_path / "tiny" / "baseline" / "none-s0" / "metrics.json").read_text())
    assert m["status"] == "failed" and "placement/none-s0 has the same config and failed" in m["reason"] \
        and "bad thing" in m["reason"]
    # fixed: the next run trains the first and reuses it for the second
    calls.clear()
    monkeypatch.setattr(execution, "_papermill", _fake_papermill(calls))
    assert main(["run", "placement", "baseline", *args], monkeypatch) == 0
    assert calls == ["placement/none-s0"]
    assert "reused" in capsys.readouterr().out
    # a later pipeline of another ablation reuses a run that finished before it started
    calls.clear()
    shutil.rmtree(tmp_path / "tiny" / "baseline")
    assert main(["run", "baseline", *args], monkeypatch) == 0 and calls == []
    vj = json.loads((tmp_path / "tiny" / "baseline" / "none-s0" / "variant.json").read_text())
    assert vj["reused_from"] == "tiny/placement/none-s0" and vj["ablation"] == "baseline"
    assert main(["list", "baseline", *args], monkeypatch) == 0
    assert "reused from tiny/placement/none-s0" in capsys.readouterr().out
    # --force trains the config again, once
    assert main(["run", "placement", "baseline", "--force", *args], monkeypatch) == 0
    assert calls == ["placement/none-s0"]
