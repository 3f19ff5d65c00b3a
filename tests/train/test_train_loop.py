"""run_training: run-folder files, determinism, resume after a crash, failure records, CPU switches."""
import json

import pytest
import torch
import torch.nn as nn

from attnrepro import ConfigError, RunConfig
from attnrepro.train import NonFiniteLoss, RunDirConflict, param_groups, run_training
from attnrepro.train.checkpoint import load_checkpoint, read_jsonl

from train_helpers import TINY, Tiny, tiny_model_fn

TIMING = {"images_per_s", "epoch_time_s"}
EPOCH_KEYS = {"epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s",
              "epoch_time_s", "radius"}
FINAL_KEYS = {"status", "reason", "config", "config_hash", "env", "wall_time_s", "epochs_completed", "final",
              "best_val_top1", "params", "macs", "images_per_s", "peak_mem_mb", "radius"}


def numbers(path):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(path / "metrics.jsonl")]


def test_one_epoch_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    res = run_training(TINY, out, model_fn=tiny_model_fn, verbose=False)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.json",
                                                     "metrics.jsonl"]
    cfg = RunConfig.from_dict(TINY)
    conf = json.loads((out / "config.json").read_text())
    assert conf.pop("config_hash") == cfg.hash() and conf == cfg.to_dict()
    rows = read_jsonl(out / "metrics.jsonl")
    assert len(rows) == 1 and set(rows[0]) == EPOCH_KEYS and rows[0]["epoch"] == 1 and rows[0]["radius"] == {}
    assert 0 <= rows[0]["val_top1"] <= rows[0]["val_top5"] <= 100
    final = json.loads((out / "metrics.json").read_text())
    assert final == res
    assert FINAL_KEYS <= set(final)
    assert final["status"] == "finished" and final["reason"] is None and final["epochs_completed"] == 1
    assert final["final"]["val_top1"] == rows[0]["val_top1"] and final["best_val_top1"] == rows[0]["val_top1"]
    assert final["params"] == sum(p.numel() for p in Tiny(3, 10).parameters())
    assert final["env"]["torch"] == torch.__version__ and final["env"]["device"] == "cpu"
    assert final["peak_mem_mb"] > 0 and final["steps_per_epoch"] == 4
    c = load_checkpoint(out / "checkpoint.pt")  # weights_only=True
    assert c["epoch"] == 1 and c["config_hash"] == cfg.hash() and "conv.weight" in c["model"]


def test_same_seed_same_numbers(tmp_path):
    cfg = dict(TINY, epochs=2)
    run_training(cfg, tmp_path / "a", model_fn=tiny_model_fn, verbose=False)
    run_training(cfg, tmp_path / "b", model_fn=tiny_model_fn, verbose=False)
    run_training(dict(cfg, seed=4), tmp_path / "c", model_fn=tiny_model_fn, verbose=False)
    assert numbers(tmp_path / "a") == numbers(tmp_path / "b")
    assert numbers(tmp_path / "a") != numbers(tmp_path / "c")


class Crash(RuntimeError):
    pass


