"""SE and CBAM by their papers' equations."""
import pytest
import torch
import torch.nn.functional as F

from attnrepro.modules import CBAM, SE, SqueezeExcite

D = torch.float64


def test_se_by_definition():
    torch.manual_seed(0)
    se = SqueezeExcite(32).double()
    assert SE is SqueezeExcite and se.fc1.out_channels == 2
    x = torch.randn(2, 32, 5, 6, dtype=D)
    s = x.mean(dim=(2, 3))
    gate = torch.sigmoid(F.linear(F.relu(F.linear(s, se.fc1.weight[:, :, 0, 0], se.fc1.bias)),
                                  se.fc2.weight[:, :, 0, 0], se.fc2.bias))
    assert torch.allclose(se(x), x * gate[:, :, None, None], atol=1e-12)
    assert SqueezeExcite(16, reduction=16).fc1.out_channels == 1


def test_cbam_by_definition():
    torch.manual_seed(1)
    cb = CBAM(32, reduction=4).double()
    x = torch.randn(2, 32, 6, 5, dtype=D)
    mlp = lambda t: cb.mlp(t[:, :, None, None])[:, :, 0, 0]  # noqa: E731
    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    x1 = x * mc[:, :, None, None]
    ms = torch.sigmoid(F.conv2d(torch.stack([x1.mean(1), x1.amax(1)], dim=1), cb.spatial.weight, cb.spatial.bias,
                                padding=3))
    assert cb.spatial.kernel_size == (7, 7)
    assert torch.allclose(cb(x), x1 * ms, atol=1e-12)


def test_cbam_is_sequential_the_spatial_gate_reads_the_channel_gated_features():
    """With a trained (non-zero) spatial conv: the spatial gate is computed from the channel-gated map (the paper's
    sequential arrangement), not from the input (a parallel one). At the zero init both give the gate 1/2, so this
    needs other weights."""
    torch.manual_seed(3)
    cb = CBAM(8, reduction=2, spatial_kernel=3).double()
    with torch.no_grad():
        cb.spatial.weight.normal_()
        cb.spatial.bias.fill_(0.3)
        cb.mlp[2].bias.normal_()                        # a channel gate far from uniform
    x = torch.randn(3, 8, 5, 4, dtype=D)
    mlp = lambda t: cb.mlp(t)  # noqa: E731
    x1 = x * torch.sigmoid(mlp(x.mean(dim=(2, 3), keepdim=True)) + mlp(x.amax(dim=(2, 3), keepdim=True)))

    def gate(t):
        return torch.sigmoid(F.conv2d(torch.cat([t.mean(1, keepdim=True), t.amax(1, keepdim=True)], 1),
                                      cb.spatial.weight, cb.spatial.bias, padding=1))
    assert torch.allclose(cb(x), x1 * gate(x1), atol=1e-12)
    assert not torch.allclose(cb(x), x1 * gate(x), atol=1e-3)      # the parallel version is another function


def test_cbam_spatial_gate_starts_at_one_half():
    """The deliberate exception to the backbone's rule (the authors' code zeroes the BN after the spatial conv)."""
    torch.manual_seed(2)
    cb = CBAM(16, reduction=4).double()
    assert cb.init_exempt == ("spatial",)
    x = torch.randn(2, 16, 5, 5, dtype=D)
    mlp = lambda t: cb.mlp(t[:, :, None, None])  # noqa: E731
    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    assert torch.allclose(cb(x), 0.5 * x * mc, atol=1e-12)


def test_gates_learn():
    for gate in (SE(16, reduction=4), CBAM(16, reduction=4)):
        x = torch.randn(2, 16, 4, 4)
        gate(x).square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())


def test_bad_args():
    with pytest.raises(ValueError, match="reduction=0"):
        SE(16, reduction=0)
    with pytest.raises(ValueError, match="spatial_kernel=4"):
        CBAM(16, spatial_kernel=4)
