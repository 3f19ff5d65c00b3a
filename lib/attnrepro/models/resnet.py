"""``build_model``: ResNet backbones with an attention kind placed by stage.

Backbones:
    - ``resnet18/34/50/101/152``: torchvision's ResNets (He et al. 2016, torchvision's "v1.5" with the stride on the
      bottleneck's 3x3 conv), built with ``weights=None`` and modified in place. With ``attention=None`` the model
      *is* torchvision's (same modules, same parameter count); ``in_chans != 3`` replaces only the stem conv.
      This is how the ExpAtt paper builds its networks ("built on the torchvision ResNets").
    - ``resnet20/32/56/110``: the CIFAR ResNets of He et al. 2016, option-A shortcuts (:mod:`.cifar`).
    - ``wrn28_10``: WRN-28-10 (Zagoruyko & Komodakis 2016), the AA paper's CIFAR-100 backbone (:mod:`.cifar`).

Where the attention goes is :mod:`.placement`'s job; this module checks the arguments, builds the backbone and
asks :func:`~.placement.place_attention` to modify it.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torchvision

from ..modules import ExpAttConv2d
from .. import registry
from ..modules.factory import attention_kwargs, check_kind
from .cifar import CifarResNet, WideResNet
from .init import init_backbone
from .placement import (CIFAR_NAMES, IMAGENET_NAMES, MODEL_NAMES, check_stages, num_stages, part_stages,
                        place_attention)

__all__ = ["MODEL_NAMES", "build_model", "model_from_config", "expatt_layers", "radii", "resolve_stages",
           "default_input_size"]


def default_input_size(name: str) -> int:
    """224 for the ImageNet ResNets, 32 for the CIFAR nets."""
    num_stages(name)  # validates the name
    return 224 if name in IMAGENET_NAMES else 32


def _normalise_attention(attention: str | None) -> str | None:
    if attention is None or attention == "none":
        return None
    check_kind(attention, none_ok=True)
    return attention


def resolve_stages(name: str, attention: str | None, stages: Sequence[int] | None = None) -> list[int]:
    """The stages ``attention`` goes into on ``name``: ``stages`` checked, or the paper's default; [] when plain.
    For a combined kind, the stages that get any of its parts (``model.attnrepro_spec["part_stages"]`` has them
    per part, see :func:`~.placement.part_stages`)."""
    kind = _normalise_attention(attention)
    if stages is not None:
        stages = check_stages(name, stages)
    if kind is None:
        return []
    return sorted(set().union(*part_stages(name, kind, stages).values()))


def _check_kwargs(kind: str | None, kwargs: dict[str, Any]) -> None:
    if not kwargs:
        return
    if kind is None:
        raise ValueError(f"attention keyword arguments {sorted(kwargs)} were given without an attention kind; "
                         f"choose attention from: {', '.join(registry.model_kinds())}")
    accepted = registry.accepted(kind)
    for k in kwargs:
        if k not in accepted:
            raise ValueError(f"attention {kind!r} does not accept keyword {k!r}; "
                             f"accepted: {', '.join(accepted) or '(none)'}")


def _side(input_size: Any, name: str) -> int:
    if input_size is None:
        return default_input_size(name)
    if isinstance(input_size, (tuple, list)):
        sides = list(input_size)
        if len(sides) != 2:
            raise ValueError(f"input_size={input_size!r} must be an int or an (H, W) pair")
        return max(_side(s, name) for s in sides)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size={input_size!r} must be a positive int (the image side) or an (H, W) pair")
    return input_size


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive int")
    return value


def _backbone(name: str, num_classes: int, in_chans: int, width: float) -> nn.Module:
    if name in IMAGENET_NAMES:
        if width != 1.0:
            raise ValueError(f"width={width!r} is not supported for {name} (torchvision's widths); width applies "
                             f"to: {', '.join(CIFAR_NAMES)}")
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_chans != 3:
            old = model.conv1
            model.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding,
                                    bias=False)
            init_backbone(model.conv1)
        return model
    if name == "wrn28_10":
        return WideResNet(28, widen=10.0 * width, num_classes=num_classes, in_chans=in_chans)
    return CifarResNet(int(name[len("resnet"):]), num_classes=num_classes, in_chans=in_chans, width=width)


def build_model(name: str, num_classes: int, in_chans: int = 3, attention: str | None = None,
                stages: Sequence[int] | None = None, *, input_size: int | tuple[int, int] | None = None,
                width: float = 1.0, **attention_kwargs: Any) -> nn.Module:
    """Build backbone ``name`` with ``attention`` in ``stages``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_classes: classifier outputs.
        in_chans: image channels (1 for Fashion-MNIST); for torchvision nets only the stem conv changes.
        attention: None or "none" (plain), or a kind of :data:`attnrepro.modules.factory.MODEL_KINDS`: a layer
            kind (``"aa"``) or a conv kind and a gate together (``"aw+se"``, each part where it would sit alone).
        stages: 1-based stages that get the attention (every part of a combined kind); None: each part's paper
            default (see :mod:`.placement`). Checked but unused when the model is plain.
        input_size: the largest image side the model will see (int or (H, W)); sizes the AA layers' relative
            tables. Default 224 for the ImageNet ResNets, 32 for the CIFAR nets. Smaller inputs always work.
        width: channel multiplier for the CIFAR ResNets (every conv) and the WRN (widen factor ``10 * width``);
            must be 1.0 for the torchvision nets.
        **attention_kwargs: the layer's options, named as run-config keys
            (:data:`attnrepro.modules.factory.ACCEPTED_KWARGS`), e.g. ``heads=4, radius_init=1.0``; with a
            combined kind each part gets those it accepts.

    Every layer the attention adds starts with the backbone's initialisation rule (:mod:`.init`).
    The model carries ``model.attnrepro_spec``: a dict with name, attention, stages (any part), part_stages
    (each part's), input_size, width and attention_kwargs.
    Every bad argument raises ``ValueError`` naming the value and the valid choices.
    """
    num_stages(name)  # unknown name -> ValueError with the choices
    num_classes = _positive_int("num_classes", num_classes)
    in_chans = _positive_int("in_chans", in_chans)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width={width!r} must be a number > 0")
    kind = _normalise_attention(attention)
    chosen = resolve_stages(name, kind, stages)
    per_part = {} if kind is None else part_stages(name, kind, stages)
    _check_kwargs(kind, attention_kwargs)
    side = _side(input_size, name)
    model = _backbone(name, num_classes, in_chans, float(width))
    if kind is not None:
        place_attention(model, name, kind, per_part, side, attention_kwargs)
    model.attnrepro_spec = {"name": name, "attention": kind or "none", "stages": chosen, "part_stages": per_part,
                            "input_size": side, "width": float(width), "attention_kwargs": dict(attention_kwargs)}
    return model


def model_from_config(cfg: Any, num_classes: int, in_chans: int, input_size: int | tuple[int, int] | None = None
                      ) -> nn.Module:
    """``build_model`` from a :class:`~attnrepro.config.RunConfig` (model, attention, stages, width and the
    attention's own keys, picked by :func:`attnrepro.modules.factory.attention_kwargs`)."""
    kind = _normalise_attention(cfg.attention)
    kwargs: dict[str, Any] = {}
    if kind is not None:
        kwargs = dict(attention_kwargs(kind, cfg))
    return build_model(cfg.model, num_classes, in_chans, kind, cfg.stages, input_size=input_size,
                       width=cfg.width, **kwargs)


def expatt_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``ExpAttConv2d`` in ``model`` by its module name (for radius logging); {} when there is none."""
    return {n: m for n, m in model.named_modules() if isinstance(m, ExpAttConv2d)}


def radii(model: nn.Module) -> dict[str, list[float]]:
    """The current radius of every ExpAtt layer, in feature-map pixels: name -> [r] (or one per head)."""
    out = {}
    for n, m in expatt_layers(model).items():
        with torch.no_grad():
            out[n] = [float(r) for r in torch.as_tensor(m.radius).detach().flatten().cpu()]
    return out
