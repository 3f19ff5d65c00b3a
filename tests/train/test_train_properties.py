"""Properties of the training engine that a plausible wrong version breaks: the learning rate of every step in the
loop is the schedule's own value at that step (also after a resume); each AMP mode runs under its autocast dtype;
the initial model is a function of the run's seed; a resume continues every RNG stream (torch, Python, numpy)."""
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnrepro import RunConfig
from attnrepro.train import lr_at, make_schedule, run_training
from attnrepro.train.checkpoint import read_jsonl, rng_state, set_rng_state
from attnrepro.train.cuda import autocast, make_scaler

from train_helpers import TINY, Tiny, tiny_model_fn


class Crash(RuntimeError):
    pass


@pytest.fixture
def step_lrs(monkeypatch):
    """The learning rate of each optimiser step (of every parameter group), in order."""
    seen: list[list[float]] = []
    step = torch.optim.SGD.step

    def recording(self, *a, **kw):
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *a, **kw)
    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    return seen


SCHEDULES = [dict(schedule="cosine", warmup_epochs=1), dict(schedule="expatt", warmup_epochs=0.5, restart_period=1),
             dict(schedule="aa"), dict(schedule="constant", warmup_epochs=2)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s["schedule"])
def test_the_loop_runs_every_step_at_the_schedules_rate(tmp_path, step_lrs, sched):
    """Over 3 epochs of 4 steps, step k of the run (0-based, across epochs) uses ``lr_at(k)`` in every parameter
    group (weight-decay groups included), and each epoch's record says the rate of its last step."""
    cfg = dict(TINY, epochs=3, lr=0.4, no_decay_norm_bias=True, **sched)
    run_training(cfg, tmp_path, model_fn=tiny_model_fn, verbose=False)
    c = RunConfig.from_dict(cfg)
    want = [lr_at(c.schedule, k, lr=c.lr, steps_per_epoch=4, epochs=3, warmup_epochs=c.warmup_epochs,
                  restart_period=c.restart_period) for k in range(12)]
    assert len(step_lrs) == 12 and all(len(g) == 2 for g in step_lrs)
    assert [g[0] for g in step_lrs] == pytest.approx(want, rel=1e-12) and all(g[0] == g[1] for g in step_lrs)
    assert len(set(want)) > 3                                  # the schedule does move over these steps
    assert [r["lr"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == pytest.approx(want[3::4], rel=1e-12)


def test_a_resumed_run_continues_the_schedule_where_it_stopped(tmp_path, step_lrs):
    cfg = dict(TINY, epochs=3, schedule="cosine", lr=0.4)
    sched = make_schedule(RunConfig.from_dict(cfg), 4)

    def crash(epoch, step):
        if epoch == 2 and step == 1:
            raise Crash

    with pytest.raises(Crash):
        run_training(cfg, tmp_path, model_fn=tiny_model_fn, step_hook=crash, verbose=False)
    assert [g[0] for g in step_lrs] == pytest.approx([sched(k) for k in range(6)], rel=1e-12)
    step_lrs.clear()
    run_training(cfg, tmp_path, model_fn=tiny_model_fn, verbose=False)   # resumes after epoch 1
    assert [g[0] for g in step_lrs] == pytest.approx([sched(k) for k in range(4, 12)], rel=1e-12)


def test_max_steps_shortens_the_schedule_to_the_steps_run(tmp_path, step_lrs):
    cfg = dict(TINY, epochs=2, max_steps=2, schedule="cosine", lr=0.4)
    res = run_training(cfg, tmp_path, model_fn=tiny_model_fn, verbose=False)
    assert res["steps_per_epoch"] == 2
    sched = make_schedule(RunConfig.from_dict(cfg), 2)
    assert [g[0] for g in step_lrs] == pytest.approx([sched(k) for k in range(4)], rel=1e-12)


# ------------------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("none", None)])
def test_each_amp_mode_gives_its_autocast_dtype(amp, dtype):
    cpu = torch.device("cpu")
    a = torch.randn(4, 4)
    with autocast(amp, cpu):
        enabled = torch.is_autocast_enabled("cpu")
        got = torch.get_autocast_dtype("cpu")
        out = a @ a
    assert enabled == (dtype is not None)
    if dtype is not None:
        assert got == dtype and out.dtype == dtype
    else:
        assert out.dtype == torch.float32
    # on CUDA the same mapping (the context object states it; no GPU needed to build it)
    if dtype is not None:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx = autocast(amp, torch.device("cuda"))
        assert ctx.device == "cuda" and ctx.fast_dtype == dtype
    assert make_scaler(amp, cpu) is None


class Recorder(Tiny):
    """Records the autocast state of each forward pass of a batch (not the one-image passes that count MACs)."""

    def __init__(self, *a, seen):
        super().__init__(*a)
        self.seen = seen

    def forward(self, x):
        if len(x) > 1:
            self.seen.append((self.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return super().forward(x).float()


@pytest.mark.parametrize("amp", ["bf16", "none"])
def test_the_loop_trains_and_evaluates_under_the_configs_autocast(tmp_path, amp):
    seen: list = []
    run_training(dict(TINY, amp=amp, max_steps=2), tmp_path, verbose=False,
                 model_fn=lambda c, n, i, s: Recorder(i, n, seen=seen))
    assert [t for t, _, _ in seen] == [True, True, False]     # 2 training steps, 1 evaluation batch
    if amp == "bf16":
        assert all(on and dt == torch.bfloat16 for _, on, dt in seen)
    else:
        assert not any(on for _, on, _ in seen)


# ------------------------------------------------------------------------------------------------- seeds
def initial(tmp_path, name, **kw):
    """The initial weights and the first Python and numpy draws of a run's model_fn."""
    got = {}

    def fn(cfg, n, i, s):
        m = tiny_model_fn(cfg, n, i, s)
        got.update(state={k: v.clone() for k, v in m.state_dict().items()}, py=random.random(),
                   np=float(np.random.rand()))
        return m
    run_training(dict(TINY, max_steps=1, **kw), tmp_path / name, model_fn=fn, verbose=False)
    return got


def same(a, b):
    return a["py"] == b["py"] and a["np"] == b["np"] and all(torch.equal(a["state"][k], b["state"][k])
                                                            for k in a["state"])


def test_the_initial_model_is_a_function_of_the_runs_seed(tmp_path):
    a, b = initial(tmp_path, "a", seed=3), initial(tmp_path, "b", seed=3)
    assert same(a, b)
    c = initial(tmp_path, "c", seed=4)
    assert not torch.equal(a["state"]["conv.weight"], c["state"]["conv.weight"])
    assert a["py"] != c["py"] and a["np"] != c["np"]
    # the seed stream is part of the run's seed: stream 1 of seed 3 is another initial model
    d = initial(tmp_path, "d", seed=3, seed_stream=1)
    assert not torch.equal(a["state"]["conv.weight"], d["state"]["conv.weight"])
    # and the init is the model seeded by the run seed, whatever the data loading drew before it
    torch.manual_seed(RunConfig.from_dict(dict(TINY, seed=3)).run_seed)
    assert torch.equal(Tiny(3, 10).state_dict()["conv.weight"], a["state"]["conv.weight"])


# ------------------------------------------------------------------------------------------------- RNG streams
def draws():
    return (torch.rand(3).tolist(), [random.random() for _ in range(3)], np.random.rand(3).tolist())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), skip=st.integers(0, 700))
def test_rng_state_round_trips_every_stream(seed, skip):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    for _ in range(skip):                   # move each stream (numpy's position and Gaussian cache included)
        random.random()
        np.random.rand()
    np.random.randn()                       # numpy caches the second Gaussian of a pair
    random.gauss(0, 1)
    state = rng_state()
    want = draws() + (np.random.randn(3).tolist(), random.gauss(0, 1))
    torch.manual_seed(seed + 1)
    random.seed(seed + 1)
    np.random.seed((seed + 1) % 2 ** 32)
    set_rng_state(state)
    assert draws() + (np.random.randn(3).tolist(), random.gauss(0, 1)) == want


def test_a_resume_continues_every_rng_stream(tmp_path):
    """Draws of each stream after every step: a run crashed in epoch 2 and resumed draws in epochs 2 and 3 exactly
    what the uninterrupted run drew."""
    cfg = dict(TINY, epochs=3, max_steps=2)

    def recorder(store, crash_at=None):
        def hook(epoch, step):
            if (epoch, step) == crash_at:
                raise Crash
            store[(epoch, step)] = draws()
        return hook

    whole: dict = {}
    run_training(cfg, tmp_path / "whole", model_fn=tiny_model_fn, step_hook=recorder(whole), verbose=False)
    first: dict = {}
    with pytest.raises(Crash):
        run_training(cfg, tmp_path / "r", model_fn=tiny_model_fn, step_hook=recorder(first, (2, 1)), verbose=False)
    # scramble every stream, as a new process would start
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    resumed: dict = {}
    res = run_training(cfg, tmp_path / "r", model_fn=tiny_model_fn, step_hook=recorder(resumed), verbose=False)
    assert res["resumed_from_epoch"] == 1
    assert sorted(resumed) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    for k, v in resumed.items():
        for stream, (got, want) in zip(("torch", "python", "numpy"), zip(v, whole[k])):
            assert got == want, (k, stream)
    assert first[(1, 0)] == whole[(1, 0)] and first[(2, 0)] == whole[(2, 0)]
