"""Benchmark of the gates: a residual block with each gate kind of the registry (SE, CBAM, then any registered
with ``attnrepro.register``) against the same block without."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import registry
from .harness import Ctx, Row, _fwd_bwd, _pair_row, _progress

__all__ = ["case_gates"]


class _Block(nn.Module):
    """A basic residual block (conv-bn-relu-conv-bn, identity shortcut) with an optional gate after the last BN."""

    def __init__(self, channels: int, gate: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gate = gate if gate is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.gate(self.bn2(self.conv2(out)))
        return F.relu(out + x)


def case_gates(ctx: Ctx) -> list[Row]:
    """A basic residual block with each gate after its last BN vs the same block without, fwd + bwd (each gate
    with its defaults)."""
    from ..modules.factory import create_gate

    B, C, s = (2, 16, 8) if ctx.quick else (16, 64, 32)
    x = ctx.randn(B, C, s, s, requires_grad=True)
    plain = _Block(C).to(ctx.device)
    rows = []
    for kind in registry.gate_kinds():
        name, gate = registry.title(kind), create_gate(kind, C)
        blk = _Block(C, gate).to(ctx.device)
        blk.load_state_dict(plain.state_dict(), strict=False)
        rows.append(_pair_row(ctx, "gates", f"block + {name} vs block", f"B={B}, {C} ch, {s}x{s}"
                              + (", reduction 16" if "reduction" in registry.accepted(kind) else ""),
                              _fwd_bwd(lambda b=blk: b(x), [x], [blk]), _fwd_bwd(lambda: plain(x), [x], [plain]),
                              note="ratio < 1: the gate costs more"))
        ctx.log(_progress(rows[-1]))
    return rows
