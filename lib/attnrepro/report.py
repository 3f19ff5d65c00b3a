"""``attnrepro report``: the runs of a preset -> ``reports/<preset>/report.html`` (self-contained) + CSV tables.

The command executes ``notebooks/report.ipynb`` with papermill (kernel ``attnrepro``) and exports it with nbconvert
to HTML with the code hidden and the figures embedded as ``data:`` URIs, so the file needs nothing beside it. The
notebook is thin: it builds a :class:`Report` and displays what its ``*_items`` methods return; this module holds the
logic so that tests can check it without a kernel.

Every number comes from the files under ``runs/<preset>/`` (through :mod:`attnrepro.results`); the papers' numbers
come from ``claims.yaml`` and are shown as reported, beside the measurements. The claims status rule is the one
written in ``claims.yaml`` (``rule``) and implemented by :func:`judge_claim`:

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

The "Paper tables" section (:meth:`Report.paper_tables_items`) sets every params / GFLOPs row of the papers beside the
models this suite builds, under each counting convention of :mod:`attnrepro.tables`; it and the cost claims share one
count per model (:func:`attnrepro.tables.measure` is cached for the process).
"""
from __future__ import annotations

import argparse
import hashlib
import html
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from . import figures, findings, results
from ._io import atomic_write_text
from .pipeline import KERNEL_NAME, default_runs_dir, ensure_kernel  # one kernel name, one installer

__all__ = ["configure", "run", "build_report", "export_html", "ensure_kernel", "Report", "expected_runs",
           "load_claims", "evaluate_claims", "judge_claim", "ABLATIONS", "KERNEL_NAME"]

ABLATIONS = ("kernel", "radius_init", "placement", "baseline")
DEFAULT_COST_CONVENTION = "fvcore-default"   # attnrepro.tables.DEFAULT_CONVENTION
_ABLATION_TEXT = {
    "kernel": "ExpAtt with each distance kernel k(d; r) (uniform = global-average control).",
    "radius_init": "ExpAtt with different initial radii (and frozen radii where the grid has them).",
    "placement": "Which residual stages get the attention.",
    "baseline": "The plain backbone and every attention module (ExpAtt, AA, AW, SE, CBAM) with the same recipe.",
}


# ================================================================================================= claims
def load_claims(path: str | Path | None = None) -> dict[str, Any]:
    """``claims.yaml`` (the package's, unless ``path``) as a dict with ``rule``, ``defaults`` and ``claims``; every
    claim is checked (:func:`check_claim`)."""
    import yaml

    text = Path(path).read_text() if path else resources.files("attnrepro").joinpath("claims.yaml").read_text()
    data = yaml.safe_load(text)
    for c in data["claims"]:
        check_claim(c)
    return data


