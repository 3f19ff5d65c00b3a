"""Build any attention layer of the suite by name, with keyword names taken from the run configuration.

The kinds are those of the registry (:mod:`attnrepro.registry`): the suite's five and any registered with
``attnrepro.register``. Conv-replacing kinds (``expatt``, ``aa``, ``aw``) stand in for a ``kxk`` convolution;
gates (``se``, ``cbam``) sit after a block's last batch norm. ``ACCEPTED_KWARGS`` lists, per kind, the
:class:`~attnrepro.config.RunConfig` keys the kind takes (``aw_maps`` is passed to :class:`AWConv2d` as ``maps``).

Combined kinds (:data:`COMBINED_KINDS`, e.g. ``aw+se``) name one conv kind and one gate kind, conv first: a model
gets both, each where it would sit alone (the AW paper's second claim is AW-convolution on top of SE- and
CBAM-style models). They are model-level names: :func:`create_attention` builds single layers only;
:func:`split_kind` gives the parts and :func:`route_kwargs` each part's keyword arguments (a key goes to every part
that accepts it, e.g. ``reduction`` to both ``aw`` and ``se``). Two conv kinds, two gates, a repeated kind or the
gate first are rejected with the valid names.

``ACCEPTED_KWARGS`` is a live, read-only mapping over the registry. The tuples ``CONV_KINDS``, ``GATE_KINDS``,
``ATTENTION_KINDS``, ``COMBINED_KINDS`` and ``MODEL_KINDS`` are read from the registry each time they are looked up
on this module (``factory.CONV_KINDS``); a ``from ... import CONV_KINDS`` keeps the value of that moment, so code in
the package calls the registry's functions instead.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch.nn as nn

from .. import registry

__all__ = ["CONV_KINDS", "GATE_KINDS", "ATTENTION_KINDS", "COMBINED_KINDS", "MODEL_KINDS", "ACCEPTED_KWARGS",
           "create_conv", "create_gate", "create_attention", "attention_kwargs", "split_kind", "check_kind",
           "route_kwargs"]

_SNAPSHOTS = {
    "CONV_KINDS": registry.conv_kinds,            # kinds that stand in for a kxk conv
    "GATE_KINDS": registry.gate_kinds,            # kinds after a block's last batch norm
    "ATTENTION_KINDS": registry.layer_kinds,      # kinds of a single layer (what create_attention builds)
    "COMBINED_KINDS": registry.combined_kinds,    # a conv kind and a gate kind in one model, "conv+gate"
    "MODEL_KINDS": registry.model_kinds,          # every kind a model can have, "none" aside
}


def __getattr__(name: str) -> Any:
    if name in _SNAPSHOTS:
        return _SNAPSHOTS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _AcceptedKwargs(Mapping):
    """Kind -> the run-config keys it takes (:func:`attnrepro.registry.accepted`), for every model kind."""

    def __getitem__(self, kind: str) -> tuple[str, ...]:
        return registry.accepted(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(registry.model_kinds())

    def __len__(self) -> int:
        return len(registry.model_kinds())

    def __repr__(self) -> str:
        return f"ACCEPTED_KWARGS({dict(self)!r})"


ACCEPTED_KWARGS: Mapping[str, tuple[str, ...]] = _AcceptedKwargs()


def _check_kind(kind: str, valid: tuple[str, ...], what: str) -> None:
    if kind not in valid:
        hint = ""
        if isinstance(kind, str) and "+" in kind and valid == registry.layer_kinds():
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
    model_kinds = registry.model_kinds()
    if kind in model_kinds:
        return
    valid = ", ".join((("none",) if none_ok else ()) + model_kinds)
    if isinstance(kind, str) and "+" in kind:
        conv, gates = registry.conv_kinds(), registry.gate_kinds()
        parts = kind.split("+")
        why = "a combination is one conv kind (" + ", ".join(conv) + ") and one gate kind (" + \
              ", ".join(gates) + "), conv first"
        if len(parts) == 2 and parts[0] in gates and parts[1] in conv:
            why += f"; did you mean '{parts[1]}+{parts[0]}'?"
        raise ValueError(f"unknown attention kind {kind!r}: {why}; valid kinds: {valid}")
    raise ValueError(f"unknown attention kind {kind!r}; valid kinds: {valid}")


def route_kwargs(kind: str, kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each part of ``kind`` -> the entries of ``kwargs`` it accepts (``ACCEPTED_KWARGS``); a key accepted by
    several parts goes to each. A key that no part accepts raises ``ValueError`` naming the accepted keys."""
    parts = split_kind(kind)
    accepted = registry.accepted(kind)
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise ValueError(f"attention {kind!r} does not accept {', '.join(map(repr, bad))}; "
                         f"it accepts: {', '.join(accepted) or '(none)'}")
    return {p: {k: v for k, v in kwargs.items() if k in registry.accepted(p)} for p in parts}


def _layer_kwargs(kind: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    accepted = registry.accepted(kind)
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise ValueError(f"{kind!r} does not accept {', '.join(map(repr, bad))}; "
                         f"it accepts: {', '.join(accepted) or '(none)'}")
    return dict(kwargs)


def create_conv(kind: str, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                **kwargs: Any) -> nn.Module:
    """A conv-replacing attention layer (``expatt``, ``aa``, ``aw``, or a registered conv kind); ``kwargs`` named
    as in ``ACCEPTED_KWARGS``."""
    _check_kind(kind, registry.conv_kinds(), "conv attention")
    return registry.get(kind).build(in_channels, out_channels, kernel_size, stride, **_layer_kwargs(kind, kwargs))


def create_gate(kind: str, channels: int, **kwargs: Any) -> nn.Module:
    """A gate (``se``, ``cbam``, or a registered gate kind); ``kwargs`` named as in ``ACCEPTED_KWARGS``."""
    _check_kind(kind, registry.gate_kinds(), "gate")
    return registry.get(kind).build(channels, **_layer_kwargs(kind, kwargs))


def create_attention(kind: str, channels: int, out_channels: int | None = None, **kwargs: Any) -> nn.Module:
    """Either kind: conv kinds get ``(channels, out_channels or channels)`` and may take ``kernel_size`` and
    ``stride`` in ``kwargs``; gates get ``channels`` (``out_channels`` must then be None or equal)."""
    _check_kind(kind, registry.layer_kinds(), "attention")
    if kind in registry.conv_kinds():
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
    return {k: src[k] for k in registry.accepted(kind) if k in src}
