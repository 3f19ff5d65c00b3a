"""Build any attention layer of the suite by name, with keyword names taken from the run configuration.

Conv-replacing kinds (``expatt``, ``aa``, ``aw``) stand in for a ``kxk`` convolution; gates (``se``, ``cbam``) sit
after a block's last batch norm. ``ACCEPTED_KWARGS`` lists, per kind, the :class:`~attnrepro.config.RunConfig` keys
the kind takes (``aw_maps`` is passed to :class:`AWConv2d` as ``maps``).

Combined kinds (:data:`COMBINED_KINDS`, e.g. ``aw+se``) name one conv kind and one gate kind, conv first: a model
gets both, each where it would sit alone (the AW paper's second claim is AW-convolution on top of SE- and
CBAM-style models). They are model-level names: :func:`create_attention` builds single layers only;
:func:`split_kind` gives the parts and :func:`route_kwargs` each part's keyword arguments (a key goes to every part
that accepts it, e.g. ``reduction`` to both ``aw`` and ``se``). Two conv kinds, two gates, a repeated kind or the
gate first are rejected with the valid names.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from .augmented import AAConv2d
from .aw import AWConv2d
from .explicit import ExpAttConv2d
from .gates import CBAM, SqueezeExcite

__all__ = ["CONV_KINDS", "GATE_KINDS", "ATTENTION_KINDS", "COMBINED_KINDS", "MODEL_KINDS", "ACCEPTED_KWARGS",
           "create_conv", "create_gate", "create_attention", "attention_kwargs", "split_kind", "check_kind",
           "route_kwargs"]

CONV_KINDS = ("expatt", "aa", "aw")
GATE_KINDS = ("se", "cbam")
#: kinds of a single layer (what :func:`create_attention` builds)
ATTENTION_KINDS = CONV_KINDS + GATE_KINDS
#: a conv kind and a gate kind in one model, ``"conv+gate"``
COMBINED_KINDS = tuple(f"{c}+{g}" for c in CONV_KINDS for g in GATE_KINDS)
#: every kind a model can have (``attnrepro.models.build_model``, the run config's ``attention``), "none" aside
MODEL_KINDS = ATTENTION_KINDS + COMBINED_KINDS

ACCEPTED_KWARGS: dict[str, tuple[str, ...]] = {
    "expatt": ("heads", "upsilon", "kernel", "radius_init", "learn_radius", "radius_per_head"),
    "aa": ("heads", "kappa", "upsilon", "min_key_dims", "relative", "max_size"),
    "aw": ("reduction", "aw_maps"),
    "se": ("reduction",),
    "cbam": ("reduction",),
}
# a combined kind accepts what any of its parts accepts
ACCEPTED_KWARGS.update({
    combo: tuple(dict.fromkeys(k for part in combo.split("+") for k in ACCEPTED_KWARGS[part]))
    for combo in COMBINED_KINDS})

_CLASSES = {"expatt": ExpAttConv2d, "aa": AAConv2d, "aw": AWConv2d, "se": SqueezeExcite, "cbam": CBAM}
_RENAME = {"aw_maps": "maps"}


def _check_kind(kind: str, valid: tuple[str, ...], what: str) -> None:
    if kind not in valid:
        hint = ""
        if isinstance(kind, str) and "+" in kind and valid == ATTENTION_KINDS:
            hint = " (a combination such as 'aw+se' is a model's kind: build it with attnrepro.models.build_model)"
        raise ValueError(f"unknown {what} kind {kind!r}; valid kinds: {', '.join(valid)}{hint}")


def split_kind(kind: str) -> tuple[str, ...]:
    """The layer kinds of a model kind: ``"aw+se" -> ("aw", "se")``, ``"aa" -> ("aa",)``.

    Raises:
        ValueError: ``kind`` is not in :data:`MODEL_KINDS`; the message names the valid kinds, and what is wrong
            with a combination (two conv kinds, two gates, a repeated kind, the gate first).
    """
    check_kind(kind)
    return tuple(kind.split("+"))


def check_kind(kind: str, *, none_ok: bool = False) -> None:
    """Raise ``ValueError`` unless ``kind`` is in :data:`MODEL_KINDS` (see :func:`split_kind`); ``none_ok``: the
    caller also takes ``"none"``, and the message lists it."""
    if kind in MODEL_KINDS:
        return
    valid = ", ".join((("none",) if none_ok else ()) + MODEL_KINDS)
    if isinstance(kind, str) and "+" in kind:
        parts = kind.split("+")
        why = "a combination is one conv kind (" + ", ".join(CONV_KINDS) + ") and one gate kind (" + \
              ", ".join(GATE_KINDS) + "), conv first"
        if len(parts) == 2 and parts[0] in GATE_KINDS and parts[1] in CONV_KINDS:
            why += f"; did you mean '{parts[1]}+{parts[0]}'?"
        raise ValueError(f"unknown attention kind {kind!r}: {why}; valid kinds: {valid}")
    raise ValueError(f"unknown attention kind {kind!r}; valid kinds: {valid}")


def route_kwargs(kind: str, kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each part of ``kind`` -> the entries of ``kwargs`` it accepts (``ACCEPTED_KWARGS``); a key accepted by
    several parts goes to each. A key that no part accepts raises ``ValueError`` naming the accepted keys."""
    parts = split_kind(kind)
    accepted = ACCEPTED_KWARGS[kind]
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise ValueError(f"attention {kind!r} does not accept {', '.join(map(repr, bad))}; "
                         f"it accepts: {', '.join(accepted) or '(none)'}")
    return {p: {k: v for k, v in kwargs.items() if k in ACCEPTED_KWARGS[p]} for p in parts}


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

    ``kind`` None or ``"none"`` gives ``{}``; a combined kind gets the keys of all its parts (:func:`route_kwargs`
    splits them). Keys absent from a mapping are left out (the layer default applies).
    """
    if kind is None or kind == "none":
        return {}
    check_kind(kind)
    if isinstance(cfg_or_dict, Mapping):
        src = cfg_or_dict
    elif hasattr(cfg_or_dict, "to_dict"):
        src = cfg_or_dict.to_dict()
    else:
        src = vars(cfg_or_dict)
    return {k: src[k] for k in ACCEPTED_KWARGS[kind] if k in src}