def check_claim(c: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the claim, the bad value and the valid choices when a claim is malformed: accuracy
    claims need ``compare``; cost claims need ``build`` (the paper's models), a ``metric`` of params or macs, a
    known ``convention``, and, when they give an effect, a ``tolerance`` >= 0 and an effect whose sign is the
    direction's."""
    from .tables import CONVENTIONS, claim_specs

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
    vs = results.match_variant(runs, ablation, cmp_.get("variant"))
    rs = results.match_variant(runs, ablation, cmp_.get("reference"))
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
    built and counted (:func:`attnrepro.tables.measure`, cached per process), ``rel = 100 (variant - reference) /
    reference`` of params or MACs under the claim's ``convention``; consistent when ``|rel - effect| <=
    tolerance`` (percentage points), inconsistent otherwise; with no effect, judged on the sign."""
    from .tables import claim_specs, measure, relative_difference

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


# ================================================================================================= formatting
def _fmt(x: Any, spec: str = ".2f", missing: str = "—") -> str:
    try:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return missing
        return format(float(x), spec)
    except (TypeError, ValueError):
        return missing


def _si(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def display_table(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An :func:`results.ablation_table` as (strings for display, numbers used to pick the best values)."""
    disp, num = [], []
    for r in table.itertuples():
        runs_txt = f"{r.n}/{r.n_expected}"
        extra = [f"{k} {lbl}" for k, lbl in ((r.n_failed, "failed"), (r.n_incomplete, "incomplete"),
                                             (r.n_missing, "missing")) if k]
        if extra:
            runs_txt += " (" + ", ".join(extra) + ")"
        if r.n == 0:
            top1 = "no finished run"
        elif r.n == 1:
            top1 = f"{r.mean:.2f} (n=1, no CI)"
        else:
            top1 = f"{r.mean:.2f} ± {r.half:.2f} (n={r.n})"
        if r.is_reference:
            delta = "reference"
        elif not isinstance(r.n_pairs, (int, float)) or pd.isna(r.n_pairs) or r.n_pairs == 0:
            delta = "—"
        elif r.n_pairs == 1:
            delta = f"{r.delta:+.2f} (n=1, no CI)"
        else:
            delta = f"{r.delta:+.2f} [{r.delta_low:+.2f}, {r.delta_high:+.2f}] (n={int(r.n_pairs)})"
        disp.append({"variant": str(r.variant) + (" (ref)" if r.is_reference else ""), "runs finished": runs_txt,
                     "top-1 % (mean ± 95% CI)": top1, "Δ top-1 vs ref, pp [95% CI]": delta,
                     "params": _si(r.params), "MACs": _si(r.macs), "images/s": _fmt(r.images_per_s, ".0f"),
                     "epochs": _fmt(r.epochs, ".0f")})
        num.append({"top-1 % (mean ± 95% CI)": r.mean,
                    "Δ top-1 vs ref, pp [95% CI]": math.nan if r.is_reference else r.delta,
                    "params": -r.params, "MACs": -r.macs, "images/s": r.images_per_s})
    return pd.DataFrame(disp), pd.DataFrame(num)


def bold_best(disp: pd.DataFrame, num: pd.DataFrame):
    """A pandas Styler of ``disp`` with the best value of each column in ``num`` (largest) in bold; columns with
    fewer than two values get no bold."""
    def css(_: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame("", index=disp.index, columns=disp.columns)
        for c in num.columns:
            col = pd.to_numeric(num[c], errors="coerce")
            if col.notna().sum() >= 2 and col.max() > col.min():
                out.loc[col == col.max(), c] = "font-weight: bold"
        return out

    # the table's CSS id from its content, not pandas' random one, so that the same runs give the same report file
    uid = hashlib.sha1(disp.to_csv().encode()).hexdigest()[:10]
    sty = disp.style.set_uuid(uid).apply(css, axis=None).hide(axis="index")
    return sty.set_table_styles([
        {"selector": "th", "props": "text-align: left; padding: 3px 8px; background: #f0f0f0;"},
        {"selector": "td", "props": "text-align: left; padding: 3px 8px; border-top: 1px solid #ddd;"},
        {"selector": "", "props": "border-collapse: collapse; font-size: 13px; margin: 6px 0 14px 0;"}])


def _plain_table(df: pd.DataFrame):
    return bold_best(df.reset_index(drop=True), pd.DataFrame(index=df.index))


# ================================================================================================= the report
class Report:
    """Everything the report notebook shows, computed from the run folders of one preset.

    Args:
        runs_dir: the runs root (``runs``).
        preset: preset name (``runs_dir/preset``).
        grids_dir: the ablation grids (``notebooks``), for the reference variant when variant.json lacks it.
        bench_md: ``reports/bench/bench.md``; its table is included when the file exists.
        claims_path: another claims file (default: the package's).
    """

    def __init__(self, runs_dir: str | Path, preset: str, *, grids_dir: str | Path | None = None,
                 bench_md: str | Path | None = None, claims_path: str | Path | None = None):
        self.runs_dir = Path(runs_dir)
        self.preset = preset
        self.bench_md = Path(bench_md) if bench_md else None
        self.runs = results.load_runs(self.runs_dir, preset, grids_dir=grids_dir)
        self.curves = results.load_curves(self.runs_dir, preset)
        self.radii = results.load_radii(self.runs_dir, preset)
        self.expected_from = "the seeds found (every variant of an ablation with every seed any variant has)"
        expected = None
        if len(self.runs):
            expected = expected_runs(preset, results.ablations(self.runs), grids_dir)
            if expected is not None:
                self.expected_from = f"the grids and preset {preset}.yaml (attnrepro.pipeline), and the seeds found"
        self.missing = results.missing_runs(self.runs, expected)
        self.claims_data = load_claims(claims_path)
        self.claims = evaluate_claims(self.runs, self.claims_data)
        found = results.ablations(self.runs)
        self.ablation_names = list(ABLATIONS) + [a for a in found if a not in ABLATIONS]
        self.tables = {a: results.ablation_table(self.runs, a, missing=self.missing) for a in found}
        self.comparisons = findings.comparisons(self.tables)
        self.findings = findings.findings(self.tables)
        self.built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.figures_dir: Path | None = None
        self._paper_table: pd.DataFrame | None = None

    @property
    def paper_table(self) -> pd.DataFrame:
        """:func:`attnrepro.tables.build_tables` (the papers' params / GFLOPs rows beside the built models), computed
        on first use."""
        if self._paper_table is None:
            from . import tables
            self._paper_table = tables.build_tables()
        return self._paper_table

    # ------------------------------------------------------------------ files
    def write_csvs(self, out_dir: str | Path) -> list[Path]:
        """``runs.csv`` (one row per run, missing ones included), ``<ablation>.csv``, ``claims.csv``,
        ``findings.csv`` and ``comparisons.csv`` (:mod:`attnrepro.findings`), ``paper_tables.csv``; the figures the
        report then draws are also saved as ``figures/<ablation>-<i>.png`` beside them."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.figures_dir = out / "figures"
        paths = []
        runs = self.runs.drop(columns=["config", "radius"], errors="ignore").copy()
        runs["varied"] = runs["varied"].map(lambda v: ";".join(f"{k}={v[k]}" for k in sorted(v)) if v else "")
        runs = pd.concat([runs, self.missing], ignore_index=True) if len(self.missing) else runs
        for name, df in [("runs", runs), *((a, t) for a, t in self.tables.items()), ("claims", self.claims),
                         ("findings", self.findings), ("comparisons", self.comparisons),
                         ("paper_tables", self.paper_table)]:
            p = out / f"{name}.csv"
            df2 = df.copy()
            for c in df2.columns:
                if df2[c].map(lambda v: isinstance(v, list)).any():
                    df2[c] = df2[c].map(lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
            df2.to_csv(p, index=False)
            paths.append(p)
        return paths

    # ------------------------------------------------------------------ sections
    def _counts(self) -> dict[str, int]:
        s = self.runs["status"] if len(self.runs) else pd.Series(dtype=str)
        return {"found": len(self.runs), "finished": int((s == "finished").sum()), "failed": int((s == "failed").sum()),
                "incomplete": int((s == "incomplete").sum()), "missing": len(self.missing)}

    def header_items(self) -> list:
        """The title, what the numbers are, and the scale warning."""
        from IPython.display import HTML

        c = self._counts()
        items = [HTML(f"<h1>attnrepro report: preset <code>{html.escape(self.preset)}</code></h1>")]
        where = f"runs/{html.escape(self.preset)}"
        if c["found"] == 0:
            items.append(HTML(f"<p class='ar-warn'><b>No runs found under <code>{where}</code>.</b> Nothing in this "
                              f"report is measured: run <code>attnrepro run ABLATION... --preset "
                              f"{html.escape(self.preset)}</code> first. The claims below are all "
                              "<i>not testable</i>.</p>"))
        else:
            items.append(HTML(f"<p>Every number below is computed from the files under <code>{where}</code>; the "
                              "papers' numbers are quoted from <code>claims.yaml</code>. Accuracies are percent; "
                              "intervals are two-sided 95% Student-t intervals over seeds; deltas are paired by "
                              "seed.</p>"))
        warn = self._scale_warning()
        if warn:
            items.append(HTML(f"<p class='ar-warn'><b>Scale.</b> {html.escape(warn)}</p>"))
        return items

    def findings_items(self) -> list:
        """"Findings": per ablation, the reference, the best variant and what is resolved, by the rule of
        :mod:`attnrepro.findings` (shown), with the paired-deltas figure; generated from the ablation tables."""
        from IPython.display import HTML

        items = [HTML("<h2>Findings</h2>")]
        if self.findings.empty:
            return items + [HTML("<p>No ablation with a reference variant and finished runs: nothing to find.</p>")]
        mh = findings.median_half(self.tables)
        lis = "".join(f"<li><b>{html.escape(str(f.ablation))}</b>: {html.escape(str(f.finding))}</li>"
                      for f in self.findings.itertuples())
        items.append(HTML(
            "<p>" + (f"Median 95% half-width of the paired deltas: <b>{mh:.2f} points</b>, about the smallest "
                     "effect these runs could have seen. " if math.isfinite(mh) else "") +
            f"The datasets and models are this preset's ({html.escape(_counts_text(self.runs['dataset'].astype(str)))}"
            "), not the papers' ImageNet ones.</p>"
            f"<p>{html.escape(findings.resolved_sentence(self.comparisons))}</p><ul>{lis}</ul>"
            "<details><summary>The findings rule</summary>"
            f"<p class='ar-rule'>{html.escape(findings.RULE)}</p></details>"))
        fig = figures.paired_deltas(self.comparisons)
        if fig is not None:
            items += [_image(self._png(fig, "findings-deltas")),
                      HTML("<p class='ar-cap'>Each variant's paired Δ top-1 to its ablation's reference with its 95% "
                           "t interval; green: resolved above 0, red: below.</p>")]
        return items

    def provenance_items(self, header: bool = True) -> list:
        """The provenance table and the failed, incomplete and missing runs (after :meth:`header_items` when
        ``header``)."""
        from IPython.display import HTML

        c = self._counts()
        items = self.header_items() if header else []
        items.append(HTML("<h2>Provenance</h2>"))
        rows = [("preset", self.preset), ("report built", self.built),
                ("report code (git)", _git_describe(_repo_root())),
                ("runs found", f"{c['found']}: {c['finished']} finished, {c['failed']} failed, "
                               f"{c['incomplete']} incomplete; {c['missing']} expected but missing"),
                ("runs expected from", self.expected_from if c["found"] else "—")]
        r = self.runs
        if len(r):
            rows += [("runs' code (git)", _counts_text(r["git_commit"])),
                     ("runs written", f"{r['written'].dropna().min()} … {r['written'].dropna().max()}"),
                     ("environment", _counts_text(r.apply(
                         lambda x: f"python {x['python']}, torch {x['torch']}, torchvision {x['torchvision']}"
                         if pd.notna(x["python"]) else None, axis=1))),
                     ("device", _counts_text(r.apply(
                         lambda x: f"{x['device']} ({x['device_name']})" if pd.notna(x["device"]) else None, axis=1))),
                     ("dataset / model", _counts_text(r["dataset"].astype(str) + " / " + r["model"].astype(str))),
                     ("epochs (configured)", _counts_text(r["epochs"])),
                     ("seeds", " ".join(str(s) for s in sorted(set(r["seed"])))),
                     ("training time", results.time_text(results.run_seconds(r)))]
        rows.append(("report environment", _env_text()))
        items.append(_plain_table(pd.DataFrame(rows, columns=["", "value"])))
        bad = self.problem_runs()
        if len(bad):
            items.append(HTML("<h3>Failed, incomplete and missing runs</h3>"))
            items.append(_plain_table(bad))
        elif c["found"]:
            items.append(HTML("<p>No failed, incomplete or missing runs.</p>"))
        return items

    def problem_runs(self) -> pd.DataFrame:
        """Failed, incomplete and missing runs with their reasons."""
        cols = ["ablation", "variant", "seed", "status", "reason"]
        parts = []
        if len(self.runs):
            parts.append(self.runs[self.runs["status"] != "finished"][cols])
        if len(self.missing):
            parts.append(self.missing[cols])
        if not parts:
            return pd.DataFrame(columns=cols)
        return pd.concat(parts, ignore_index=True)

    def _scale_warning(self) -> str | None:
        fin = self.runs[self.runs["status"] == "finished"] if len(self.runs) else self.runs
        if fin.empty:
            return None
        d = self.claims_data.get("defaults", {})
        min_ep, min_seeds = int(d.get("min_epochs", 10)), int(d.get("min_seeds", 2))
        ep = int(fin["epochs_completed"].min())
        seeds = int(fin.groupby(["ablation", "variant"])["seed"].nunique().min())
        msgs = []
        if ep < min_ep:
            msgs.append(f"some runs trained only {ep} epoch{'s' if ep != 1 else ''} (< {min_ep})")
        if seeds < min_seeds:
            msgs.append(f"some variants have only {seeds} finished seed{'s' if seeds != 1 else ''} (< {min_seeds})")
        if not msgs:
            return None
        return ("; ".join(msgs).capitalize() + ". At this scale the tables check the pipeline, not the papers: "
                "differences between variants are not evidence for or against any claim.")

    def ablation_items(self, ablation: str) -> list:
        from IPython.display import HTML

        items = [HTML(f"<h2>Ablation: {html.escape(ablation)}</h2>")]
        text = _ABLATION_TEXT.get(ablation, "")
        table = self.tables.get(ablation)
        if table is None or table.empty:
            items.append(HTML(f"<p>{html.escape(text)} <b>No runs of this ablation under "
                              f"<code>runs/{html.escape(self.preset)}/{html.escape(ablation)}</code>.</b></p>"))
            return items
        ref = results.reference_variant(self.runs, ablation)
        varied = sorted({k for v in self.runs[self.runs["ablation"] == ablation]["varied"] for k in (v or {})})
        items.append(HTML(f"<p>{html.escape(text)} Varied: {html.escape(', '.join(varied) or '—')}. Reference "
                          f"variant: <b>{html.escape(ref or 'none marked: no deltas')}</b>. Best value per "
                          "column in bold (top-1, Δ, images/s: highest; params, MACs: lowest).</p>"))
        items.append(bold_best(*display_table(table)))
        for fig, caption in self.figures(ablation):
            items.append(_image(fig))
            items.append(HTML(f"<p class='ar-cap'>{html.escape(caption)}</p>"))
        return items

    def _png(self, fig, name: str) -> bytes:
        """The figure as PNG bytes; after :meth:`write_csvs`, also saved as ``figures/<name>.png``."""
        png = figures.to_png(fig)
        if self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            (self.figures_dir / f"{name}.png").write_bytes(png)
        return png

    def figures(self, ablation: str) -> list[tuple[bytes, str]]:
        """(PNG bytes, caption) for each figure of the ablation that has data; after :meth:`write_csvs`, each is also
        saved as ``figures/<ablation>-<name>.png``."""
        out = []
        table = self.tables.get(ablation)

        def add(name, fig, caption):
            if fig is not None:
                out.append((self._png(fig, f"{ablation}-{name}"), caption))

        add("curves", figures.accuracy_curves(self.curves, ablation),
            "Validation top-1 per epoch, finished runs only; band: 95% t interval over seeds (none with one seed).")
        if ablation == "baseline" and table is not None:
            add("top1_vs_macs", figures.accuracy_vs_cost(table, "macs"),
                "Final top-1 (mean, 95% t interval) against fvcore MACs per image (1 MAC = 1 fused multiply-add).")
        if ablation == "placement" and table is not None:
            add("top1_by_placement", figures.accuracy_by_variant(table, xlabel="placement"),
                "Final top-1 per placement (mean over seeds, 95% t interval).")
        if len(self.radii) and (self.radii["ablation"] == ablation).any():
            add("radius", figures.radius_over_training(self.radii, ablation),
                "Learned ExpAtt radius per layer (mean over heads and seeds; band: 95% t over seeds). "
                "Epoch 0 is radius_init from config.json.")
            panels = self.map_panels(ablation)
            add("attention_maps", figures.attention_maps(panels),
                "Attention of the centre pixel of the first ExpAtt layer's feature map at each variant's final "
                "learned radius (median over layers, heads and finished seeds).")
            if ablation == "kernel":
                shapes = [{"label": p["label"], "kernel": p["kernel"], "radius": p["radius"]} for p in panels]
                add("kernel_shapes", figures.kernel_shapes(shapes),
                    "k(d; r) of each kernel variant at its learned radius (uniform ignores r).")
        return out

    def map_panels(self, ablation: str, max_panels: int = 8) -> list[dict[str, Any]]:
        """One heatmap spec per variant with learned radii: median final radius, kernel, feature size."""
        runs = self.runs[(self.runs["ablation"] == ablation) & (self.runs["status"] == "finished")]
        panels = []
        for variant in sorted(set(runs["variant"]), key=results.natural_key):
            vs = runs[runs["variant"] == variant]
            vals = [x for rad in vs["radius"] for layer in (rad or {}) for x in
                    (rad[layer] if isinstance(rad[layer], list) else [rad[layer]])]
            layers = sorted({layer for rad in vs["radius"] for layer in (rad or {})}, key=results.natural_key)
            if not vals:
                continue
            cfg = vs["config"].iloc[0] or {}
            H, W = figures.feature_size(cfg, layers[0])
            panels.append({"label": variant, "H": H, "W": W, "radius": float(pd.Series(vals).median()),
                           "kernel": cfg.get("kernel") or "gaussian"})
        return panels[:max_panels]

    def claims_items(self) -> list:
        from IPython.display import HTML

        rule = self.claims_data.get("rule", "")
        d = self.claims_data.get("defaults", {})
        items = [HTML("<h2>The papers' claims beside these runs</h2>"),
                 HTML(f"<p>Each claim is put beside the nearest comparison in these runs. min_seeds = "
                      f"{d.get('min_seeds')}, min_epochs = {d.get('min_epochs')}, confidence = "
                      f"{d.get('confidence')}. Measured: paired Δ top-1 in percentage points [95% CI] (n = paired "
                      "seeds), or, for cost claims, the relative difference between the paper's models built "
                      "here at the paper's input size (no runs needed), judged against the claimed one with the "
                      "tolerance each claim declares.</p>"
                      f"<details><summary>The status rule (claims.yaml)</summary><pre class='ar-rule'>"
                      f"{html.escape(rule)}</pre></details>")]
        cl = self.claims
        tab = pd.DataFrame({"claim": cl["claim"], "paper": cl["paper"], "reported": cl["reported"],
                            "nearest comparison": cl["comparison"], "measured": cl["measured"],
                            "status": cl["status"], "why": cl["why"]})

        def colour(_: pd.DataFrame) -> pd.DataFrame:
            out = pd.DataFrame("", index=tab.index, columns=tab.columns)
            out["status"] = tab["status"].map({"consistent": "color: #1a7f37; font-weight: bold",
                                               "inconsistent": "color: #cf222e; font-weight: bold",
                                               "not testable": "color: #6e7781"}) + "; white-space: nowrap"
            return out

        sty = _plain_table(tab).apply(colour, axis=None)
        items.append(sty)
        counts = cl["status"].value_counts()
        items.append(HTML("<p>" + ", ".join(f"{k}: {counts.get(k, 0)}"
                                            for k in ("consistent", "inconsistent", "not testable")) + ".</p>"))
        return items

    def paper_tables_items(self) -> list:
        from IPython.display import HTML

        from . import tables

        t = self.paper_table
        convs = list(dict.fromkeys(t["convention"]))
        items = [HTML("<h2>Paper tables</h2>"),
                 HTML("<p>Every params / GFLOPs row the papers print, beside the model this suite builds for it "
                      "(<code>attnrepro.models.build_model</code>, counted here with <code>attnrepro.flops</code> on "
                      "one image in eval mode; the same as <code>attnrepro tables</code>). Nothing measured is "
                      "typed in: the papers' numbers come from <code>paper_tables.yaml</code> and, for the ExpAtt "
                      "paper's ResNet-152 ratios, <code>claims.yaml</code>. params in millions; GFLOPs = 2 x MACs / "
                      "1e9 (the AA paper's convention); the ExpAtt rows are relative differences in percent. Each "
                      "cell is <i>measured (measured − reported)</i>; ✓ where the measured value rounds to the "
                      "paper's number. The runs above play no part here.</p>"),
                 HTML("<p>Counting conventions (combinations of three choices; the first is this suite's own):</p><ul>"
                      + "".join(f"<li><code>{html.escape(c)}</code>: {html.escape(tables.CONVENTIONS[c].describe())}"
                                "</li>" for c in convs) + "</ul>"),
                 HTML("<p><b>Which convention reproduces each column:</b></p><ul>"
                      + "".join(f"<li>{html.escape(line)}</li>" for line in tables.column_verdicts(t)) + "</ul>")]
        items.append(_plain_table(tables.wide(t)))
        return items

    def bench_items(self) -> list:
        from IPython.display import HTML, Markdown

        if self.bench_md is None or not self.bench_md.is_file():
            return [HTML("<h2>Benchmarks</h2><p>No benchmark table (<code>reports/bench/bench.md</code>): run "
                         "<code>attnrepro bench</code> to add one.</p>")]
        import re

        # included as is, its headings moved two levels down to sit under this section's heading
        text = re.sub(r"^(#{1,4})(?=\s)", r"\1##", self.bench_md.read_text(), flags=re.M)
        return [HTML("<h2>Benchmarks</h2><p>From <code>reports/bench/bench.md</code> (written by "
                     "<code>attnrepro bench</code>), included as is.</p>"), Markdown(text)]

    def style_items(self) -> list:
        from IPython.display import HTML

        return [HTML("<style>.ar-warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;}"
                     ".ar-cap{color:#555;font-size:12px;margin-top:0;} .ar-rule{white-space:pre-wrap;font-size:12px;}"
                     " img{max-width:100%;height:auto;}</style>")]

    @staticmethod
    def show(items: Iterable) -> None:
        from IPython.display import display

        for it in items:
            display(it)


def expected_runs(preset: str, ablations: Iterable[str], grids_dir: str | Path | None = None
                  ) -> pd.DataFrame | None:
    """``preset, ablation, variant, seed`` of the runs the grids and the preset call for, from
    :func:`attnrepro.pipeline.expand` (without CLI overrides); None when that cannot be worked out (an unknown
    preset or ablation, a grid that does not validate, no pipeline)."""
    try:
        from . import pipeline

        runs = pipeline.expand(list(ablations), preset, nb_dir=grids_dir)
    except Exception:  # noqa: BLE001 - the report then infers what is expected from the runs found
        return None
    return pd.DataFrame([{"preset": r.preset, "ablation": r.ablation, "variant": r.variant, "seed": int(r.seed)}
                         for r in runs], columns=["preset", "ablation", "variant", "seed"])


def _image(png: bytes):
    from IPython.display import Image

    return Image(data=png, format="png")


def _counts_text(values: pd.Series) -> str:
    v = values.dropna().astype(str)
    if v.empty:
        return "unknown"
    counts = v.value_counts()
    return "; ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in counts.items())


def _env_text() -> str:
    def ver(p):
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return "?"
    return (f"python {sys.version.split()[0]}, pandas {ver('pandas')}, seaborn {ver('seaborn')}, "
            f"scipy {ver('scipy')}, papermill {ver('papermill')}")


def _git_describe(cwd: str | Path | None = None) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


# ================================================================================================= build
def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def export_html(notebook: str | Path, html_path: str | Path, title: str = "attnrepro report") -> Path:
    """Executed notebook -> one self-contained HTML file: no code, figures as data URIs, no external scripts."""
    import re

    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata["title"] = title
    for i, cell in enumerate(nb.cells):          # papermill gives its injected cell a random id; the HTML shows ids
        cell["id"] = f"cell-{i}"
    exp = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                       exclude_output_prompt=True, embed_images=True)
    body, _ = exp.from_notebook_node(nb)
    # The lab template links MathJax and require.js from a CDN; the report has no math or widgets: drop them so the
    # file loads nothing from anywhere.
    body = re.sub(r"<script[^>]*src=\"https?://[^\"]*\"[^>]*>\s*</script>", "", body)
    body = re.sub(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", "", body, flags=re.S)
    # ... and a module script that would import Mermaid from a CDN if the page had diagrams (it has none).
    body = re.sub(r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>", "", body,
                  flags=re.S)
    p = Path(html_path)
    atomic_write_text(p, body)
    return p


def _rel(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(p.resolve(), base.resolve())
    except ValueError:
        return str(p)


def build_report(preset: str, runs_dir: str | Path = "runs", out_dir: str | Path = "reports", *,
                 notebook: str | Path | None = None, grids_dir: str | Path | None = None,
                 bench_md: str | Path | None = None, timeout: int = 600) -> Path:
    """Execute the report notebook for ``preset`` and export it; returns ``<out_dir>/<preset>/report.html``.

    Also writes ``<out_dir>/<preset>/report.ipynb`` (executed) and the CSV tables beside it.
    """
    import papermill as pm

    root = _repo_root()
    notebook = Path(notebook) if notebook else root / "notebooks" / "report.ipynb"
    if not notebook.is_file():
        from .cli import UsageError
        raise UsageError(f"report notebook {notebook} not found (expected notebooks/report.ipynb in the checkout)")
    runs_dir = Path(runs_dir)
    dest = Path(out_dir) / preset
    dest.mkdir(parents=True, exist_ok=True)
    grids_dir = Path(grids_dir) if grids_dir else root / "notebooks"
    bench_md = Path(bench_md) if bench_md else Path(out_dir) / "bench" / "bench.md"
    ensure_kernel(KERNEL_NAME)
    cwd = Path.cwd()
    params = {"preset": preset, "runs_dir": _rel(runs_dir, cwd), "out_dir": _rel(dest, cwd),
              "grids_dir": _rel(grids_dir, cwd), "bench_md": _rel(bench_md, cwd)}
    executed = dest / "report.ipynb"
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=KERNEL_NAME,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],   # no kernel start-up chatter
                            cwd=str(cwd), progress_bar=False, log_output=False, execution_timeout=timeout)
    except pm.PapermillExecutionError as e:
        raise RuntimeError(f"the report notebook failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                           f"(executed notebook kept at {executed})") from e
    return export_html(executed, dest / "report.html", title=f"attnrepro report: {preset}")


# ================================================================================================= CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None,
                        help="preset whose runs to report (default: the only preset under --runs-dir, else smoke)")
    parser.add_argument("--runs-dir", default=None, help="runs root (default: runs, or $ATTNREPRO_RUNS)")
    parser.add_argument("--out", default="reports",
                        help="reports root; the report goes to OUT/<preset>/report.html (default: reports)")


def run(args: argparse.Namespace) -> int:
    from .cli import UsageError

    runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    preset = args.preset
    if preset is None:
        found = sorted(p.name for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.is_dir() else []
        if len(found) > 1:
            raise UsageError(f"several presets under {runs_dir}: {', '.join(found)}; choose one with --preset")
        preset = found[0] if found else "smoke"
    if not runs_dir.is_dir():
        print(f"attnrepro report: note: {runs_dir} does not exist; the report will say there are no runs",
              file=sys.stderr)
    out = build_report(preset, runs_dir, args.out)
    print(out)
    return 0
