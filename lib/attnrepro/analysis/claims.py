"""The papers' claims: loaded from ``claims.yaml`` (beside this module), checked, and judged against the runs
(accuracy claims) or against the papers' own models built here (cost claims).

The status rule is the one written in ``claims.yaml`` (``rule``) and implemented by :func:`judge_claim`; the
statuses are *consistent*, *inconsistent*, *inconclusive* and *not run*, each with its reason:

- accuracy claims take the family-wise verdict of their comparison (:mod:`.comparisons`: the paired t-test over
  seeds, adjusted across the preset's family). *not run* when the runs lack a side, or when the claim is judged in
  its own setting only (``judge_outside: false``) and the runs are elsewhere; *inconclusive* with too few seeds or
  epochs; in the paper's own setting (every part of ``setting``: dataset, backbone, model, placement, input size)
  *inconsistent* when the corrected interval lies below the claimed size; *inconsistent* when the verdict is on the
  other side, or when another part of the claim (``also``: e.g. fewer parameters) fails; *consistent* when the
  verdict is on the claimed side (outside the paper's setting on direction only, naming the parts that differ);
  otherwise *inconclusive* (equivalence within the preset's margin included: it bounds an effect, it does not
  refute a direction).
- cost claims (params, MACs) need no training: they are judged in the paper's own setting, on the models named in
  the claim's ``build`` (built with :func:`attnrepro.models.build_model`, counted with :mod:`attnrepro.flops`,
  whatever the runs hold); *consistent* when the relative difference has the claimed sign and lies within the
  claim's declared ``tolerance`` (percentage points) of the claimed one, *inconsistent* otherwise
  (:func:`judge_cost_claim`).
- a claim whose ``compare`` matches more than one variant is an error (:class:`AmbiguousClaim`) naming them.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..design import AnalysisSpec, Comparison
from .matching import match_variant

__all__ = ["load_claims", "check_claim", "judge_claim", "judge_cost_claim", "evaluate_claims", "claim_comparisons",
           "AmbiguousClaim", "STATUSES", "SETTING_PARTS", "run_setting", "setting_differences", "CLAIM_COLUMNS"]

#: a claim's statuses
STATUSES = ("consistent", "inconsistent", "inconclusive", "not run")


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
        setting = c.get("setting") or {}
        if not isinstance(setting, Mapping) or set(setting) - set(SETTING_PARTS):
            bad = sorted(set(setting) - set(SETTING_PARTS)) if isinstance(setting, Mapping) else [setting]
            raise ValueError(f"claim {cid!r}: setting entry {bad[0]!r} is not valid; choose from: "
                             f"{', '.join(SETTING_PARTS)}")
        if c.get("judge_outside", True) not in (True, False):
            raise ValueError(f"claim {cid!r}: judge_outside={c['judge_outside']!r} must be true or false")
        for part in c.get("also") or []:
            if not isinstance(part, Mapping) or part.get("metric") not in ("params", "macs") or \
                    part.get("direction") not in ("less", "greater"):
                raise ValueError(f"claim {cid!r}: also entry {part!r} is not valid; write {{metric: params or macs, "
                                 "direction: less or greater}")
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


class AmbiguousClaim(ValueError):
    """A claim's ``compare`` matches more than one variant of its ablation."""


#: the parts of a claim's ``setting``, in the order a difference is named
SETTING_PARTS = ("dataset", "backbone", "model", "placement", "input_size")


def backbone_family(model: str) -> str:
    """``imagenet-resnet`` (torchvision's ResNets), ``cifar-resnet`` (ResNet-20..110) or ``wrn`` (WRN-28-10)."""
    if str(model).startswith("wrn"):
        return "wrn"
    return "cifar-resnet" if model in ("resnet20", "resnet32", "resnet56", "resnet110") else "imagenet-resnet"


def _placement(model: str, attention: str, stages: Any) -> str:
    """``paper`` when every part of ``attention`` sits where its paper (this suite's default) puts it, else the
    stages; ``-`` without attention."""
    if attention in (None, "none") or not isinstance(attention, str):
        return "-"
    if stages is None or (isinstance(stages, float) and math.isnan(stages)):
        return "paper"
    from ..models.placement import part_stages

    try:
        same = part_stages(model, attention, list(stages)) == part_stages(model, attention, None)
    except (ValueError, TypeError):
        same = False
    return "paper" if same else "stages " + ",".join(str(s) for s in stages)


