"""AWConv2d: attention branch as papers.md section 3 defines it, kernel K * (1 + A), map sharing."""
import pytest
import torch
import torch.nn.functional as F

from attnrepro.modules import AWConv2d
from attnrepro.modules.functional import aw_conv2d_reference

D = torch.float64


def by_definition(layer: AWConv2d, x: torch.Tensor) -> torch.Tensor:
    k = layer.kernel_size
    p = F.adaptive_avg_pool2d(x, k)
    h = F.relu(F.conv2d(p, layer.pw1.weight, layer.pw1.bias))
    a = torch.sigmoid(F.conv2d(h, layer.pw2.weight, layer.pw2.bias))
    a = a.reshape(x.shape[0], layer.maps, x.shape[1], k, k)
    return aw_conv2d_reference(x, layer.weight, a, None, layer.stride, k // 2)


@pytest.mark.parametrize("maps", [1, 3, 5, 12])   # 5 does not divide C_out = 12 (nor 3 the 10 below)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("c_out", [12, 10])
def test_layer_matches_definition_with_grads(maps, stride, c_out):
    torch.manual_seed(0)
    layer = AWConv2d(6, c_out, stride=stride, reduction=2, maps=maps).double()
    x = torch.randn(3, 6, 7, 9, dtype=D, requires_grad=True)
    out, ref = layer(x), by_definition(layer, x)
    assert out.shape == (3, c_out, (7 - 1) // stride + 1, (9 - 1) // stride + 1)
    assert torch.allclose(out, ref, atol=1e-10)
    params = [x] + list(layer.parameters())
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, b, atol=1e-9)
        assert a.abs().sum() > 0  # every parameter learns


def test_widths_and_clamped_maps():
    layer = AWConv2d(64, 128)
    assert layer.pw1.out_channels == 8 and layer.pw2.out_channels == 8 * 64   # max(64 // 16, 8), m * C_in
    assert AWConv2d(256, 64, reduction=16).pw1.out_channels == 16
    assert AWConv2d(8, 4, maps=8).maps == 4
    assert layer.weight.shape == (128, 64, 3, 3)
    a = layer.attention(torch.randn(2, 64, 9, 9))
    assert a.shape == (2, 8, 64, 3, 3) and (a > 0).all() and (a < 1).all()


def test_layer_shares_maps_by_consecutive_output_channels():
    """aw_maps=3 on 5 filters: filter o uses map o * 3 // 5 = [0, 0, 1, 1, 2] (written out, not computed)."""
    torch.manual_seed(2)
    layer = AWConv2d(4, 5, maps=3).double()
    maps = torch.arange(1, 4, dtype=D).reshape(1, 3, 1, 1, 1).expand(2, 3, 4, 3, 3)   # map j is j + 1
    layer.attention = lambda x: maps
    x = torch.randn(2, 4, 6, 6, dtype=D)
    plain = F.conv2d(x, layer.weight, padding=1)
    out = layer(x)
    for o, j in enumerate([0, 0, 1, 1, 2]):
        assert torch.allclose(out[:, o], (2 + j) * plain[:, o], atol=1e-12)


def test_per_sample_attention():
    torch.manual_seed(1)
    layer = AWConv2d(4, 8, maps=2)
    x = torch.randn(2, 4, 6, 6)
    both = layer(x)
    assert torch.allclose(both[1:], layer(x[1:]), atol=1e-5)    # sample 1 alone gives the same
    assert torch.allclose(both[:1], layer(x[:1]), atol=1e-5)


@pytest.mark.parametrize("kw", [{"reduction": 0}, {"maps": 0}])
def test_bad_args(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        AWConv2d(8, 8, **kw)
