"""Benchmarks of ExpAtt: the factorised Gaussian against the dense map, and the layer against the conv it
replaces."""
from __future__ import annotations

import torch
import torch.nn as nn

from .harness import Ctx, Row, Target, _fwd_bwd, _modules, _pair_row, _progress

__all__ = ["case_expatt_fast_vs_dense", "case_expatt_vs_conv"]


def case_expatt_fast_vs_dense(ctx: Ctx) -> list[Row]:
    """``explicit_attention`` (Gaussian, separable ``G_y V G_x^T``) vs ``explicit_attention_reference`` (dense
    ``(h, HW, HW)`` map), forward + backward w.r.t. the values and the radius. Value depths follow a ResNet-50's 3x3
    conv width at that size with upsilon 0.1 (56: 64 -> 8 ch, 28: 128 -> 16 ch, 14: 256 -> 24 ch), 8 heads."""
    _, Fm = _modules()
    sizes = (6, 10) if ctx.quick else (14, 28, 56)
    dvs = {14: 24, 28: 16, 56: 8}
    B, heads = (2 if ctx.quick else 8), 8
    rows = []
    for s in sizes:
        dv = dvs.get(s, 8)
        v = ctx.randn(B, dv, s, s, requires_grad=True)
        radius = torch.full((1,), 2.0, device=ctx.device).requires_grad_(True)
        fast = _fwd_bwd(lambda: _expatt_call(Fm.explicit_attention, v, radius, heads), [v, radius])
        ref = _fwd_bwd(lambda: _expatt_call(Fm.explicit_attention_reference, v, radius, heads), [v, radius])
        big = s == 56
        target = Target(">= 20 (20x faster at 56x56)", min_ratio=20.0) if big else None
        rows.append(_pair_row(ctx, "expatt_fast_vs_dense", "ExpAtt gaussian: separable vs dense map",
                              f"B={B}, {dv} ch, {heads} heads, {s}x{s}", fast, ref, target))
        ctx.log(_progress(rows[-1]))
    return rows


def _expatt_call(fn, v, radius, heads):
    """Call the functional ExpAtt with (B, heads, d, H, W) values, whichever layout the module expects."""
    B, C, H, W = v.shape
    return fn(v.view(B, heads, C // heads, H, W), radius, "gaussian")


def case_expatt_vs_conv(ctx: Ctx) -> list[Row]:
    """The ExpAtt layer vs the plain 3x3 conv it replaces (same in/out channels and size), forward + backward."""
    M, _ = _modules()
    cfgs = [(2, 16, 8)] if ctx.quick else [(16, 64, 56), (16, 128, 28), (16, 256, 14)]
    rows = []
    for B, C, s in cfgs:
        x = ctx.randn(B, C, s, s, requires_grad=True)
        layer = M.ExpAttConv2d(C, C, 3).to(ctx.device)
        conv = nn.Conv2d(C, C, 3, padding=1, bias=False).to(ctx.device)
        fast = _fwd_bwd(lambda: layer(x), [x], [layer])
        ref = _fwd_bwd(lambda: conv(x), [x], [conv])
        rows.append(_pair_row(ctx, "expatt_vs_conv", "ExpAttConv2d vs plain conv3x3",
                              f"B={B}, {C}->{C} ch, {s}x{s}", fast, ref,
                              note="ratio < 1: ExpAtt costs more"))
        ctx.log(_progress(rows[-1]))
    return rows
