"""The papers' claims: loaded from ``claims.yaml`` (beside this module), checked, and judged against the runs
(accuracy claims) or against the papers' own models built here (cost claims).

The status rule is the one written in ``claims.yaml`` (``rule``) and implemented by :func:`judge_claim`:

- accuracy claims: paired delta ``d`` of final top-1 over seeds where both sides finished, 95% t interval [lo, hi].
  *not testable* when the comparison is absent, ``n_pairs < min_seeds``, a compared run has fewer than ``min_epochs``
  epochs or truncated epochs (``max_steps > 0``), or the claim is marked untestable; *inconsistent* when, in the
  paper's own dataset and model, the interval lies below the claimed effect (checked first); *consistent* when the
  interval excludes 0 on the claimed side; *inconsistent* when it excludes 0 on the other side; otherwise *not
  testable* (the interval includes 0).
- cost claims (params, MACs) need no training: they are judged in the paper's own setting, on the models named in
  the claim's ``build`` (built with :func:`attnrepro.models.build_model`, counted with :mod:`attnrepro.flops`,
  whatever the runs hold); *consistent* when the relative difference is within the claim's declared ``tolerance``
  (percentage points) of the claimed one, *inconsistent* otherwise (:func:`judge_cost_claim`).
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from . import results
from .results import natural_key, reference_variant

__all__ = ["load_claims", "check_claim", "judge_claim", "judge_cost_claim", "evaluate_claims", "match_variant",
           "variant_config"]


DEFAULT_COST_CONVENTION = "fvcore-default"   # .counting.DEFAULT_CONVENTION


def load_claims(path: str | Path | None = None) -> dict[str, Any]:
    """``claims.yaml`` (the package's, unless ``path``) as a dict with ``rule``, ``defaults`` and ``claims``; every
    claim is checked (:func:`check_claim`)."""
    import yaml

    text = Path(path).read_text() if path else resources.files("attnrepro.analysis").joinpath("claims.yaml").read_text()
    data = yaml.safe_load(text)
    for c in data["claims"]:
        check_claim(c)
    return data


def check_claim(c: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the claim, the bad value and the valid choices when a claim is malformed: accuracy
    claims need ``compare``; cost claims need ``build`` (the paper's models), a ``metric`` of params or macs, a
    known ``convention``, and, when they give an effect, a ``tolerance`` >= 0 and an effect whose sign is the
    direction's."""
    from .counting import CONVENTIONS, claim_specs

    cid = c.get("id", "?")
    for key in ("id", "paper", "claim", "kind", "metric", "direction"):
        if key not in c:
            raise ValueError(f"claim {cid!r} lacks {key!r}")
    if c["kind"] not in ("accuracy", "cost"):
        raise ValueError(f"claim {cid!r}: kind={c['kind']!r} is not valid; choose one of: accuracy, cost")
    if c["direction"] not in ("greater", "less"):
        raise ValueError(f"claim {cid!r}: direction={c['direction']!r} is not valid; choose one of: greater, less")
    if c["kind"] == "accuracy":
        if "compare" not in c:
            raise ValueError(f"claim {cid!r} lacks 'compare' (an accuracy claim is judged on the runs)")
        return
    if c["metric"] not in ("params", "macs"):
        raise ValueError(f"claim {cid!r}: metric={c['metric']!r} is not valid for a cost claim; "
                         "choose one of: params, macs")
    conv = c.get("convention", DEFAULT_COST_CONVENTION)
    if conv not in CONVENTIONS:
        raise ValueError(f"claim {cid!r}: convention={conv!r} is not valid; choose one of: {', '.join(CONVENTIONS)}")
    claim_specs(c)  # the build section's shape
    effect = c.get("effect")
    if effect is None:
        return
    tol = c.get("tolerance")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"claim {cid!r}: tolerance={tol!r} is not valid; a cost claim with an effect declares a "
                         "tolerance >= 0 in percentage points of the relative difference")
    if (float(effect) < 0) != (c["direction"] == "less") or float(effect) == 0:
        raise ValueError(f"claim {cid!r}: effect={effect!r} does not have the sign of direction={c['direction']!r}; "
                         "a cost effect is signed as claimed (less: negative, greater: positive)")


