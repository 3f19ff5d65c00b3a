"""The backbones' initialisation rule, in one function for every backbone and every layer that placement adds.

The rule is torchvision's ResNet rule (He et al., "Delving Deep into Rectifiers", ICCV 2015, as torchvision's
``resnet.py`` applies it): every convolution weight ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, i.e.
``N(0, 2 / (C_out k^2))``; batch and group norms weight 1, bias 0. This suite adds: convolution biases 0 (the
backbones' convs have none; the attention layers' 1x1 convs do, and the CBAM authors' code zeroes every bias too).

Why one function: a model is built backbone first, then :mod:`.placement` puts attention into it. A layer created
after the backbone's initialisation would otherwise keep PyTorch's default (``kaiming_uniform_(a=sqrt(5))``, std
``1 / sqrt(3 fan_in)``): in ResNet-50's ``layer3[1].conv2`` the conv part of an attention layer would start at std
0.012 against the plain net's 0.0295 (0.034 against 0.083 in ResNet-20), so "attention vs plain" would also compare
two initialisations. The CIFAR ResNets and the WRN (:mod:`.cifar`) call this function on themselves; torchvision's
ResNets already apply the same rule in their constructor (left as is, so a plain model *is* torchvision's);
:func:`~.placement.place_attention` calls it on every layer it creates, and ``build_model`` on a replaced stem.

Deliberate exceptions: a module lists the submodules that keep their own initialisation in a class attribute
``init_exempt`` (names of attributes), and its docstring says why (:class:`~attnrepro.modules.CBAM`'s spatial
gate). Parameters that are not convolution weights (AA's relative tables, ExpAtt's log-radius) are never touched;
their modules document their rule.
"""
from __future__ import annotations

import torch.nn as nn

from ..modules.aw import AWConv2d

__all__ = ["init_backbone", "CONV_TYPES"]

#: modules whose ``weight`` is a convolution kernel ``(C_out, C_in, k, k)``: they get the convolution rule
CONV_TYPES = (nn.Conv2d, AWConv2d)


def _exempt(module: nn.Module) -> set[int]:
    """ids of the modules (and their children) that some module declares in ``init_exempt``."""
    out: set[int] = set()
    for m in module.modules():
        for name in getattr(m, "init_exempt", ()):
            out.update(id(x) for x in getattr(m, name).modules())
    return out


def init_backbone(module: nn.Module) -> nn.Module:
    """Apply the backbone rule to every convolution and norm in ``module`` (in place, in ``modules()`` order, so
    the same seed gives the same weights) and return ``module``. Linear layers are left alone."""
    skip = _exempt(module)
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, CONV_TYPES):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
