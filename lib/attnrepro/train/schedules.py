"""Per-step learning-rate schedules: ``cosine``, ``expatt``, ``aa`` and ``constant``.

All schedules are pure functions of the global step ``s`` (0-based; the rate used for the update of step ``s``),
with ``S`` steps per epoch, ``T = epochs * S`` steps in all and peak rate ``lr``. Warm-up of ``W`` steps is linear
from 0: ``lr * (s + 1) / W`` for ``s < W`` (so step 0 already moves, and step ``W - 1`` runs at the peak).

- ``constant``: warm-up over ``W = round(warmup_epochs * S)`` steps, then ``lr``.
- ``cosine``: warm-up over ``W = round(warmup_epochs * S)``, then ``lr * (1 + cos(pi * (s - W) / (T - W))) / 2``.
- ``aa`` (Bello et al. 2019, the AA paper's recipe): warm-up over the first 5% of the steps,
  ``W = round(0.05 * T)`` (``warmup_epochs`` ignored), then the cosine above, decaying to 0 at ``T``.
- ``expatt`` (Tan et al. 2021, the ExpAtt paper's recipe, papers.md section 1): warm-up over
  ``W = round(warmup_epochs * S)`` steps, then cosine annealing with warm restarts (SGDR, minimum 0) whose cycles
  last ``P, 2P, 4P, ...`` epochs with ``P = restart_period``. With ``warmup_epochs=15, restart_period=10`` the
  restarts fall at epochs 25, 45, 85, 165, 325, as in the paper. Within cycle ``k`` (starting ``P (2^k - 1)``
  epochs after the warm-up, length ``P 2^k``) at position ``u`` in [0, 1): ``lr * (1 + cos(pi * u)) / 2``, with
  ``u`` measured in epochs ``(s - W) / S``.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

from ..config import SCHEDULES  # one list of names: the run config's

__all__ = ["lr_at", "make_schedule", "warmup_steps", "SCHEDULES"]


def warmup_steps(schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float) -> int:
    """Number of linear warm-up steps of ``schedule``."""
    if schedule == "aa":
        return int(round(0.05 * epochs * steps_per_epoch))
    return int(round(warmup_epochs * steps_per_epoch))


def lr_at(schedule: str, step: int, *, lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
          restart_period: float = 10.0) -> float:
    """The learning rate for the update of global step ``step`` (see the module docstring for the definitions)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not valid; choose one of: {', '.join(SCHEDULES)}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch} and epochs={epochs} must be >= 1")
    S, T = steps_per_epoch, epochs * steps_per_epoch
    W = warmup_steps(schedule, S, epochs, warmup_epochs)
    if step < W:
        return lr * (step + 1) / W
    if schedule == "constant":
        return lr
    if schedule in ("cosine", "aa"):
        return lr * 0.5 * (1.0 + math.cos(math.pi * (step - W) / max(1, T - W)))
    # expatt: SGDR with cycles P, 2P, 4P, ... epochs after the warm-up
    if restart_period <= 0:
        raise ValueError(f"restart_period={restart_period} must be > 0")
    t = (step - W) / S  # epochs since the end of warm-up
    k = _cycle(step - W, S, restart_period)
    start, length = restart_period * (2 ** k - 1), restart_period * 2 ** k
    u = (t - start) / length
    return lr * 0.5 * (1.0 + math.cos(math.pi * u))


def _cycle(steps: int, steps_per_epoch: int, period: float) -> int:
    """The SGDR cycle ``k`` that holds ``steps`` steps after the warm-up: the largest ``k`` with
    ``period (2^k - 1) <= steps / steps_per_epoch``, decided in exact arithmetic (the period read as the decimal it was
    written as), so a restart that falls on a step starts its cycle there. (In floats, ``0.1 * 7 > 0.7``: the
    restart at step 7 of a 0.1-epoch period with 10 steps an epoch ran at the end of the previous cycle, rate 0.)"""
    t = Fraction(steps, steps_per_epoch)
    p = Fraction(period).limit_denominator(10 ** 9)
    k = 0
    while p * (2 ** (k + 1) - 1) <= t:
        k += 1
    return k


def make_schedule(cfg, steps_per_epoch: int) -> Callable[[int], float]:
    """``step -> lr`` for a RunConfig (keys schedule, lr, epochs, warmup_epochs, restart_period)."""
    kw = dict(lr=cfg.lr, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
              restart_period=cfg.restart_period)
    return lambda step: lr_at(cfg.schedule, step, **kw)
