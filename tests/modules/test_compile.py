"""No host synchronisation in any layer's forward: each compiles as one graph (``fullgraph=True`` raises at a graph
break, e.g. a ``.tolist()`` of the radius), a change of the radius recompiles nothing, and on CUDA a forward makes
no device sync."""
import itertools
import math

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from attnrepro.modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite
from attnrepro.modules.functional import KERNELS

EXPATT = list(itertools.product(KERNELS, [True, False]))


def layers():
    out = {f"expatt-{k}-{'learn' if learn else 'frozen'}": (ExpAttConv2d(8, 32, heads=2, kernel=k, learn_radius=learn), 8)
           for k, learn in EXPATT}
    out["expatt-per-head"] = (ExpAttConv2d(8, 40, heads=4, upsilon=0.4, kernel="cauchy", radius_per_head=True), 8)
    out.update({"aa": (AAConv2d(8, 32, heads=2, max_size=8), 8), "aw": (AWConv2d(8, 32), 8),
                "se": (SqueezeExcite(32, 4), 32), "cbam": (CBAM(32, 4), 32)})
    return out


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(layers()))
def test_every_layer_compiles_as_one_graph(name, train):
    torch._dynamo.reset()
    layer, c_in = layers()[name]
    layer.train(train)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    x = torch.randn(2, c_in, 6, 6)
    with torch.set_grad_enabled(train):
        out = compiled(x)
        assert torch.allclose(out, layer(x), atol=1e-5)
        if train:
            out.square().mean().backward()


@pytest.mark.parametrize("kernel", ["laplacian", "cauchy"])
def test_a_new_radius_recompiles_nothing(kernel):
    """Eval with a learned radius, and a frozen one: the radius is a tensor input of the graph, not a constant."""
    torch._dynamo.reset()
    for learn in (True, False):
        layer = ExpAttConv2d(8, 32, heads=2, kernel=kernel, learn_radius=learn).eval()
        counter = CompileCounter()
        compiled = torch.compile(layer, backend=counter)
        x = torch.randn(2, 8, 6, 6)
        with torch.no_grad():
            for r in (2.0, 0.7, 5.0):
                layer.log_radius.fill_(math.log(r))
                assert torch.allclose(compiled(x), layer(x), atol=1e-5)
        assert counter.frame_count == 1, (learn, counter.frame_count)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(layers()))
def test_no_device_sync_in_a_cuda_forward(name):
    layer, c_in = layers()[name]
    layer = layer.cuda().eval()
    x = torch.randn(2, c_in, 6, 6, device="cuda")
    with torch.no_grad():
        layer(x)                                   # first call: caches of constants, cuBLAS handles
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            layer(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
