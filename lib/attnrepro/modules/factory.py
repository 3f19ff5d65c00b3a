"""Build any attention layer of the suite by name, with keyword names taken from the run configuration.

Conv-replacing kinds (``expatt``, ``aa``, ``aw``) stand in for a ``kxk`` convolution; gates (``se``, ``cbam``) sit
after a block's last batch norm. ``ACCEPTED_KWARGS`` lists, per kind, the :class:`~attnrepro.config.RunConfig` keys
the kind takes (``aw_maps`` is passed to :class:`AWConv2d` as ``maps``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from .augmented import AAConv2d
from .aw import AWConv2d
from .explicit import ExpAttConv2d
from .gates import CBAM, SqueezeExcite

__all__ = ["CONV_KINDS", "GATE_KINDS", "ATTENTION_KINDS", "ACCEPTED_KWARGS", "create_conv", "create_gate",
           "create_attention", "attention_kwargs"]

CONV_KINDS = ("expatt", "aa", "aw")
GATE_KINDS = ("se", "cbam")
ATTENTION_KINDS = CONV_KINDS + GATE_KINDS

ACCEPTED_KWARGS: dict[str, tuple[str, ...]] = {
    "expatt": ("heads", "upsilon", "kernel", "radius_init", "learn_radius", "radius_per_head"),
    "aa": ("heads", "kappa", "upsilon", "relative", "max_size"),
    "aw": ("reduction", "aw_maps"),
    "se": ("reduction",),
    "cbam": ("reduction",),
}

_CLASSES = {"expatt": ExpAttConv2d, "aa": AAConv2d, "aw": AWConv2d, "se": SqueezeExcite, "cbam": CBAM}
_RENAME = {"aw_maps": "maps"}


def _check_kind(kind: str, valid: tuple[str, ...], what: str) -> None:
    if kind not in valid:
        raise ValueError(f"unknown {what} kind {kind!r}; valid kinds: {', '.join(valid)}")


def _layer_kwargs(kind: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    accepted = ACCEPTED_KWARGS[kind]
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise ValueError(f"{kind!r} does not accept {', '.join(map(repr, bad))}; it accepts: {', '.join(accepted)}")
    return {_RENAME.get(k, k): v for k, v in kwargs.items()}


def create_conv(kind: str, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                **kwargs: Any) -> nn.Module:
    """A conv-replacing attention layer (``expatt``, ``aa``, ``aw``); ``kwargs`` named as in ``ACCEPTED_KWARGS``."""
    _check_kind(kind, CONV_KINDS, "conv attention")
    return _CLASSES[kind](in_channels, out_channels, kernel_size, stride, **_layer_kwargs(kind, kwargs))


def create_gate(kind: str, channels: int, **kwargs: Any) -> nn.Module:
    """A gate (``se``, ``cbam``); ``kwargs`` named as in ``ACCEPTED_KWARGS``."""
    _check_kind(kind, GATE_KINDS, "gate")
    return _CLASSES[kind](channels, **_layer_kwargs(kind, kwargs))


def create_attention(kind: str, channels: int, out_channels: int | None = None, **kwargs: Any) -> nn.Module:
    """Either kind: conv kinds get ``(channels, out_channels or channels)`` and may take ``kernel_size`` and
    ``stride`` in ``kwargs``; gates get ``channels`` (``out_channels`` must then be None or equal)."""
    _check_kind(kind, ATTENTION_KINDS, "attention")
    if kind in CONV_KINDS:
        geo = {k: kwargs.pop(k) for k in ("kernel_size", "stride") if k in kwargs}
        return create_conv(kind, channels, channels if out_channels is None else out_channels, **geo, **kwargs)
    if out_channels is not None and out_channels != channels:
        raise ValueError(f"gate {kind!r} keeps its channels; out_channels={out_channels} != channels={channels}")
    return create_gate(kind, channels, **kwargs)


def attention_kwargs(kind: str | None, cfg_or_dict: Any) -> dict[str, Any]:
    """The keyword arguments of ``kind`` found in a RunConfig (or a mapping): only keys in ``ACCEPTED_KWARGS``.

    ``kind`` None or ``"none"`` gives ``{}``. Keys absent from a mapping are left out (the layer default applies).
    """
    if kind is None or kind == "none":
        return {}
    _check_kind(kind, ATTENTION_KINDS, "attention")
    if isinstance(cfg_or_dict, Mapping):
        src = cfg_or_dict
    elif hasattr(cfg_or_dict, "to_dict"):
        src = cfg_or_dict.to_dict()
    else:
        src = vars(cfg_or_dict)
    return {k: src[k] for k in ACCEPTED_KWARGS[kind] if k in src}
