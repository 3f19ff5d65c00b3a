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


@pytest.mark.parametrize("schedule", ["cosine", "constant", "expatt"])
def test_fractional_warmup_is_counted_in_steps(schedule):
    # half an epoch of 10 steps is 5 warm-up steps, not 0 (truncated to whole epochs) nor 10
    assert warmup_steps(schedule, S, 10, 0.5) == 5
    assert warmup_steps(schedule, S, 10, 0.37) == 4     # rounded to the nearest step, not floored
    assert warmup_steps(schedule, S, 10, 1.5) == 15
    kw = dict(lr=0.1, steps_per_epoch=S, epochs=10, warmup_epochs=0.5)
    assert [lr_at(schedule, s, **kw) for s in range(5)] == pytest.approx([0.1 * (s + 1) / 5 for s in range(5)])
    assert lr_at(schedule, 5, **kw) == pytest.approx(0.1)            # the first step after warm-up: the peak
    f = make_schedule(RunConfig(schedule=schedule, lr=0.1, epochs=10, warmup_epochs=0.5), S)
    assert f(0) == pytest.approx(0.1 / 5) and f(4) == pytest.approx(0.1)


def test_expatt_cycles_count_from_a_fractional_warmup():
    kw = dict(lr=0.05, steps_per_epoch=S, epochs=40, warmup_epochs=0.5, restart_period=2)
    # warm-up 5 steps, then restarts 2 and 6 epochs later (cycles of 2 and 4 epochs)
    assert lr_at("expatt", 5 + 2 * S, **kw) == pytest.approx(0.05)
    assert lr_at("expatt", 5 + 6 * S, **kw) == pytest.approx(0.05)
    assert lr_at("expatt", 5 + 2 * S - 1, **kw) < 0.001
    assert lr_at("expatt", 5 + 4 * S, **kw) == pytest.approx(0.025)   # half-way through the 4-epoch cycle


def test_cosine_decays_over_the_steps_after_warmup():
    kw = dict(lr=1.0, steps_per_epoch=S, epochs=4, warmup_epochs=1)
    # 30 cosine steps: step 10 + 15 is half-way
    assert lr_at("cosine", 25, **kw) == pytest.approx(0.5)
    assert lr_at("cosine", 39, **kw) == pytest.approx(cos(1.0, 29 / 30))
    # warm-up as long as training: no division by zero, every step warms up
    assert lr_at("cosine", 39, lr=1.0, steps_per_epoch=S, epochs=4, warmup_epochs=4) == pytest.approx(1.0)


@pytest.mark.parametrize("kw, match", [(dict(steps_per_epoch=0), "steps_per_epoch=0"), (dict(epochs=0), "epochs=0"),
                                       (dict(restart_period=0), "restart_period=0")])
def test_bad_arguments_name_the_value(kw, match):
    args = dict(lr=0.1, steps_per_epoch=S, epochs=5, warmup_epochs=0, restart_period=10)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        lr_at("expatt", 3, **args)


def expatt_reference(step, *, lr, steps_per_epoch, warmup_steps, period):
    """SGDR by walking the cycles one by one in exact arithmetic (the period as the decimal written)."""
    from fractions import Fraction
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = Fraction(step - warmup_steps, steps_per_epoch)
    start, length = Fraction(0), Fraction(str(period))
    while start + length <= t:
        start, length = start + length, 2 * length
    return lr * 0.5 * (1 + math.cos(math.pi * float((t - start) / length)))


@pytest.mark.parametrize("period", [0.1, 0.3, 0.7, 1, 2.5, 3, 10])
@pytest.mark.parametrize("steps_per_epoch,warmup", [(10, 0), (7, 0.5), (50, 1)])
def test_expatt_equals_a_cycle_walking_reference_at_every_step(period, steps_per_epoch, warmup):
    """Every step of a long schedule, restarts on exact steps included (0.1 epochs of 10 steps: a restart at step
    7 starts at the peak, not at the end of the previous cycle)."""
    epochs = 40
    W = warmup_steps("expatt", steps_per_epoch, epochs, warmup)
    kw = dict(lr=1.0, steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=warmup, restart_period=period)
    got = [lr_at("expatt", s, **kw) for s in range(epochs * steps_per_epoch)]
    want = [expatt_reference(s, lr=1.0, steps_per_epoch=steps_per_epoch, warmup_steps=W, period=period)
            for s in range(epochs * steps_per_epoch)]
    assert got == pytest.approx(want, abs=1e-9)
    if period == 0.1 and steps_per_epoch == 10:
        assert got[7] == pytest.approx(1.0) and got[6] < 0.2      # restarts at 0.1 * (2^3 - 1) = 0.7 epochs


def test_expatt_reads_a_period_of_three_decimals_exactly():
    kw = dict(lr=1.0, steps_per_epoch=1000, epochs=4, warmup_epochs=0, restart_period=0.123)
    for k in (1, 2, 3, 4):                                   # restarts at 0.123 (2^k - 1) epochs: step 123 (2^k - 1)
        step = 123 * (2 ** k - 1)
        assert lr_at("expatt", step, **kw) == pytest.approx(1.0) and lr_at("expatt", step - 1, **kw) < 1e-3


def test_expatt_default_period_is_ten_epochs_and_errors_list_the_schedules():
    kw = dict(lr=1.0, steps_per_epoch=S, epochs=100, warmup_epochs=0)
    assert [lr_at("expatt", s, **kw) for s in range(0, 1000, 7)] == \
        [lr_at("expatt", s, restart_period=10, **kw) for s in range(0, 1000, 7)]
    assert lr_at("expatt", 10 * S, **kw) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="choose one of: cosine, expatt, aa, constant"):
        lr_at("step", 0, **kw)
