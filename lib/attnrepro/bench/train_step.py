"""Benchmarks of one SGD train step: each attention kind in ResNet-20 (32 px) and ResNet-50 (224 px) against the
plain network. The kinds are the registry's single-layer kinds (:func:`attnrepro.registry.layer_kinds`: the suite's
five, then any registered with ``attnrepro.register``)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import registry
from .harness import Ctx, Row, Target, _pair_row, _progress

__all__ = ["ATTENTION_KINDS_BENCHED", "case_train_step_resnet20", "case_train_step_resnet50"]


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, amp: bool = False) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    dev = x.device.type

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def __getattr__(name: str):
    # ATTENTION_KINDS_BENCHED: the kinds each train-step group benchmarks, read from the registry when looked up
    if name == "ATTENTION_KINDS_BENCHED":
        return registry.layer_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _case_train_step(ctx: Ctx, model_name: str, size: int, batch: int, num_classes: int, group: str,
                     kinds: Sequence[str] | None = None) -> list[Row]:
    from ..models import build_model

    kinds = registry.layer_kinds() if kinds is None else kinds
    x = ctx.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,), generator=ctx.gen()).to(ctx.device)
    torch.manual_seed(ctx.seed)
    plain = build_model(model_name, num_classes, input_size=size).to(ctx.device)
    rows = []
    for kind in kinds:
        torch.manual_seed(ctx.seed)
        model = build_model(model_name, num_classes, attention=kind, input_size=size).to(ctx.device)
        target = Target("<= 1.2x plain step time (ratio >= 0.833)", min_ratio=1 / 1.2) if kind == "expatt" else None
        row = _pair_row(ctx, group, f"train step {model_name} {kind} vs none",
                        f"B={batch}, {size}x{size}, SGD step, default stages", _train_step(model, x, y),
                        _train_step(plain, x, y), target)
        f = row.fast
        row.note = "; ".join(t for t in (row.note, f"{batch / f.median_ms * 1e3:.1f} img/s vs "
                                         f"{batch / row.ref.median_ms * 1e3:.1f} img/s") if t)
        rows.append(row)
        ctx.log(_progress(row))
        del model
    return rows


def case_train_step_resnet20(ctx: Ctx) -> list[Row]:
    """One SGD train step of ResNet-20 (32x32, 10 classes) with each attention kind vs without."""
    return _case_train_step(ctx, "resnet20", 32 if not ctx.quick else 16, 4 if ctx.quick else 32, 10,
                            "train_step_resnet20")


def case_train_step_resnet50(ctx: Ctx) -> list[Row]:
    """One SGD train step of ResNet-50 (224x224, 1000 classes; a small batch on CPU) with each kind vs without."""
    if ctx.quick:
        return _case_train_step(ctx, "resnet50", 32, 2, 10, "train_step_resnet50", kinds=("expatt",))
    batch = 32 if ctx.device.type == "cuda" else 2
    return _case_train_step(ctx, "resnet50", 224, batch, 1000, "train_step_resnet50")