def _describe_where(where: Any) -> str:
    if where is None:
        return "reference"
    if isinstance(where, Mapping):
        return ", ".join(f"{k}={v}" for k, v in where.items())
    return str(where)


def _in_setting(rows: pd.DataFrame, setting: Mapping[str, Any] | None) -> bool:
    """True when every compared run has the dataset and model the paper used (``setting``; empty: never)."""
    if not setting or rows.empty:
        return False
    return all(rows[k].astype(str).eq(str(v)).all() for k, v in setting.items() if k in rows)


def judge_claim(claim: Mapping[str, Any], runs: pd.DataFrame, defaults: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """Put one claim beside its nearest comparison in ``runs`` and give it a status (see the module docstring).

    Returns:
        dict with ``id, paper, claim, reported, comparison, variant, reference, n_pairs, value, low, high, unit,
        measured, status, why``. ``value`` is the paired mean delta (accuracy, percentage points) or the relative
        difference (cost, percent).
    """
    d = {"min_seeds": 2, "min_epochs": 10, "confidence": 0.95, **dict(defaults or {})}
    if claim["kind"] == "cost":
        return judge_cost_claim(claim)
    cmp_ = claim["compare"]
    ablation = cmp_["ablation"]
    sign = 1.0 if claim["direction"] == "greater" else -1.0
    out = {k: claim.get(k) for k in ("id", "paper", "claim", "reported")}
    out.update(variant=None, reference=None, n_pairs=0, value=math.nan, low=math.nan, high=math.nan,
               unit="pp", measured="—")
    vs = match_variant(runs, ablation, cmp_.get("variant"))
    rs = match_variant(runs, ablation, cmp_.get("reference"))
    out["comparison"] = (f"{ablation}: {_describe_where(cmp_.get('variant'))} vs "
                         f"{_describe_where(cmp_.get('reference'))}")

    def verdict(status: str, why: str) -> dict[str, Any]:
        out.update(status=status, why=why)
        return out

    if not vs or not rs:
        if runs.empty or not (runs["ablation"] == ablation).any():
            return verdict("not testable", f"no runs of ablation '{ablation}'")
        side = "variant" if not vs else "reference"
        return verdict("not testable", f"no {side} of this comparison in the runs of ablation '{ablation}'")
    variant, reference = vs[0], rs[0]
    out.update(variant=variant, reference=reference, comparison=f"{ablation}: {variant} vs {reference}")
    if variant == reference:
        return verdict("not testable", f"variant and reference are the same run group ({variant})")
    metric = claim["metric"]
    sub = runs[(runs["ablation"] == ablation) & runs["variant"].isin([variant, reference])]
    fin = sub[(sub["status"] == "finished") & sub[metric].notna()]

    pd_ = results.paired_deltas(runs, ablation, reference, metric, float(d["confidence"]))
    row = pd_[pd_["variant"] == variant].iloc[0]
    n = int(row["n_pairs"])
    out.update(n_pairs=n, value=float(row["delta"]), low=float(row["delta_low"]), high=float(row["delta_high"]))
    if n == 0:
        out["measured"] = "—"
    elif n == 1:
        out["measured"] = f"{row['delta']:+.2f} pp (n=1, no interval)"
    else:
        out["measured"] = f"{row['delta']:+.2f} pp [{row['delta_low']:+.2f}, {row['delta_high']:+.2f}] (n={n})"
    if claim.get("testable") is False:
        return verdict("not testable", str(claim.get("why") or "the runs do not hold the compared models"))
    if n == 0:
        return verdict("not testable", "no seed where both sides finished")
    paired = fin[fin["seed"].isin(row["seeds"])]
    epochs = int(paired["epochs_completed"].min())
    reasons = []
    if n < int(d["min_seeds"]):
        reasons.append(f"{n} paired seed{'s' if n != 1 else ''} < {d['min_seeds']}: no confidence interval")
    if epochs < int(d["min_epochs"]):
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''} < {d['min_epochs']}: far from convergence, "
                       "where the papers compare")
    steps = pd.to_numeric(paired["max_steps"], errors="coerce").fillna(0)
    if (steps > 0).any():
        reasons.append(f"truncated epochs (max_steps={int(steps.max())})")
    if reasons:
        return verdict("not testable", "; ".join(reasons))
    lo, hi = float(row["delta_low"]), float(row["delta_high"])
    s_lo, s_hi = (lo, hi) if sign > 0 else (-hi, -lo)
    effect = claim.get("effect")
    in_setting = _in_setting(paired, claim.get("setting"))
    # the size first: in the paper's setting an interval above 0 but below the claimed effect contradicts the claim
    if effect is not None and in_setting and s_hi < abs(float(effect)):
        return verdict("inconsistent", f"in the paper's setting, the 95% CI excludes the claimed {abs(effect):g} pp")
    if s_lo > 0:
        return verdict("consistent", f"the 95% CI of the paired delta excludes 0 on the claimed side"
                       + ("" if in_setting else
                          f" (direction only; size not compared outside the paper's setting, on {_models(paired)})"))
    if s_hi < 0:
        return verdict("inconsistent", "the 95% CI of the paired delta excludes 0 on the opposite side")
    return verdict("not testable", f"the 95% CI includes 0: {n} seeds cannot resolve an effect of this size here")


