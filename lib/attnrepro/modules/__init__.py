"""Attention layers of the suite: ExpAtt, AA, AW-convolution, SE and CBAM, and a factory that builds them by name.

The math lives in :mod:`attnrepro.modules.functional` (pure functions with plain references); the layers are thin
holders of parameters. Each layer's module docstring cites its paper and marks this suite's reconstruction.
"""
from . import functional
from .augmented import AAConv2d
from .aw import AWConv2d
from .explicit import ExpAttConv2d
from .factory import (ACCEPTED_KWARGS, ATTENTION_KINDS, COMBINED_KINDS, CONV_KINDS, GATE_KINDS, MODEL_KINDS,
                      attention_kwargs, check_kind, create_attention, create_conv, create_gate, route_kwargs,
                      split_kind)
from .functional import KERNELS, attention_channels
from .gates import CBAM, SE, SqueezeExcite

__all__ = [
    "functional", "KERNELS", "attention_channels",
    "ExpAttConv2d", "AAConv2d", "AWConv2d", "SqueezeExcite", "SE", "CBAM",
    "CONV_KINDS", "GATE_KINDS", "ATTENTION_KINDS", "COMBINED_KINDS", "MODEL_KINDS", "ACCEPTED_KWARGS",
    "create_conv", "create_gate", "create_attention", "attention_kwargs", "split_kind", "check_kind", "route_kwargs",
]