def run_setting(rows: pd.DataFrame, stands_for: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the compared runs are, part by part of :data:`SETTING_PARTS` (values joined with ``/`` when the runs
    differ); ``stands_for`` replaces the runs' dataset with what the preset declares it is (imagefolder ->
    imagenet)."""
    stands_for = dict(stands_for or {})

    def one(values) -> str:
        vals = sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
        return "/".join(vals) if vals else "?"
    places = [_placement(m, a, s) for m, a, s in zip(rows["model"], rows["attention"], rows["stages"])]
    return {"dataset": stands_for.get("dataset") or one(rows["dataset"]),
            "backbone": one(backbone_family(m) for m in rows["model"]), "model": one(rows["model"]),
            "placement": one(p for p in places if p != "-") if any(p != "-" for p in places) else "paper",
            "input_size": one(_input_size(r) for _, r in rows.iterrows())}


#: the image side of the in-memory datasets (imagefolder: the config's image_size)
_SIDES = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "synthetic": 32}


def _input_size(row: pd.Series) -> int | None:
    """The run's image side: recorded in metrics.json (``input_size``), else the dataset's, else the config's."""
    v = row.get("input_size")
    if v is not None and v == v:
        return int(v)
    if row.get("dataset") in _SIDES:
        return _SIDES[row["dataset"]]
    cfg = row.get("config") if isinstance(row.get("config"), dict) else {}
    return int(cfg["image_size"]) if cfg.get("image_size") else None


def setting_differences(claim_setting: Mapping[str, Any], have: Mapping[str, str]) -> list[str]:
    """The parts of the paper's setting the runs do not share, as ``part value (paper: value)``."""
    out = []
    for part in SETTING_PARTS:
        if part in (claim_setting or {}) and str(claim_setting[part]) != have.get(part):
            want = claim_setting[part]
            word = {"placement": "placement", "input_size": "input"}.get(part, part)
            got, paper = have.get(part), want
            if part == "input_size":
                got, paper = f"{got} px", f"{want} px"
            if part == "placement" and want == "paper":
                paper = "where the paper puts it"
            out.append(f"{word} {got} (paper: {paper})")
    return out


def _match_one(runs: pd.DataFrame, claim: Mapping[str, Any], side: str) -> str | None:
    cmp_ = claim["compare"]
    found = match_variant(runs, cmp_["ablation"], cmp_.get(side))
    if len(found) > 1:
        raise AmbiguousClaim(f"claim {claim['id']!r}: its {side} {_describe_where(cmp_.get(side))} matches "
                             f"{len(found)} variants of {cmp_['ablation']}: {', '.join(found)}; give compare."
                             f"{side} a variant name or more keys (e.g. stages) in claims.yaml")
    return found[0] if found else None


def _comparison_row(comparisons: pd.DataFrame, ablation: str, variant: str, reference: str):
    """(row, sign): the comparison of ``variant`` minus ``reference``, or of the reverse (sign -1)."""
    for v, r, sign in ((variant, reference, 1.0), (reference, variant, -1.0)):
        hit = comparisons[(comparisons["ablation"] == ablation) & (comparisons["variant"] == v)
                          & (comparisons["reference"] == r)]
        if len(hit):
            return hit.iloc[0], sign
    return None, 1.0


def _parts_check(claim: Mapping[str, Any], runs: pd.DataFrame, ablation: str, variant: str, reference: str
                 ) -> tuple[bool | None, str]:
    """The claim's other parts (``also``: e.g. fewer params), judged on the runs' recorded counts: (all hold,
    text); (None, "") without parts."""
    parts = claim.get("also") or []
    if not parts:
        return None, ""
    ok, texts = True, []
    for part in parts:
        metric, direction = part["metric"], part["direction"]
        vals = {}
        for side in (variant, reference):
            s = runs[(runs["ablation"] == ablation) & (runs["variant"] == side) & (runs["status"] == "finished")]
            vals[side] = float(s[metric].median()) if s[metric].notna().any() else math.nan
        holds = (vals[variant] < vals[reference]) if direction == "less" else (vals[variant] > vals[reference])
        word = "fewer" if direction == "less" else "more"
        texts.append(f"{word} {metric} ({vals[variant]:,.0f} vs {vals[reference]:,.0f}: "
                     f"{'holds' if holds else 'does not hold'})")
        ok = ok and bool(holds)
    return ok, "; ".join(texts)