def judge_cost_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """A cost claim judged in the paper's own setting (the rule in ``claims.yaml``): the two models of ``build``
    built and counted (:func:`.counting.measure`, cached per process), ``rel = 100 (variant - reference) /
    reference`` of params or MACs under the claim's ``convention``; consistent when ``|rel - effect| <=
    tolerance`` (percentage points), inconsistent otherwise; with no effect, judged on the sign."""
    from .counting import claim_specs, measure, relative_difference

    check_claim(claim)
    spec_v, spec_r = claim_specs(claim)
    conv = claim.get("convention", DEFAULT_COST_CONVENTION)
    metric = claim["metric"]
    v, r = measure(spec_v)[conv][metric], measure(spec_r)[conv][metric]
    rel = relative_difference(v, r)
    out = {k: claim.get(k) for k in ("id", "paper", "claim", "reported")}
    b = claim["build"]
    out.update(comparison=f"built: {b['model']} at {spec_v.input_size} px, {_describe_where(b['variant'])} vs "
                          f"{_describe_where(b['reference'])} ({conv})",
               variant=spec_v.label(), reference=spec_r.label(), n_pairs=0, value=rel, low=math.nan,
               high=math.nan, unit="%", measured=f"{rel:+.2f}% ({metric}: {v:,} vs {r:,})")
    effect = claim.get("effect")
    if effect is None:
        ok = (rel < 0) if claim["direction"] == "less" else (rel > 0)
        word = "lower" if claim["direction"] == "less" else "higher"
        out.update(status="consistent" if ok else "inconsistent",
                   why=f"{metric} {'is' if ok else 'is not'} {word} (no claimed size: sign only)")
        return out
    tol = float(claim["tolerance"])
    miss = abs(rel - float(effect))
    within = miss <= tol
    out.update(status="consistent" if within else "inconsistent",
               why=f"|{rel:+.2f} - ({float(effect):+g})| = {miss:.2f} pp {'<=' if within else '>'} the declared "
                   f"tolerance {tol:g} pp")
    return out


def _models(rows: pd.DataFrame) -> str:
    pairs = sorted({f"{m} on {ds}" for m, ds in zip(rows["model"], rows["dataset"])})
    return ", ".join(pairs) or "unknown"


def evaluate_claims(runs: pd.DataFrame, claims: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """:func:`judge_claim` for every claim of ``claims`` (default: the package's ``claims.yaml``)."""
    claims = claims or load_claims()
    rows = [judge_claim(c, runs, claims.get("defaults")) for c in claims["claims"]]
    cols = ["id", "paper", "claim", "reported", "comparison", "variant", "reference", "n_pairs", "value", "low",
            "high", "unit", "measured", "status", "why"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------------------- matching

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
