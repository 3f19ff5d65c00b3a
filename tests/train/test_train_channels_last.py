"""channels_last is a memory format, not a model: a training step in it gives the default format's numbers (float32,
CPU, to float tolerance: outputs, loss and the gradients) for every attention kind, at the sizes the CPU presets
train. (Over many steps the runs then drift apart by rounding, as any two kernels' do.)

CBAM takes maxima (over channels and over positions): where two values lie within rounding of each other the two
formats can pick different ones, and the gradient then flows through another element; those kinds get a looser
bound on the gradients (1% of their norm, against 1e-4 for the others). A bug in a layout would be far larger."""
import pytest
import torch
import torch.nn as nn

from attnrepro.config import RunConfig
from attnrepro.models import model_from_config

KINDS = ["none", "expatt", "aa", "aw", "se", "cbam", "aw+se", "aw+cbam"]


@pytest.mark.parametrize("attention", KINDS)
def test_a_channels_last_step_gives_the_default_formats_numbers(attention, one_thread):
    cfg = RunConfig.from_dict({"model": "resnet20", "width": 0.5, "heads": 2, "attention": attention})
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    out = {}
    for cl in (False, True):
        torch.manual_seed(1)
        m = model_from_config(cfg, num_classes=10, in_chans=1, input_size=28)
        xb = x
        if cl:
            m = m.to(memory_format=torch.channels_last)
            xb = x.contiguous(memory_format=torch.channels_last)
        logits = m(xb)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        out[cl] = (logits.detach(), loss.item(), {n: p.grad.detach().clone() for n, p in m.named_parameters()})
    (la, sa, ga), (lb, sb, gb) = out[False], out[True]
    assert torch.allclose(la, lb, rtol=1e-4, atol=1e-5) and sa == pytest.approx(sb, rel=1e-5)
    assert ga.keys() == gb.keys()
    a = torch.cat([ga[n].flatten() for n in ga])
    b = torch.cat([gb[n].flatten() for n in ga])
    bound = 1e-2 if "cbam" in attention else 1e-4
    assert (a - b).norm() <= bound * a.norm(), ((a - b).norm() / a.norm()).item()
