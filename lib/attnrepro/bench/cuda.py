"""CUDA-only benchmarks: bf16 autocast + channels_last, and torch.compile, on against off."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from .. import registry
from .harness import Ctx, Row, _pair_row, _progress
from .train_step import _train_step

__all__ = ["case_cuda_amp_channels_last", "case_cuda_compile"]


_CUDA_ONLY = ("cuda_amp_channels_last", "cuda_compile")


def _cuda_only_row(group: str, benchmark: str) -> Row:
    return Row(group, benchmark, "cuda only (skipped on this device)", target=None, met="n.a.")


def _cuda_resnet50_setup(ctx: Ctx):
    """``(size, batch, x, y, make)`` of the CUDA model cases: a batch of images and labels on the device, and
    ``make(kind)``, a ResNet-50 with that attention on the device."""
    from ..models import build_model

    size, batch = (64, 4) if ctx.quick else (224, 64)
    x = ctx.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,), generator=ctx.gen()).to(ctx.device)

    def make(kind: str) -> nn.Module:
        return build_model("resnet50", 1000, attention=kind, input_size=size).to(ctx.device)
    return size, batch, x, y, make


def case_cuda_amp_channels_last(ctx: Ctx) -> list[Row]:
    """CUDA: ResNet-50 train step with bf16 autocast + channels_last vs fp32 contiguous, per attention kind."""
    if ctx.device.type != "cuda":
        return [_cuda_only_row("cuda_amp_channels_last", "AMP bf16 + channels_last vs fp32")]
    size, batch, x, y, resnet50 = _cuda_resnet50_setup(ctx)
    rows = []
    for kind in ("none",) + (() if ctx.quick else registry.layer_kinds()):
        torch.manual_seed(ctx.seed)
        m_fast = resnet50(kind).to(memory_format=torch.channels_last)
        m_ref = resnet50(kind)
        xf = x.contiguous(memory_format=torch.channels_last)
        rows.append(_pair_row(ctx, "cuda_amp_channels_last", f"resnet50 {kind}: bf16+channels_last vs fp32",
                              f"B={batch}, {size}x{size}", _train_step(m_fast, xf, y, amp=True),
                              _train_step(m_ref, x, y)))
        ctx.log(_progress(rows[-1]))
    return rows


def case_cuda_compile(ctx: Ctx) -> list[Row]:
    """CUDA: ResNet-50 train step with ``torch.compile`` vs eager, per attention kind (compile time excluded)."""
    if ctx.device.type != "cuda":
        return [_cuda_only_row("cuda_compile", "torch.compile vs eager")]
    size, batch, x, y, resnet50 = _cuda_resnet50_setup(ctx)
    settings = dataclasses.replace(ctx.settings, warmup=max(3, ctx.settings.warmup))
    sub = dataclasses.replace(ctx, settings=settings)
    rows = []
    for kind in ("none", "expatt") if not ctx.quick else ("none",):
        torch.manual_seed(ctx.seed)
        m = resnet50(kind)
        mc = torch.compile(resnet50(kind))
        rows.append(_pair_row(sub, "cuda_compile", f"resnet50 {kind}: compiled vs eager", f"B={batch}, {size}x{size}",
                              _train_step(mc, x, y), _train_step(m, x, y)))
        ctx.log(_progress(rows[-1]))
    return rows
