"""Which variants of an ablation a description names: a variant name, or config values every one of which the
variant's config must have (claims.yaml's ``compare``)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from .results import natural_key, reference_variant

__all__ = ["match_variant", "variant_config"]


def variant_config(runs: pd.DataFrame, ablation: str, variant: str) -> dict[str, Any]:
    """The config of a variant's first run (any status), with its varied params on top."""
    sub = runs[(runs["ablation"] == ablation) & (runs["variant"] == variant)]
    if sub.empty:
        return {}
    cfg = dict(sub["config"].iloc[0] or {})
    cfg.update(sub["varied"].iloc[0] or {})
    return cfg


def match_variant(runs: pd.DataFrame, ablation: str, where: str | Mapping[str, Any] | None) -> list[str]:
    """Variants of ``ablation`` that ``where`` names: a variant name, or a dict of config values all of which must
    equal the variant's (lists compared as lists; ``None`` matches a missing key). None: the reference variant."""
    sub = runs[runs["ablation"] == ablation] if len(runs) else runs
    variants = sorted(set(sub["variant"]), key=natural_key) if len(sub) else []
    if where is None:
        ref = reference_variant(runs, ablation) if len(sub) else None
        return [ref] if ref is not None else []
    if isinstance(where, str):
        return [where] if where in variants else []
    out = []
    for v in variants:
        cfg = variant_config(runs, ablation, v)
        if all(_same(cfg.get(k), want) for k, want in where.items()):
            out.append(v)
    return out


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)) or isinstance(have, (list, tuple)):
        return list(have or []) == list(want or []) if have is not None or want is not None else True
    if isinstance(want, (int, float)) and not isinstance(want, bool) and isinstance(have, (int, float)):
        return math.isclose(float(have), float(want))
    return have == want
