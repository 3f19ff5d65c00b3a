"""Every layer under CPU autocast (bf16): the output keeps the autocast dtype, and no layer builds a large fp32
tensor (AW's per-sample kernels, ExpAtt's output) that the next op would cast down anyway."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnrepro.modules import AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite
from attnrepro.modules.functional import KERNELS

B, C, F_OUT, S = 8, 16, 32, 8


class Float32Tensors(TorchDispatchMode):
    """Records the sizes of the float32 tensors every op returns."""

    def __init__(self):
        super().__init__()
        self.sizes: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.sizes.append((str(func), t.numel()))
        return out


LAYERS = {
    **{f"expatt-{k}": (lambda k=k: ExpAttConv2d(C, F_OUT, heads=2, upsilon=0.25, kernel=k)) for k in KERNELS},
    "expatt-per-head": lambda: ExpAttConv2d(C, F_OUT, heads=2, upsilon=0.25, radius_per_head=True),
    "expatt-stride2": lambda: ExpAttConv2d(C, F_OUT, stride=2, heads=2, upsilon=0.25),
    "aa": lambda: AAConv2d(C, F_OUT, heads=2, max_size=S),
    "aw": lambda: AWConv2d(C, F_OUT, maps=4),
    "aw-gather": lambda: AWConv2d(C, F_OUT, maps=5),     # 5 does not divide 32: the index_select path
    "se": lambda: SqueezeExcite(C, reduction=4),
    "cbam": lambda: CBAM(C, reduction=4),
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_output_keeps_the_autocast_dtype(name, train):
    torch.manual_seed(0)
    layer = LAYERS[name]().train(train)
    x = torch.randn(B, C, S, S)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(train):
        out = layer(x)
        # gates multiply their input: fed what a block gives them under autocast (a conv's bf16 output)
        gated = layer(x.bfloat16()) if name in ("se", "cbam") else out
    assert gated.dtype == torch.bfloat16, (name, gated.dtype)
    if train:
        out.float().square().mean().backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())


def float32_sizes(layer, batch: int) -> list[tuple[str, int]]:
    x = torch.randn(batch, C, S, S).bfloat16()     # what a block feeds the layer under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)                            # fills the caches of constants (distance matrices) first
    rec = Float32Tensors()
    with torch.autocast("cpu", dtype=torch.bfloat16), rec:
        out = layer(x)
    assert out.dtype == torch.bfloat16
    return sorted(rec.sizes)


@pytest.mark.parametrize("name", [n for n in LAYERS if n.startswith(("aw", "expatt"))])
def test_no_float32_tensor_grows_with_the_batch(name):
    """Under autocast a layer may make fp32 tensors of its parameters' or its map's size (a weight concat, an
    ExpAtt map, built in fp32 on purpose), never one of the batch's size: AW's (B * C_out, C_in, k, k) kernels
    and ExpAtt's (B, F_out, H, W) output were. So the fp32 tensors of a batch of 1 and of 8 are the same.
    (The input is bf16, as a model gives it: see test_models_keep_the_autocast_dtype.)"""
    torch.manual_seed(1)
    layer = LAYERS[name]()
    one, eight = float32_sizes(layer, 1), float32_sizes(layer, 8)
    assert eight == one, sorted(set(eight) - set(one))[:5]


def test_autocast_outputs_are_close_to_float32():
    """The 16-bit paths compute the same function (loosely: bf16 has 8 bits of mantissa)."""
    torch.manual_seed(2)
    x = torch.randn(B, C, S, S)
    for name, make in LAYERS.items():
        layer = make().eval()
        with torch.no_grad():
            ref = layer(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = layer(x).float()
        err = (low - ref).abs().max() / ref.abs().max()
        assert err < 0.05, (name, float(err))


@pytest.mark.parametrize("kind", ["expatt", "aa", "aw", "se", "cbam", "aw+se"])
def test_models_keep_the_autocast_dtype(kind):
    """In a model under autocast every attention layer gets and gives bf16 (so an fp32 output of one layer does not
    double the memory of the activations after it)."""
    from attnrepro.models import build_model
    kinds = (AAConv2d, AWConv2d, CBAM, ExpAttConv2d, SqueezeExcite)
    model = build_model("resnet20", 10, attention=kind, width=0.5, input_size=16)
    seen = []
    for m in model.modules():
        if isinstance(m, kinds):
            m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 16, 16)).float().mean().backward()
    assert seen and all(d_in == d_out == torch.bfloat16 for _, d_in, d_out in seen), sorted(set(seen))
