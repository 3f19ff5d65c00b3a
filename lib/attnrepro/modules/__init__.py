"""Attention layers of the suite: ExpAtt, AA, AW-convolution, SE and CBAM, and a factory that builds them (and any kind
registered with ``attnrepro.register``) by name.

The math lives in :mod:`attnrepro.modules.functional` (pure functions with plain references); the layers are thin
holders of parameters. Each layer's module docstring cites its paper and marks this suite's reconstruction.
"""
from . import functional
from .augmented import AAConv2d
from .aw import AWConv2d
from .explicit import ExpAttConv2d
from . import factory as _factory
from .factory import (ACCEPTED_KWARGS, attention_kwargs, check_kind, create_attention, create_conv, create_gate,
                      route_kwargs, split_kind)
from .functional import KERNELS, attention_channels
from .gates import CBAM, SE, SqueezeExcite

__all__ = [
    "functional", "KERNELS", "attention_channels",
    "ExpAttConv2d", "AAConv2d", "AWConv2d", "SqueezeExcite", "SE", "CBAM",
    "CONV_KINDS", "GATE_KINDS", "ATTENTION_KINDS", "COMBINED_KINDS", "MODEL_KINDS", "ACCEPTED_KWARGS",
    "create_conv", "create_gate", "create_attention", "attention_kwargs", "split_kind", "check_kind", "route_kwargs",
]


def __getattr__(name: str):
    # CONV_KINDS, GATE_KINDS, ATTENTION_KINDS, COMBINED_KINDS, MODEL_KINDS: read from the registry when looked up
    if name in _factory._SNAPSHOTS:
        return _factory._SNAPSHOTS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