def judge_claim(claim: Mapping[str, Any], runs: pd.DataFrame, defaults: Mapping[str, Any] | None = None,
                comparisons: pd.DataFrame | None = None, spec: AnalysisSpec | None = None) -> dict[str, Any]:
    """Put one claim beside its comparison in ``runs`` and give it a status (the rule in ``claims.yaml``).

    ``comparisons`` is :func:`.comparisons.compare` of the runs (computed here when None, with ``spec``); the claim
    takes that comparison's family-wise verdict.

    Returns:
        dict with ``id, paper, claim, reported, comparison, variant, reference, n_pairs, value, low, high, p, p_adj,
        unit, measured, setting, status, why``. ``value`` is the paired mean delta (accuracy, percentage points) or
        the relative difference (cost, percent); ``low``/``high`` the interval at the corrected level.

    Raises:
        AmbiguousClaim: ``compare`` matches more than one variant.
    """
    d = {"min_seeds": 2, "min_epochs": 10, **dict(defaults or {})}
    if claim["kind"] == "cost":
        return judge_cost_claim(claim)
    spec = spec or AnalysisSpec()
    cmp_ = claim["compare"]
    ablation = cmp_["ablation"]
    sign = 1.0 if claim["direction"] == "greater" else -1.0
    out = {k: claim.get(k) for k in ("id", "paper", "claim", "reported")}
    out.update(variant=None, reference=None, n_pairs=0, value=math.nan, low=math.nan, high=math.nan, p=math.nan,
               p_adj=math.nan, unit="pp", measured="—", setting="")
    out["comparison"] = (f"{ablation}: {_describe_where(cmp_.get('variant'))} vs "
                         f"{_describe_where(cmp_.get('reference'))}")

    def status(s: str, why: str) -> dict[str, Any]:
        out.update(status=s, why=why)
        return out

    variant, reference = _match_one(runs, claim, "variant"), _match_one(runs, claim, "reference")
    if variant is None or reference is None:
        if runs.empty or not (runs["ablation"] == ablation).any():
            return status("not run", f"this preset has no runs of ablation '{ablation}'")
        side = "variant" if variant is None else "reference"
        return status("not run", f"no {side} of this comparison among the runs of ablation '{ablation}'")
    out.update(variant=variant, reference=reference, comparison=f"{ablation}: {variant} vs {reference}")
    if variant == reference:
        return status("not run", f"variant and reference are the same run group ({variant})")
    sides = runs[(runs["ablation"] == ablation) & runs["variant"].isin([variant, reference])
                 & (runs["status"] == "finished")]
    if sides.empty:
        return status("not run", "no finished run on either side")
    setting = claim.get("setting") or {}
    differs = setting_differences(setting, run_setting(sides, spec.stands_for))
    out["setting"] = "the paper's" if setting and not differs else ("; ".join(differs) if differs else "none declared")
    if differs and claim.get("judge_outside") is False:
        return status("not run", "this preset does not build the claim's setting ("
                      + "; ".join(differs) + "); " + str(claim.get("outside_why") or "it is not judged elsewhere"))
    if comparisons is None:          # this claim's comparison joins the default family (the report passes its own)
        from .comparisons import compare
        comparisons = compare(runs, spec, extra=[Comparison(ablation, variant, reference)], claims={"claims": [claim]})
    row, flip = _comparison_row(comparisons, ablation, variant, reference)
    if row is None or int(row["n_pairs"]) == 0:
        return status("inconclusive", "no seed where both sides finished")
    n = int(row["n_pairs"])
    delta = flip * float(row["delta"])
    lo, hi = sorted((flip * float(row["adj_low"]), flip * float(row["adj_high"])))
    out.update(n_pairs=n, value=delta, low=lo, high=hi, p=float(row["p"]), p_adj=float(row["p_adj"]))
    raw_lo, raw_hi = sorted((flip * float(row["delta_low"]), flip * float(row["delta_high"])))
    out["measured"] = (f"{delta:+.2f} pp [{raw_lo:+.2f}, {raw_hi:+.2f}] (n={n}); p {_pfmt(row['p'])}, "
                       f"adjusted {_pfmt(row['p_adj'])}" if n >= 2 else f"{delta:+.2f} pp (n=1, no interval)")
    paired = sides[sides["seed"].isin(row["seeds"] if isinstance(row["seeds"], list) else [])]
    reasons = []
    if n < int(d["min_seeds"]):
        reasons.append(f"{n} paired seed{'s' if n != 1 else ''} < {d['min_seeds']}")
    epochs = int(paired["epochs_completed"].min()) if len(paired) else 0
    if epochs < int(d["min_epochs"]):
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''} < {d['min_epochs']}: far from convergence, "
                       "where the papers compare")
    steps = pd.to_numeric(paired["max_steps"], errors="coerce").fillna(0)
    if (steps > 0).any():
        reasons.append(f"truncated epochs (max_steps={int(steps.max())})")
    if reasons:
        return status("inconclusive", "; ".join(reasons))
    verdict = str(row["verdict"])
    if verdict == "not in family":
        return status("inconclusive", "the comparison is not in the preset's declared family, so it is not judged")
    claimed_side = ("above" if sign * flip > 0 else "below")
    other_side = "below" if claimed_side == "above" else "above"
    parts_ok, parts_text = _parts_check(claim, runs, ablation, variant, reference)
    outside = f" (direction only; outside the paper's setting: {'; '.join(differs)})" if differs else ""
    effect = claim.get("effect")
    s_hi = hi if sign > 0 else -lo           # the corrected interval's far end on the claimed side
    if effect is not None and setting and not differs and s_hi < abs(float(effect)):
        return status("inconsistent", f"in the paper's setting the corrected interval [{lo:+.2f}, {hi:+.2f}] lies "
                      f"below the claimed {abs(float(effect)):g} pp")
    if verdict == other_side:
        return status("inconsistent", f"the family-wise test resolves the delta on the opposite side "
                      f"(adjusted p {_pfmt(row['p_adj'])}){outside}")
    if parts_ok is False:
        return status("inconsistent", f"the claim's other part fails: {parts_text}{outside}")
    if verdict == claimed_side:
        return status("consistent", f"the family-wise test resolves the delta on the claimed side (adjusted p "
                      f"{_pfmt(row['p_adj'])})" + (f"; and {parts_text}" if parts_text else "") + outside)
    if verdict == "equivalent":
        return status("inconclusive", f"equivalent within ±{spec.delta:g} pp (TOST, adjusted p "
                      f"{_pfmt(row['tost_p_adj'])}): no effect larger than that here, but not the claim's absence"
                      + outside)
    return status("inconclusive", f"the family-wise test resolves neither a difference (adjusted p "
                  f"{_pfmt(row['p_adj'])}) nor equivalence: {n} seeds cannot decide an effect of this size here"
                  + outside)


