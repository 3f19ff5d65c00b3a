"""Benchmarks of AA: the layer (SDPA with a relative bias) against the same layer with naive attention
(:class:`NaiveAAConv2d`, this benchmark's baseline, defined here beside its case)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .harness import Ctx, Row, Target, _fwd_bwd, _modules, _pair_row, _progress

__all__ = ["NaiveAAConv2d", "case_aa_vs_naive"]


class NaiveAAConv2d(nn.Module):
    """The naive AA layer, the benchmark's baseline: the forward of a given ``AAConv2d`` (sharing its parameters,
    so both compute the same function) with the attention written the naive way,
    :func:`~attnrepro.modules.functional.aa_attention_reference`: explicit ``q k^T`` logits plus relative logits,
    softmax, matmul, every ``(B, heads, HW, HW)`` intermediate materialised and kept for backward.

    Args:
        fast: the ``AAConv2d`` whose parameters and channel split are used.
    """

    def __init__(self, fast: nn.Module):
        super().__init__()
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..modules.explicit import attention_input
        from ..modules.functional import aa_attention_reference

        f = self.fast
        xa = attention_input(x, f.kernel_size, f.stride)
        B, _, H, W = xa.shape
        qkv = f.qkv(xa).reshape(B, 2 * f.dk + f.dv, H * W)
        q, k, v = qkv.split([f.dk, f.dk, f.dv], dim=1)
        q = q.reshape(B, f.heads, f.dkh, H * W).transpose(-1, -2) * f.dkh ** -0.5
        k = k.reshape(B, f.heads, f.dkh, H * W).transpose(-1, -2)
        v = v.reshape(B, f.heads, f.dv // f.heads, H * W).transpose(-1, -2)
        rel = f.tables(H, W) if f.relative else (None, None)
        o = aa_attention_reference(q, k, v, *rel, H, W)
        o = f.proj(o.transpose(-1, -2).reshape(B, f.dv, H, W))
        return o if f.conv is None else torch.cat([f.conv(x), o], dim=1)


def case_aa_vs_naive(ctx: Ctx) -> list[Row]:
    """The AA layer (SDPA + relative bias) vs :class:`NaiveAAConv2d` (same parameters, naive attention), forward +
    backward, at 28x28 (target) and 14x14; plus the attention op alone (``aa_attention`` vs
    ``aa_attention_reference``) at 28x28. Channels: a ResNet-50's 3x3 conv at that size (28: 128, 14: 256)."""
    M, Fm = _modules()
    cfgs = [(2, 32, 8)] if ctx.quick else [(8, 128, 28), (8, 256, 14)]
    rows = []
    for B, C, s in cfgs:
        x = ctx.randn(B, C, s, s, requires_grad=True)
        fast = M.AAConv2d(C, C, 3, max_size=s).to(ctx.device)
        naive = NaiveAAConv2d(fast)
        desc = f"dk={fast.dk}, dv={fast.dv}, {fast.heads} heads"
        target = None
        if s == 28:
            target = Target(">= 1.5 and peak mem <= 0.5x", min_ratio=1.5, max_mem_ratio=0.5)
            if ctx.device.type == "cuda":
                target = Target("(CPU target: >= 1.5 and peak mem <= 0.5x; reported only)")
        rows.append(_pair_row(ctx, "aa_vs_naive", "AAConv2d (SDPA + rel. bias) vs naive AA layer",
                              f"B={B}, {C}->{C} ch, {desc}, {s}x{s}",
                              _fwd_bwd(lambda: fast(x), [x], [fast]), _fwd_bwd(lambda: naive(x), [x], [fast]),
                              target))
        ctx.log(_progress(rows[-1]))
    B, C, s = cfgs[0]
    fast = M.AAConv2d(C, C, 3, max_size=s)
    h, dkh, dvh, L = fast.heads, fast.dkh, fast.dv // fast.heads, s * s
    q = ctx.randn(B, h, L, dkh, requires_grad=True)
    k = ctx.randn(B, h, L, dkh, requires_grad=True)
    v = ctx.randn(B, h, L, dvh, requires_grad=True)
    rh = ctx.randn(2 * s - 1, dkh, requires_grad=True)
    rw = ctx.randn(2 * s - 1, dkh, requires_grad=True)
    leaves = [q, k, v, rh, rw]
    rows.append(_pair_row(ctx, "aa_vs_naive", "aa_attention (SDPA) vs aa_attention_reference (op only)",
                          f"B={B}, {h} heads, dkh={dkh}, dvh={dvh}, {s}x{s}",
                          _fwd_bwd(lambda: Fm.aa_attention(q * dkh ** -0.5, k, v, rh, rw, s, s), leaves),
                          _fwd_bwd(lambda: Fm.aa_attention_reference(q * dkh ** -0.5, k, v, rh, rw, s, s), leaves)))
    ctx.log(_progress(rows[-1]))
    return rows
