"""DDP on CPU: two gloo ranks under torchrun. One run (rank 0 alone writes and prints; the process group is left at
the end); a crash and a resume (every rank reports the same epochs); every attention kind and every ExpAtt kernel
(no parameter goes unused: DDP stalls at the second step on one)."""
import json
import os

import pytest

from attnrepro.train.checkpoint import read_jsonl
from ddp_helpers import torchrun

@pytest.mark.slow
def test_two_cpu_ranks(tmp_path):
    proc = torchrun(tmp_path, """
        import json, os
        import torch.distributed as dist
        from train_helpers import TINY, tiny_model_fn
        from attnrepro.train import run_training
        res = run_training(dict(TINY, epochs=2), sys.argv[1], model_fn=tiny_model_fn, progress=False)
        print(json.dumps({"rank": int(os.environ["RANK"]), "group_left": not dist.is_initialized(),
                          "epochs": res["epochs_completed"]}), flush=True)
    """, str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    res = json.loads((out / "metrics.json").read_text())
    assert res["status"] == "finished" and res["env"]["world_size"] == 2
    assert res["steps_per_epoch"] == 4  # 128 images, global batch 32: 16 per rank
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
    assert proc.stdout.count("epoch 2/2") == 1, proc.stdout   # printed once, by rank 0
    ranks = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["group_left"] and r["epochs"] == 2 for r in ranks), ranks   # run_training joined it, and left it


CLI = """
    import functools, json, os
    import torch.distributed as dist
    import attnrepro.train.loop as loop
    from train_helpers import tiny_model_fn
    from attnrepro.cli import main

    def crash(epoch, step):
        if epoch == 2 and step == 1:
            raise RuntimeError("injected")

    seen = {}
    def run_training(*a, **k):
        k.update(model_fn=tiny_model_fn, step_hook=crash if os.environ.get("CRASH") else None)
        seen.update(orig(*a, **k))
        return seen
    orig, loop.run_training = loop.run_training, run_training
    out = sys.argv[1]
    try:
        rc = main(["train", *sys.argv[2:], "--out", out, "--no-progress"])
    finally:
        with open(f"{out}.rank{os.environ['RANK']}.json", "w") as f:
            json.dump({"epochs": seen.get("epochs_completed"), "resumed": seen.get("resumed_from_epoch"),
                       "group_left": not dist.is_initialized()}, f)
    sys.exit(rc)
"""


@pytest.mark.slow
def test_crash_and_resume_every_rank_agrees_and_rank_0_alone_prints(tmp_path):
    """After a resume each rank's record counts the epochs before it (rank 1 used to count only its own); the
    CLI's summary line comes once."""
    out = tmp_path / "run"
    params = [a for k, v in (("dataset", "synthetic"), ("train_subset", 128), ("val_split", 0.0625),
                             ("batch_size", 32), ("epochs", 3), ("lr", 0.05), ("seed", 3), ("device", "cpu"))
              for a in ("-p", k, str(v))]
    os.environ["CRASH"] = "1"
    try:
        crashed = torchrun(tmp_path, CLI, str(out), *params)
    finally:
        del os.environ["CRASH"]
    assert crashed.returncode != 0 and "injected" in crashed.stderr, crashed.stderr[-2000:]
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
    proc = torchrun(tmp_path, CLI, str(out), *params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("attnrepro train: finished 3 epochs") == 1, proc.stdout
    assert proc.stdout.count("resuming") == 1, proc.stdout
    for rank in (0, 1):
        r = json.loads((tmp_path / f"run.rank{rank}.json").read_text())
        assert r == {"epochs": 3, "resumed": 1, "group_left": True}, (rank, r)


KINDS = [("none", {}), *[(f"expatt-{k}", {"attention": "expatt", "kernel": k})
                         for k in ("gaussian", "laplacian", "cauchy", "uniform")],
         ("expatt-uniform-per-head", {"attention": "expatt", "kernel": "uniform", "radius_per_head": True}),
         ("expatt-cauchy-per-head", {"attention": "expatt", "kernel": "cauchy", "radius_per_head": True}),
         ("expatt-laplacian-frozen", {"attention": "expatt", "kernel": "laplacian", "learn_radius": False}),
         ("aa", {"attention": "aa"}), ("aw", {"attention": "aw"}), ("se", {"attention": "se"}),
         ("cbam", {"attention": "cbam"}), ("aw+se", {"attention": "aw+se"}), ("aw+cbam", {"attention": "aw+cbam"}),
         ("expatt+se", {"attention": "expatt+se"}), ("aa+cbam", {"attention": "aa+cbam"})]


@pytest.mark.slow
def test_every_attention_kind_and_kernel_trains_under_ddp(tmp_path):
    """One launch for all kinds (the script holds the process group, so each run keeps it). Three steps each: DDP
    raises at the second step when a parameter got no gradient in the first."""
    proc = torchrun(tmp_path, f"""
        import json
        import torch.distributed as dist
        from attnrepro.train import run_training
        dist.init_process_group("gloo")
        out, rank = sys.argv[1], dist.get_rank()
        base = dict(dataset="synthetic", train_subset=128, val_split=0.0625, batch_size=32, eval_batch_size=32,
                    epochs=1, max_steps=3, model="resnet20", width=0.25, device="cpu", seed=5, checkpoint=False)
        result = {{}}
        for name, kw in {KINDS!r}:
            try:
                res = run_training(dict(base, **kw), f"{{out}}/{{name}}", verbose=False, progress=False)
                assert dist.is_initialized()          # not run_training's to leave
                status = res["status"]
            except Exception as e:                    # noqa: BLE001 - the test reports it
                status = f"{{type(e).__name__}}: {{str(e).splitlines()[0][:300]}}"
            result[name] = status
        with open(f"{{out}}.rank{{rank}}.json", "w") as f:
            json.dump(result, f)
        dist.destroy_process_group()
    """, str(tmp_path / "runs"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / f"runs.rank{rank}.json").read_text())
        bad = {k: v for k, v in result.items() if v != "finished"}
        assert not bad and len(result) == len(KINDS), (rank, bad)
