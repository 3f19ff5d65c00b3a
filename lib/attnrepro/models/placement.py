"""Where an attention module goes in a ResNet: which stages, which layer of a block, and at what feature size.

The rules follow the papers where they say something and are this suite's choice where they do not
(see ``papers.md`` in the project's shared notes and the README):

- Stages are numbered from 1 (``layer1`` of a torchvision ResNet is stage 1). The stem and the shortcuts are never
  touched.
- Conv-replacing kinds (``expatt``, ``aa``, ``aw``, and any conv kind of :mod:`attnrepro.registry`) take the
  place of the block's 3x3 conv: ``conv2`` of a bottleneck, ``conv1`` of a basic block (AA's WRN choice, "the
  first conv of every residual block"), ``conv1`` of a pre-activation wide block. The new layer keeps the replaced
  conv's channels and stride.
  Default stages: the last three of an ImageNet ResNet (AA's ImageNet setting, ``[2, 3, 4]``); every stage of the
  CIFAR ResNets and the WRN (AA's CIFAR setting).
- Gates (``se``, ``cbam``, and any registered gate) go on the residual branch, before the addition: after the
  block's last BN in a post-activation block (torchvision's ``bn3``/``bn2`` become ``Sequential(bn, gate)``; the
  CIFAR blocks have a ``gate`` slot), after the second conv of a pre-activation wide block. Default: every stage
  (SE and CBAM papers).
- Combined kinds (``aw+se``, any conv kind + gate kind, see :func:`attnrepro.registry.combined_kinds`): each
  part sits where it would sit alone, in its own default stages (``aw+se`` on an ImageNet ResNet: AW in
  ``[2, 3, 4]``, SE in every stage), or both in ``stages`` when it is given. Each part gets the keyword arguments
  it accepts (``reduction`` goes to both AW and the gate).
- Initialisation: every layer placed here gets the backbone's rule (:func:`.init.init_backbone`: He-normal fan_out
  conv weights, zero biases), the same rule the backbone's own convs got, unless the layer documents a deliberate
  exception (``init_exempt``).
- AA's relative tables need the largest feature side the layer attends over (``max_size``; any conv kind that
  accepts ``max_size`` gets it). It is computed from
  ``input_size`` (224 for ImageNet nets, 32 for CIFAR nets by default): the block's input side, halved (rounded
  up) for the strided first block of a stage, because the layer attends over its average-pooled input there, at
  the conv's output size. The layers accept any smaller input, so a model built for 32x32 also runs on 16x16.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .. import registry
from ..modules.explicit import conv_out_size
from ..modules.factory import create_conv, create_gate, route_kwargs, split_kind
from .cifar import CifarBasicBlock, WideBasicBlock
from .init import init_backbone

__all__ = ["IMAGENET_NAMES", "CIFAR_NAMES", "MODEL_NAMES", "num_stages", "default_stages", "part_stages",
           "check_stages", "stage_sides", "attention_side", "block_slots", "iter_blocks", "place_attention"]

IMAGENET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR_NAMES = ("resnet20", "resnet32", "resnet56", "resnet110", "wrn28_10")
MODEL_NAMES = IMAGENET_NAMES + CIFAR_NAMES


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def num_stages(name: str) -> int:
    """4 for the ImageNet ResNets, 3 for the CIFAR ResNets and the WRN."""
    _check_name(name)
    return 4 if name in IMAGENET_NAMES else 3


def default_stages(name: str, kind: str) -> list[int]:
    """The paper's stages for attention ``kind`` on model ``name`` (see the module docstring); for a combined
    kind, the stages that get any of its parts (:func:`part_stages` gives them per part)."""
    n = num_stages(name)
    parts = split_kind(kind)
    if name in IMAGENET_NAMES and all(p in registry.conv_kinds() for p in parts):
        return [2, 3, 4]
    return list(range(1, n + 1))


def part_stages(name: str, kind: str, stages: Iterable[int] | None = None) -> dict[str, list[int]]:
    """Each layer kind of ``kind`` -> its stages: ``stages`` (checked) for every part when given, else each part's
    own default. ``part_stages("resnet50", "aw+se") == {"aw": [2, 3, 4], "se": [1, 2, 3, 4]}``."""
    chosen = None if stages is None else check_stages(name, stages)
    return {p: list(chosen) if chosen is not None else default_stages(name, p) for p in split_kind(kind)}


def check_stages(name: str, stages: Iterable[int]) -> list[int]:
    """Validate 1-based ``stages`` for model ``name``; returns them sorted and de-duplicated."""
    n = num_stages(name)
    valid = list(range(1, n + 1))
    if isinstance(stages, (str, bytes)) or not hasattr(stages, "__iter__"):
        raise ValueError(f"stages={stages!r} must be a list of stage numbers from {valid}")
    stages = list(stages)
    if not stages:
        raise ValueError(f"stages={stages!r} is empty; give stages from {valid}, or None for the paper's default")
    for s in stages:
        if isinstance(s, bool) or not isinstance(s, int) or s not in valid:
            raise ValueError(f"stage {s!r} does not exist in {name}; valid stages are {valid}")
    return sorted(set(stages))


def _down(side: int) -> int:
    # output side of a stride-2 conv/pool with "same" padding (3x3 pad 1, 1x1 pad 0, 7x7 pad 3): ceil(side / 2)
    return conv_out_size(side, 3, 2)


def stage_sides(name: str, input_size: int) -> list[tuple[int, int]]:
    """For each stage, ``(side of its input, side of its output)`` for a square ``input_size`` image."""
    _check_name(name)
    if name in IMAGENET_NAMES:
        side, strides = _down(_down(input_size)), (1, 2, 2, 2)  # stem conv stride 2, max pool stride 2
    else:
        side, strides = input_size, (1, 2, 2)
    out = []
    for s in strides:
        new = _down(side) if s == 2 else side
        out.append((side, new))
        side = new
    return out


def attention_side(block_input_side: int, stride: int) -> int:
    """Side of the map a conv-replacing layer attends over: its output side, ``ceil(input / stride)``
    (a 3x3 conv with padding 1; the layers average-pool their input to that size when strided)."""
    return conv_out_size(block_input_side, 3, stride)


def _stages_of(model: nn.Module) -> list[nn.Sequential]:
    if hasattr(model, "stages"):
        return list(model.stages())
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def block_slots(block: nn.Module) -> tuple[str, str]:
    """``(name of the conv that conv kinds replace, where a gate goes)`` for a residual block."""
    if isinstance(block, Bottleneck):
        return "conv2", "bn3"
    if isinstance(block, BasicBlock):
        return "conv1", "bn2"
    if isinstance(block, (CifarBasicBlock, WideBasicBlock)):
        return "conv1", "gate"
    raise TypeError(f"no placement rule for block type {type(block).__name__}")


def iter_blocks(model: nn.Module, input_size: int, name: str) -> Iterator[tuple[int, nn.Module, int]]:
    """Yield ``(stage, block, side of the block's input)`` for every residual block."""
    sides = stage_sides(name, input_size)
    for s, layer in enumerate(_stages_of(model), start=1):
        s_in, s_out = sides[s - 1]
        for j, block in enumerate(layer):
            yield s, block, (s_in if j == 0 else s_out)


def place_attention(model: nn.Module, name: str, kind: str, stages: Sequence[int] | Mapping[str, Sequence[int]],
                    input_size: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """Put attention ``kind`` into every block of ``stages`` of ``model`` (in place) and return the model.

    ``kind`` is a layer kind or a combined kind (``"aw+se"``); ``stages`` a list for every part, or a mapping
    part -> stages (:func:`part_stages`). ``kwargs`` are routed to the parts that accept them
    (:func:`~attnrepro.modules.factory.route_kwargs`) and go to the layer factory; for ``aa`` a ``max_size`` in
    ``kwargs`` overrides the per-block side. Every layer created gets :func:`.init.init_backbone`.
    """
    routed = route_kwargs(kind, kwargs)
    per_part = stages if isinstance(stages, Mapping) else {p: list(stages) for p in routed}
    for part, part_kwargs in routed.items():
        for stage, block, side in iter_blocks(model, input_size, name):
            if stage in per_part[part]:
                _place_one(block, part, side, part_kwargs)
    return model


def _place_one(block: nn.Module, kind: str, side: int, kwargs: Mapping[str, Any]) -> None:
    conv_name, gate_name = block_slots(block)
    if registry.get(kind).kind == "conv":
        conv: nn.Conv2d = getattr(block, conv_name)
        if type(conv) is not nn.Conv2d:
            raise ValueError(f"the block's {conv_name} is already {type(conv).__name__}; a model takes one conv kind")
        kw = dict(kwargs)
        if "max_size" in registry.accepted(kind):
            # the attention runs at the conv's output resolution (average-pooled input when strided): AA's tables
            kw.setdefault("max_size", attention_side(side, conv.stride[0]))
        layer = create_conv(kind, conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size[0],
                            stride=conv.stride[0], **kw)
        setattr(block, conv_name, init_backbone(layer))
    elif gate_name == "gate":
        block.gate = init_backbone(create_gate(kind, block.out_channels, **kwargs))
    else:
        bn: nn.BatchNorm2d = getattr(block, gate_name)
        gate = init_backbone(create_gate(kind, bn.num_features, **kwargs))
        setattr(block, gate_name, nn.Sequential(bn, gate))
