import math

import pytest

from attnrepro import RunConfig
from attnrepro.train.schedules import lr_at, make_schedule, warmup_steps

S = 10  # steps per epoch


def cos(lr, frac):
    return lr * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_without_warmup():
    kw = dict(lr=0.1, steps_per_epoch=S, epochs=10)
    assert lr_at("cosine", 0, **kw) == pytest.approx(0.1)
    assert lr_at("cosine", 50, **kw) == pytest.approx(0.05)
    assert lr_at("cosine", 25, **kw) == pytest.approx(cos(0.1, 0.25))
    assert lr_at("cosine", 99, **kw) == pytest.approx(cos(0.1, 0.99))
    assert lr_at("cosine", 99, **kw) < 1e-3


def test_cosine_with_warmup():
    kw = dict(lr=0.2, steps_per_epoch=S, epochs=10, warmup_epochs=2)
    assert lr_at("cosine", 0, **kw) == pytest.approx(0.2 / 20)
    assert lr_at("cosine", 9, **kw) == pytest.approx(0.2 * 10 / 20)
    assert lr_at("cosine", 19, **kw) == pytest.approx(0.2)
    assert lr_at("cosine", 20, **kw) == pytest.approx(0.2)  # cosine starts at the peak
    assert lr_at("cosine", 60, **kw) == pytest.approx(0.1)  # half-way through the 80 cosine steps


def test_aa_warms_up_over_five_percent():
    kw = dict(lr=0.2, steps_per_epoch=S, epochs=100, warmup_epochs=7)  # warmup_epochs ignored by 'aa'
    assert warmup_steps("aa", S, 100, 7) == 50
    assert lr_at("aa", 0, **kw) == pytest.approx(0.2 / 50)
    assert lr_at("aa", 24, **kw) == pytest.approx(0.2 * 25 / 50)
    assert lr_at("aa", 49, **kw) == pytest.approx(0.2)
    assert lr_at("aa", 50 + 475, **kw) == pytest.approx(0.1)
    assert lr_at("aa", 999, **kw) == pytest.approx(cos(0.2, 949 / 950))


def test_expatt_restarts_at_the_papers_epochs():
    # warm-up 15 epochs to 0.05, then cycles of 10, 20, 40, 80, 160 epochs: restarts at 25, 45, 85, 165, 325
    kw = dict(lr=0.05, steps_per_epoch=S, epochs=450, warmup_epochs=15, restart_period=10)
    assert lr_at("expatt", 0, **kw) == pytest.approx(0.05 / 150)
    assert lr_at("expatt", 149, **kw) == pytest.approx(0.05)
    assert lr_at("expatt", 150, **kw) == pytest.approx(0.05)  # epoch 15: first cycle starts at the peak
    assert lr_at("expatt", 200, **kw) == pytest.approx(0.025)  # epoch 20: half-way through the 10-epoch cycle
    for restart, length in ((25, 20), (45, 40), (85, 80), (165, 160), (325, 320)):
        step = restart * S
        assert lr_at("expatt", step, **kw) == pytest.approx(0.05), restart
        assert lr_at("expatt", step - 1, **kw) == pytest.approx(cos(0.05, (length / 2 * S - 1) / (length / 2 * S)))
        assert lr_at("expatt", step - 1, **kw) < 0.001
        assert lr_at("expatt", step + length * S // 2, **kw) == pytest.approx(0.025), restart


def test_constant_and_errors():
    kw = dict(lr=0.3, steps_per_epoch=S, epochs=5)
    assert [lr_at("constant", s, **kw) for s in (0, 17, 49)] == pytest.approx([0.3] * 3)
    assert lr_at("constant", 4, warmup_epochs=1, **kw) == pytest.approx(0.3 * 5 / 10)
    with pytest.raises(ValueError, match="choose one of"):
        lr_at("step", 0, **kw)


def test_make_schedule_from_config():
    cfg = RunConfig(schedule="expatt", lr=0.05, epochs=15, warmup_epochs=1, restart_period=2)
    f = make_schedule(cfg, S)
    # restarts after warm-up at epochs 1, 3, 7 (cycles 2, 4, 8): 1 + 2 + 4 + 8 = 15 epochs
    assert [f(s) for s in (10, 30, 70)] == pytest.approx([0.05] * 3)
    assert f(149) < 0.001
