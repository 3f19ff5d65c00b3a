"""ExpAttConv2d: the layer's output by its definition, the radius parameterisation, the map cache."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnrepro.modules import ExpAttConv2d
from attnrepro.modules.functional import KERNELS, explicit_attention_reference

D = torch.float64


def by_definition(layer: ExpAttConv2d, x: torch.Tensor) -> torch.Tensor:
    xa = F.avg_pool2d(x, layer.stride) if layer.stride > 1 else x
    B, _, H, W = xa.shape
    v = F.conv2d(xa, layer.value.weight).reshape(B, layer.heads, layer.dv // layer.heads, H, W)
    o = explicit_attention_reference(v, torch.exp(layer.log_radius), layer.kernel).reshape(B, layer.dv, H, W)
    o = F.conv2d(o, layer.proj.weight, layer.proj.bias)
    conv = F.conv2d(x, layer.conv.weight, None, layer.stride, layer.kernel_size // 2)
    return torch.cat([conv, o], dim=1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("per_head", [False, True])
def test_layer_matches_definition_with_grads(kernel, per_head):
    torch.manual_seed(0)
    layer = ExpAttConv2d(5, 40, heads=4, upsilon=0.4, kernel=kernel, radius_init=1.5,
                         radius_per_head=per_head).double()
    with torch.no_grad():
        layer.log_radius.add_(torch.linspace(-0.3, 0.4, layer.log_radius.numel(), dtype=D))
    x = torch.randn(2, 5, 7, 9, dtype=D)
    out, ref = layer(x), by_definition(layer, x)
    assert out.shape == (2, 40, 7, 9)
    assert torch.allclose(out, ref, atol=1e-10)
    g = torch.randn_like(out)
    params = list(layer.parameters())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, b, atol=1e-9)   # every parameter has a gradient (uniform: no radius parameter)


def test_radius_parameterisation():
    layer = ExpAttConv2d(8, 32, heads=2, radius_init=3.0)
    assert isinstance(layer.log_radius, torch.nn.Parameter)
    assert layer.radius.shape == (1,) and layer.radius.item() == pytest.approx(3.0)
    assert layer.log_radius.item() == pytest.approx(math.log(3.0))
    per_head = ExpAttConv2d(8, 40, heads=4, upsilon=0.4, radius_per_head=True)
    assert per_head.radius.shape == (4,)
    frozen = ExpAttConv2d(8, 32, heads=2, learn_radius=False)
    assert not frozen.log_radius.requires_grad
    assert "log_radius" not in dict(frozen.named_parameters()) and "log_radius" in frozen.state_dict()
    frozen(torch.randn(1, 8, 5, 5)).sum().backward()  # no error, and nothing to learn
    # uniform ignores the radius: a buffer even when learn_radius is set (an unused parameter stalls DDP)
    uniform = ExpAttConv2d(8, 32, heads=2, kernel="uniform", radius_init=3.0)
    assert "log_radius" not in dict(uniform.named_parameters()) and "log_radius" in uniform.state_dict()
    assert uniform.radius.item() == pytest.approx(3.0)
    uniform(torch.randn(1, 8, 5, 5)).square().sum().backward()
    assert all(p.grad is not None for p in uniform.parameters())
    layer(torch.randn(1, 8, 5, 5)).square().sum().backward()
    assert layer.log_radius.grad is not None and layer.log_radius.grad.abs().item() > 0


@pytest.mark.parametrize("kernel", ["cauchy", "laplacian"])
def test_cached_map_follows_the_radius(kernel):
    torch.manual_seed(1)
    layer = ExpAttConv2d(4, 20, heads=2, upsilon=0.4, kernel=kernel, learn_radius=False).double()
    x = torch.randn(1, 4, 6, 5, dtype=D)
    first = layer(x)
    assert layer._map_cache is not None
    assert torch.equal(layer(x), first)                       # served from the cache
    with torch.no_grad():
        layer.log_radius.fill_(math.log(0.5))                 # in-place change: cache must not be stale
    changed = layer(x)
    assert not torch.allclose(changed, first)
    assert torch.allclose(changed, by_definition(layer, x), atol=1e-10)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["log_radius"] = torch.tensor([math.log(4.0)], dtype=D)
    layer.load_state_dict(state)
    assert torch.allclose(layer(x), by_definition(layer, x), atol=1e-10)
    assert torch.allclose(layer(x[:, :, :4, :3]), by_definition(layer, x[:, :, :4, :3]), atol=1e-10)  # new size


def test_learnable_radius_cache_only_without_grad():
    torch.manual_seed(2)
    layer = ExpAttConv2d(4, 20, heads=2, upsilon=0.4, kernel="cauchy").double()
    x = torch.randn(1, 4, 5, 5, dtype=D)
    layer(x)
    assert layer._map_cache is None                           # training: map built in the graph
    with torch.no_grad():
        before = layer(x)
    layer(x).square().sum().backward()
    with torch.no_grad():                                     # an SGD step: in place, as torch.optim does it
        for p in layer.parameters():
            p.sub_(p.grad)
    with torch.no_grad():
        after = layer(x)
        assert torch.allclose(after, by_definition(layer, x), atol=1e-10)
    assert not torch.allclose(before, after)


def test_stride_two_and_narrow_layer():
    torch.manual_seed(3)
    layer = ExpAttConv2d(4, 20, stride=2, heads=2, upsilon=0.4).double()
    x = torch.randn(2, 4, 8, 6, dtype=D)
    out = layer(x)
    assert out.shape == (2, 20, 4, 3)
    assert torch.allclose(out, by_definition(layer, x), atol=1e-10)
    narrow = ExpAttConv2d(16, 16)
    assert narrow.heads == 2 and narrow.dv == 2
    assert narrow(torch.randn(1, 16, 6, 6)).shape == (1, 16, 6, 6)


def test_same_shape_as_aa():
    from attnrepro.modules import AAConv2d
    e, a = ExpAttConv2d(64, 128), AAConv2d(64, 128)
    assert (e.heads, e.dv, e.conv.out_channels) == (a.heads, a.dv, a.conv.out_channels)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_radius_init(bad):
    with pytest.raises(ValueError, match="radius_init"):
        ExpAttConv2d(8, 16, radius_init=bad)


def test_bad_kernel_names_choices():
    with pytest.raises(ValueError, match="gaussian, laplacian, cauchy, uniform"):
        ExpAttConv2d(8, 16, kernel="box")
