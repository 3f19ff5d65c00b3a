"""ExpAttConv2d's folded training path (one conv instead of three) against the layer as defined, and the dense-map
cache keyed on the radius's value."""
import math

import pytest
import torch

from attnrepro.modules import ExpAttConv2d
from attnrepro.modules.functional import KERNELS

D = torch.float64


def _run(layer: ExpAttConv2d, x: torch.Tensor, fold: bool):
    layer.fold = fold
    x = x.detach().requires_grad_(True)
    out = layer(x)
    g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape).sin()
    params = list(layer.parameters())
    grads = torch.autograd.grad(out, [x] + params, g, allow_unused=True)
    return out.detach(), grads


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("stride,side", [(1, 6), (1, 7), (2, 8), (2, 7)])
def test_fold_matches_definition_values_and_grads(kernel, per_head, stride, side):
    torch.manual_seed(0)
    layer = ExpAttConv2d(5, 24, 3, stride, heads=2, upsilon=0.25, kernel=kernel, radius_init=1.3,
                         radius_per_head=per_head).double()
    with torch.no_grad():
        layer.log_radius.add_(torch.linspace(-0.2, 0.3, layer.log_radius.numel(), dtype=D))
    x = torch.randn(3, 5, side, side + 1 if stride == 1 else side, dtype=D)
    folded, g_folded = _run(layer, x, True)
    plain, g_plain = _run(layer, x, False)
    assert torch.allclose(folded, plain, atol=1e-11)
    for a, b in zip(g_folded, g_plain):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-10)


def test_fold_without_conv_part():
    """d_v = F_out: the layer is all attention, and the folded conv is the 1x1 projection alone."""
    torch.manual_seed(1)
    layer = ExpAttConv2d(4, 4, heads=2, upsilon=1.0).double()
    assert layer.conv is None
    x = torch.randn(2, 4, 5, 5, dtype=D)
    assert torch.allclose(_run(layer, x, True)[0], _run(layer, x, False)[0], atol=1e-12)


def test_fold_runs_except_under_tracing(monkeypatch):
    """Folded in training and eval; the definition while traced (op counters trace), or as ``fold`` says."""
    layer = ExpAttConv2d(4, 16, heads=2, upsilon=0.25)
    calls = []
    monkeypatch.setattr(layer, "_forward_folded", lambda x, taps: calls.append("folded") or torch.zeros(1))
    monkeypatch.setattr(layer, "_forward_reference", lambda x: calls.append("reference") or torch.zeros(1))
    x = torch.randn(1, 4, 6, 6)
    layer.train()(x)
    layer.eval()(x)
    with monkeypatch.context() as m:
        m.setattr(torch.jit, "is_tracing", lambda: True)
        layer(x)
        layer.fold = True
        layer(x)
    layer.fold = False
    layer(x)
    assert calls == ["folded", "folded", "reference", "folded", "reference"]


def test_counted_macs_are_the_definitions():
    """fvcore traces the model: it must see W_V and W_O as the 1x1 convs they are, not a folded k x k conv."""
    from attnrepro.flops import count_macs

    layer = ExpAttConv2d(8, 20, heads=2, upsilon=0.2).eval()     # d_v = 4, conv part 16 channels
    shape = (1, 8, 6, 6)
    default = count_macs(layer, shape)
    layer.fold = False
    definition = count_macs(layer, shape)
    layer.fold = True
    folded = count_macs(layer, shape)
    assert default == definition
    # the definition's convs: conv part 16x8x3x3, W_V 4x8, W_O 4x4 per pixel; folded: one 20x8x3x3 conv
    assert folded - definition >= (20 * 72 - (16 * 72 + 32 + 16)) * 36