def _pfmt(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


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
    right_sign = (rel < 0) if claim["direction"] == "less" else (rel > 0)
    within = miss <= tol and right_sign
    why = (f"|{rel:+.2f} - ({float(effect):+g})| = {miss:.2f} pp {'<=' if miss <= tol else '>'} the declared "
           f"tolerance {tol:g} pp")
    if miss <= tol and not right_sign:
        why += f", but {rel:+.2f}% has the other sign"
    out.update(status="consistent" if within else "inconsistent", why=why)
    return out


CLAIM_COLUMNS = ["id", "paper", "claim", "reported", "comparison", "variant", "reference", "n_pairs", "value", "low",
                 "high", "p", "p_adj", "unit", "measured", "setting", "status", "why"]


def claim_comparisons(runs: pd.DataFrame, claims: Mapping[str, Any]) -> list[Comparison]:
    """The comparisons the accuracy claims name, for the runs at hand (the claims that match nothing, or match
    several variants, are left out: :func:`judge_claim` says why)."""
    out = []
    for c in claims["claims"]:
        if c["kind"] != "accuracy":
            continue
        try:
            v, r = _match_one(runs, c, "variant"), _match_one(runs, c, "reference")
        except AmbiguousClaim:
            continue
        if v is not None and r is not None and v != r:
            out.append(Comparison(c["compare"]["ablation"], v, r))
    return out


def evaluate_claims(runs: pd.DataFrame, claims: Mapping[str, Any] | None = None,
                    comparisons: pd.DataFrame | None = None, spec: AnalysisSpec | None = None) -> pd.DataFrame:
    """:func:`judge_claim` for every claim of ``claims`` (default: the package's ``claims.yaml``), all against one
    comparisons frame (:func:`.comparisons.compare` of the runs with the preset's ``spec``, the claims'
    comparisons included)."""
    claims = claims or load_claims()
    spec = spec or AnalysisSpec()
    if comparisons is None:
        from .comparisons import compare
        comparisons = compare(runs, spec, extra=claim_comparisons(runs, claims), claims=claims)
    rows = [judge_claim(c, runs, claims.get("defaults"), comparisons, spec) for c in claims["claims"]]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
