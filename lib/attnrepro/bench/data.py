"""Benchmark of the data pipeline: the engine's tensor-resident batch iterator against the model step alone, and
the loaders compared."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .harness import Ctx, Measurement, Row, Target, _pair_row, _progress
from .train_step import _train_step

__all__ = ["case_data_loading"]


def case_data_loading(ctx: Ctx) -> list[Row]:
    """The training loop's data pipeline vs the model step alone.

    *fast* = one train step on a batch already in memory (the model alone); *reference* = fetching the next batch
    from the engine's train iterator (``attnrepro.data.load(cfg, device).train``: tensor-resident, augmentation on
    the device) and then the same train step. ``ratio`` = step / (fetch + step); overhead = 1/ratio - 1.
    """
    from ..config import RunConfig
    from ..data import DataError, load
    from ..models import build_model

    batch = 8 if ctx.quick else 128
    for dataset in ("fashion_mnist", "synthetic"):   # the default data set; synthetic where it is missing
        cfg = RunConfig.from_dict(dataset=dataset, model="resnet20", batch_size=batch, augment=True,
                                  device=ctx.device.type, train_subset=(256 if ctx.quick else 0))
        try:
            bundle = load(cfg, ctx.device)
            break
        except (DataError, FileNotFoundError) as e:
            ctx.log(f"  {dataset} not available ({e}); using synthetic data")
    model = build_model("resnet20", bundle.num_classes, in_chans=bundle.in_chans,
                        input_size=bundle.input_size).to(ctx.device)
    state = {"it": None, "epoch": 0}

    def next_batch():
        if state["it"] is not None:
            try:
                return next(state["it"])
            except StopIteration:
                pass
        state["epoch"] += 1
        if hasattr(bundle.train, "set_epoch"):
            bundle.train.set_epoch(state["epoch"])
        state["it"] = iter(bundle.train)
        return next(state["it"])

    x0, y0 = next_batch()
    step_fixed = _train_step(model, x0, y0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def loop_step() -> None:
        x, y = next_batch()
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    target = Target("loading overhead <= 10% (ratio >= 0.909)", min_ratio=1 / 1.1)
    row = _pair_row(ctx, "data_loading", "model step alone vs loop step (engine iterator + step)",
                    f"resnet20, {dataset}, B={batch}, augment on", step_fixed, loop_step, target)
    row.note = "; ".join(t for t in (row.note, f"overhead {100 * (1 / row.ratio - 1):.1f}%") if t)
    ctx.log(_progress(row))
    rows = [row]
    try:
        rows.extend(_loader_rows(ctx))
    except Exception as e:  # noqa: BLE001 - the engine's comparison is extra; keep the row above
        ctx.log(f"  compare_loaders failed: {type(e).__name__}: {e}")
        rows.append(Row("data_loading", "compare_loaders", "error", met="error",
                        note=f"{type(e).__name__}: {e}".replace("\n", " ")[:300]))
    return rows


def _loader_rows(ctx: Ctx) -> list[Row]:
    """The engine's :func:`attnrepro.train.throughput.compare_loaders`: its tensor-resident loader vs a
    DataLoader + PIL pipeline on Fashion-MNIST (resnet20), a whole train step and the batch fetch alone. Its own
    timing: wall clock, medians over steps, the loaders alternating in rounds; no peak memory."""
    from ..train.throughput import compare_loaders

    kw = (dict(steps=1, rounds=1, warmup=0, batch_size=16, num_workers=0) if ctx.quick else
          dict(steps=8, rounds=2, warmup=4, batch_size=128, num_workers=2))
    res = compare_loaders(device=ctx.device.type, data_only=True, **kw)
    ms = {(r["loader"], r["mode"]): r["step_ms"] for r in res["rows"]}
    rows = []
    for mode, what in (("train_step", "train step"), ("data_only", "batch fetch only")):
        if ("tensor", mode) not in ms:
            continue
        f, r = ms[("tensor", mode)], ms[("dataloader", mode)]
        n = kw["steps"] * kw["rounds"]
        row = Row("data_loading", f"{what}: tensor loader vs DataLoader+PIL (compare_loaders)",
                  f"resnet20, fashion_mnist, B={kw['batch_size']}, {kw['num_workers']} workers",
                  Measurement(f, f, f, n, 1), Measurement(r, r, r, n, 1),
                  note="engine's wall-clock medians; no memory measured")
        rows.append(row)
        ctx.log(_progress(row))
    return rows