def test_crash_in_epoch_2_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = dict(TINY, epochs=3, schedule="expatt", warmup_epochs=0.5, restart_period=1)
    run_training(cfg, tmp_path / "whole", model_fn=tiny_model_fn, verbose=False)

    def crash(epoch, step):
        if epoch == 2 and step == 2:
            raise Crash("injected")

    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        run_training(cfg, out, model_fn=tiny_model_fn, step_hook=crash, verbose=False)
    failed = json.loads((out / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["reason"] == "Crash: injected"
    assert failed["epochs_completed"] == 1 and load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    # a torn line from the crashed epoch is cut on resume
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": 9}\n')
    res = run_training(cfg, out, model_fn=tiny_model_fn, verbose=False)
    assert res["status"] == "finished" and res["resumed_from_epoch"] == 1 and res["epochs_completed"] == 3
    assert numbers(out) == numbers(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert res["final"] == whole["final"]


def test_a_finished_run_is_not_trained_again(tmp_path):
    calls = []

    def fn(*a):
        calls.append(1)
        return tiny_model_fn(*a)

    first = run_training(TINY, tmp_path, model_fn=fn, verbose=False)
    again = run_training(TINY, tmp_path, model_fn=fn, verbose=False)
    assert len(calls) == 1 and again == first


def test_another_config_in_the_folder_is_refused(tmp_path):
    run_training(TINY, tmp_path, model_fn=tiny_model_fn, verbose=False)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(RunDirConflict, match="lr"):
        run_training(dict(TINY, lr=0.2), tmp_path, model_fn=tiny_model_fn, verbose=False)
    assert (tmp_path / "metrics.json").read_text() == before
    # where only config.json is left (no finished epoch), another config may take the folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"config_hash": "0123"}))
    assert run_training(dict(TINY, lr=0.2), other, model_fn=tiny_model_fn, verbose=False)["status"] == "finished"


class NanAfter(Tiny):
    def __init__(self, in_chans, num_classes, after):
        super().__init__(in_chans, num_classes)
        self.after, self.calls = after, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def test_non_finite_loss_stops_with_a_reason(tmp_path):
    cfg = dict(TINY, epochs=2)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at epoch 2 step 1"):
        run_training(cfg, tmp_path, model_fn=lambda c, n, i, s: NanAfter(i, n, after=5), verbose=False)
    res = json.loads((tmp_path / "metrics.json").read_text())
    assert res["status"] == "failed" and res["reason"] == "non-finite loss at epoch 2 step 1"
    assert res["epochs_completed"] == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_no_decay_groups():
    m = Tiny(3, 10)
    g = param_groups(m, 5e-4, True)
    assert [x["weight_decay"] for x in g] == [5e-4, 0.0]
    assert {id(p) for p in g[0]["params"]} == {id(m.conv.weight), id(m.fc.weight)}
    assert len(g[1]["params"]) == 3  # bn weight, bn bias, fc bias
    assert len(param_groups(m, 5e-4, False)) == 1


@pytest.mark.parametrize("switches", [{"amp": "bf16"}, {"channels_last": True}, {"nesterov": True,
                                      "label_smoothing": 0.1, "no_decay_norm_bias": True, "schedule": "aa"}])
def test_cpu_switches_train(tmp_path, switches):
    res = run_training(dict(TINY, max_steps=2, **switches), tmp_path, model_fn=tiny_model_fn, verbose=False)
    assert res["status"] == "finished" and res["final"]["train_loss"] > 0


def test_label_smoothing_changes_the_training_loss(tmp_path):
    a = run_training(dict(TINY, max_steps=1), tmp_path / "a", model_fn=tiny_model_fn, verbose=False)
    b = run_training(dict(TINY, max_steps=1, label_smoothing=0.5), tmp_path / "b", model_fn=tiny_model_fn,
                     verbose=False)
    # the first step's loss is computed on the same weights and batch: only the smoothing differs
    assert a["final"]["train_loss"] != b["final"]["train_loss"]


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="bf16"):
        run_training(dict(TINY, amp="fp16"), tmp_path, model_fn=tiny_model_fn, verbose=False)


@pytest.mark.slow
def test_compile_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREPRO_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    res = run_training(dict(TINY, max_steps=2, compile=True), tmp_path, model_fn=tiny_model_fn, verbose=False)
    assert res["status"] == "finished"
    state = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert "conv.weight" in state and not any(k.startswith("_orig_mod") for k in state)


@pytest.mark.slow
def test_resnet20_with_expatt_logs_radii(tmp_path):
    pytest.importorskip("attnrepro.modules.explicit")
    cfg = dict(TINY, model="resnet20", width=0.25, attention="expatt", max_steps=1, eval_batch_size=32)
    res = run_training(cfg, tmp_path, verbose=False)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows[0]["radius"] and set(rows[0]["radius"]) == set(res["radius"])
    assert all(r > 0 for v in res["radius"].values() for r in v)
    assert res["macs"] and res["macs"] > 0


@pytest.mark.cuda
def test_cuda_switches(tmp_path):
    for i, sw in enumerate([{"amp": "fp16", "channels_last": True}, {"amp": "bf16"}]):
        res = run_training(dict(TINY, device="cuda", max_steps=3, **sw), tmp_path / str(i), model_fn=tiny_model_fn,
                           verbose=False)
        assert res["status"] == "finished" and res["env"]["device"] == "cuda" and res["peak_mem_mb"] > 0


@pytest.mark.slow
def test_sigkill_in_epoch_2_then_resume(tmp_path):
    """A real kill (no exception handler runs): the folder holds epoch 1's files intact, and a restart finishes
    with the numbers of an uninterrupted run."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    cfg = dict(TINY, epochs=3)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from train_helpers import tiny_model_fn
        from attnrepro.train import run_training

        def hook(epoch, step):
            if epoch == 2 and step == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        run_training({cfg!r}, sys.argv[1], model_fn=tiny_model_fn, step_hook=hook, verbose=False)
    """))
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(script), str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "metrics.json").exists() and load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the killed process: same float sums
    try:
        res = run_training(cfg, out, model_fn=tiny_model_fn, verbose=False)
        run_training(cfg, tmp_path / "whole", model_fn=tiny_model_fn, verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert res["resumed_from_epoch"] == 1 and res["status"] == "finished"
    assert numbers(out) == numbers(tmp_path / "whole")


def test_eval_every_skips_evaluations_but_not_training(tmp_path):
    """eval_every=2 over 3 epochs evaluates after epochs 2 and 3 (the last always), and trains exactly as
    eval_every=1 does: the same training numbers and the same final accuracy."""
    every = run_training(dict(TINY, epochs=3), tmp_path / "every", model_fn=tiny_model_fn, verbose=False)
    sparse = run_training(dict(TINY, epochs=3, eval_every=2), tmp_path / "sparse", model_fn=tiny_model_fn,
                          verbose=True)
    a, b = numbers(tmp_path / "every"), numbers(tmp_path / "sparse")
    assert [r["val_top1"] is None for r in b] == [True, False, False]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == rb["train_loss"] and ra["train_top1"] == rb["train_top1"]
        if rb["val_top1"] is not None:
            assert rb["val_top1"] == ra["val_top1"] and rb["val_loss"] == ra["val_loss"]
    assert sparse["final"] == every["final"]
    assert sparse["best_val_top1"] == max(r["val_top1"] for r in a[1:])


def test_checkpoint_every_then_resume_equals_an_uninterrupted_run(tmp_path):
    """checkpoint_every 2 over 3 epochs: written after epochs 2 and 3 (the last); a crash in epoch 2 resumes from
    nothing, one in epoch 3 from epoch 2 (epochs after the checkpoint are cut from metrics.jsonl and run again,
    identically)."""
    cfg = dict(TINY, epochs=3, checkpoint_every=2)
    run_training(cfg, tmp_path / "whole", model_fn=tiny_model_fn, verbose=False)
    assert load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["epoch"] == 3
    saved = []
    for crash_epoch, resumed in ((2, None), (3, 2)):
        def crash(epoch, step, at=crash_epoch):
            if epoch == at and step == 1:
                raise Crash("injected")

        out = tmp_path / f"crash{crash_epoch}"
        with pytest.raises(Crash):
            run_training(cfg, out, model_fn=tiny_model_fn, step_hook=crash, verbose=False)
        assert (out / "checkpoint.pt").exists() == (resumed is not None)
        assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == list(range(1, crash_epoch))
        res = run_training(cfg, out, model_fn=tiny_model_fn, verbose=False)
        assert res.get("resumed_from_epoch") == resumed and res["epochs_completed"] == 3
        assert numbers(out) == numbers(tmp_path / "whole")
        saved.append(load_checkpoint(out / "checkpoint.pt")["epoch"])
    assert saved == [3, 3]


def test_checkpoint_every_is_not_in_the_hash_and_needs_a_positive_count():
    assert RunConfig.from_dict(TINY).hash() == RunConfig.from_dict(dict(TINY, checkpoint_every=5)).hash()
    with pytest.raises(ConfigError, match="checkpoint_every=0 .*>= 1"):
        RunConfig.from_dict(dict(TINY, checkpoint_every=0))


def test_deterministic_trains_the_same_numbers_and_restores_the_switches(tmp_path, monkeypatch):
    """On CPU, training is deterministic with or without the switch (the same numbers); the process-wide switch
    is on during the run and off again after it (a notebook kernel's next run starts clean)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []

    def hook(epoch, step):
        seen.append(torch.are_deterministic_algorithms_enabled())

    assert not torch.are_deterministic_algorithms_enabled()
    run_training(dict(TINY, deterministic=True), tmp_path / "det", model_fn=tiny_model_fn, step_hook=hook,
                 verbose=False)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    import os
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    run_training(TINY, tmp_path / "plain", model_fn=tiny_model_fn, verbose=False)
    assert numbers(tmp_path / "det") == numbers(tmp_path / "plain")


def test_sync_bn_is_refused_on_cpu_under_ddp_before_training(tmp_path, monkeypatch):
    from attnrepro.train import preflight
    from attnrepro.train.cuda import convert_sync_bn
    cfg = RunConfig.from_dict(dict(TINY, sync_bn=True))
    preflight(cfg)                                   # one process: nothing to synchronise, nothing to refuse
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"sync_bn=True .*CUDA.*choose sync_bn=false"):
        preflight(cfg)
    m = Tiny(3, 10)
    assert convert_sync_bn(m, True, 1) is m and convert_sync_bn(m, False, 2) is m
    synced = convert_sync_bn(Tiny(3, 10), True, 2)
    assert isinstance(synced.bn, nn.SyncBatchNorm) and synced.state_dict().keys() == m.state_dict().keys()
