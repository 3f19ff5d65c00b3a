"""Benchmark of AW-convolution: the batched grouped convolution against a per-sample loop."""
from __future__ import annotations

import torch

from .harness import Ctx, Row, Target, _fwd_bwd, _modules, _pair_row, _progress

__all__ = ["case_aw_batched_vs_loop"]


def case_aw_batched_vs_loop(ctx: Ctx) -> list[Row]:
    """``aw_conv2d`` (one grouped conv, batch folded into the groups) vs ``aw_conv2d_reference`` (a loop over the
    samples), forward + backward, at batch 64, on the 3x3 convs of ResNet-20's three stages (16 ch at 32x32,
    32 ch at 16x16, 64 ch at 8x8); per-sample maps ``(B, m=8, C_in, k, k)`` (the layer's default m)."""
    _, Fm = _modules()
    B, maps = (4, 8) if ctx.quick else (64, 8)
    cfgs = [(8, 8)] if ctx.quick else [(16, 32), (32, 16), (64, 8)]
    rows = []
    for C, s in cfgs:
        x = ctx.randn(B, C, s, s, requires_grad=True)
        w = ctx.randn(C, C, 3, 3, requires_grad=True)
        a = torch.sigmoid(ctx.randn(B, maps, C, 3, 3)).requires_grad_(True)
        fast = _fwd_bwd(lambda: Fm.aw_conv2d(x, w, a, padding=1), [x, w, a])
        ref = _fwd_bwd(lambda: Fm.aw_conv2d_reference(x, w, a, padding=1), [x, w, a])
        target = Target(">= 5 (5x faster at batch 64)", min_ratio=5.0)
        rows.append(_pair_row(ctx, "aw_batched_vs_loop", "aw_conv2d batched vs per-sample loop",
                              f"B={B}, {C}->{C} ch, 3x3, m={maps} maps, {s}x{s}", fast, ref, target))
        ctx.log(_progress(rows[-1]))
    return rows
