"""The sections of the report, as lists of IPython display items: each a function of ``rep``, a
:class:`~.report.Report` (not imported here: the report imports this module), which holds the numbers (computed in
:mod:`.results`, :mod:`.findings`, :mod:`.claims` and :mod:`.tables`). The
report notebook shows them in order; nothing here computes a statistic."""
from __future__ import annotations

import html
import math
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from . import figures, findings, results
from .formats import bold_best, display_table, plain_table

__all__ = ["header_items", "findings_items", "provenance_items", "ablation_items", "ablation_figures", "map_panels",
           "claims_items", "paper_tables_items", "bench_items", "style_items"]


_ABLATION_TEXT = {
    "kernel": "ExpAtt with each distance kernel k(d; r) (uniform = global-average control).",
    "radius_init": "ExpAtt with different initial radii (and frozen radii where the grid has them).",
    "placement": "Which residual stages get the attention.",
    "baseline": "The plain backbone and every attention module ({modules}) with the same recipe.",
}


def _modules_text(runs: pd.DataFrame, ablation: str) -> str:
    """The attention kinds an ablation's runs have, named as the registry titles them (``AW+SE``; a kind no
    loaded plugin registers keeps its name), in the registry's order."""
    from .. import registry

    kinds = [k for k in dict.fromkeys(runs.loc[runs["ablation"] == ablation, "attention"].dropna().astype(str))
             if k != "none"]
    order = {k: i for i, k in enumerate(registry.model_kinds())}
    kinds.sort(key=lambda k: (order.get(k, len(order)), k))
    return ", ".join(registry.title(k) for k in kinds) or "those of its grid"


def _ablation_text(rep, ablation: str) -> str:
    text = _ABLATION_TEXT.get(ablation, "")
    if "{modules}" in text:
        found = len(rep.runs) and {"ablation", "attention"} <= set(rep.runs.columns)
        text = text.format(modules=_modules_text(rep.runs, ablation) if found else "those of its grid")
    return text


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


def _repo_root() -> Path:
    """The checkout that holds this package (``lib/attnrepro/analysis/`` is three levels below it)."""
    return Path(__file__).resolve().parents[3]


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


def header_items(rep) -> list:
    """The title, what the numbers are, and the scale warning."""
    from IPython.display import HTML

    c = rep._counts()
    items = [HTML(f"<h1>attnrepro report: preset <code>{html.escape(rep.preset)}</code></h1>")]
    where = f"runs/{html.escape(rep.preset)}"
    if c["found"] == 0:
        items.append(HTML(f"<p class='ar-warn'><b>No runs found under <code>{where}</code>.</b> Nothing in this "
                          f"report is measured: run <code>attnrepro run ABLATION... --preset "
                          f"{html.escape(rep.preset)}</code> first. The claims below are all "
                          "<i>not testable</i>.</p>"))
    else:
        items.append(HTML(f"<p>Every number below is computed from the files under <code>{where}</code>; the "
                          "papers' numbers are quoted from <code>claims.yaml</code>. Accuracies are percent; "
                          "intervals are two-sided 95% Student-t intervals over seeds; deltas are paired by "
                          "seed.</p>"))
    warn = rep._scale_warning()
    if warn:
        items.append(HTML(f"<p class='ar-warn'><b>Scale.</b> {html.escape(warn)}</p>"))
    return items


def _design_html(rep) -> str:
    """What the preset declares about its analysis, in words."""
    d = rep.design
    corr = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "none"}[d["correction"]]
    fam = "declared by the preset" if d["family_declared"] else ("the default: every variant against its ablation's "
                                                                  "reference and every accuracy claim's comparison")
    delta = (f"smallest effect of interest δ = {d['delta']:g} points ({html.escape(d['delta_why'] or '')})"
             if d["delta"] else "no smallest effect of interest declared (so nothing is called equivalent)")
    out = (f"<p><b>Design.</b> α = {d['alpha']:g}, correction: {corr}; family: {fam}, {d['family_size']} distinct "
           f"hypotheses (strictest level {d['effective_alpha']:.4g}); {delta}.")
    if d.get("note"):
        out += f" <i>{html.escape(d['note'])}</i>"
    return out + "</p>"


def comparisons_table(rep) -> pd.DataFrame:
    """Every comparison with its verdict and, beside it, the robustness figures (display strings)."""
    rows = []
    for c in rep.comparisons.itertuples():
        n = int(c.n_pairs)
        ok = n >= 2
        rows.append({
            "comparison": f"{c.ablation}: {c.variant} vs {c.reference}",
            "n": n, "Δ pp [95% CI]": findings._interval(c.delta, c.delta_low, c.delta_high) if n else "—",
            "p": findings.pfmt(c.p), "adjusted p": findings.pfmt(c.p_adj), "TOST adj. p": findings.pfmt(c.tost_p_adj),
            "verdict": str(c.verdict) + (f" (= {c.same_as})" if c.same_as else ""),
            "sign-flip p": (findings.pfmt(c.signflip_p) + ("" if c.signflip_exact else " (MC)")) if ok else "—",
            "LOSO kept": f"{int(c.loso_kept)}/{n}" if ok and math.isfinite(c.loso_kept) else "—",
            "P(var > ref)": f"{c.p_superiority:.2f}" if math.isfinite(c.p_superiority) else "—",
            "Welch 95% CI": f"[{c.welch_low:+.2f}, {c.welch_high:+.2f}]" if math.isfinite(c.welch_low) else "—",
            "80%-power effect": f"{c.mde80:.2f}" if math.isfinite(c.mde80) else "—"})
    return pd.DataFrame(rows)


def findings_items(rep) -> list:
    """"Findings": the design, the family-wise verdicts of :mod:`.comparisons` (the rule shown), per ablation the
    reference, the best variant and what is resolved, every comparison with its robustness figures, and the
    paired-deltas figure."""
    from IPython.display import HTML

    items = [HTML("<h2>Findings</h2>")]
    if rep.findings.empty and rep.comparisons.empty:
        return items + [HTML("<p>No ablation with a reference variant and finished runs: nothing to find.</p>")]
    mh = findings.median_half(rep.comparisons)
    lis = "".join(f"<li><b>{html.escape(str(f.ablation))}</b>: {html.escape(str(f.finding))}</li>"
                  for f in rep.findings.itertuples())
    small = sorted({int(n) for n in rep.comparisons["n_pairs"] if 2 <= int(n) < 6})
    floor = ("<p class='ar-warn'>With n &lt; 6 paired seeds the exact sign-flip test cannot reach 5% (its smallest "
             f"two-sided p is 2/2<sup>n</sup>: {', '.join(f'{findings.pfmt(2 / 2 ** n)} at n = {n}' for n in small)}"
             "); the verdicts then rest on the t-test's normality.</p>") if small else ""
    items.append(HTML(
        _design_html(rep) +
        "<p>" + (f"Median 95% half-width of the paired deltas: <b>{mh:.2f} points</b>. " if math.isfinite(mh)
                 else "") +
        f"The datasets and models are this preset's ({html.escape(_counts_text(rep.runs['dataset'].astype(str)))}"
        "), not the papers' ImageNet ones.</p>"
        f"<p>{html.escape(findings.resolved_sentence(rep.comparisons, rep.spec.delta))}</p><ul>{lis}</ul>"
        "<details><summary>The verdict rule</summary>"
        f"<p class='ar-rule'>{html.escape(rep.design['rule'] + ' ' + findings.BEST_RULE)}</p></details>" + floor))
    if len(rep.comparisons):
        items.append(plain_table(comparisons_table(rep)))
        items.append(HTML("<p class='ar-cap'>n: paired seeds; ± and [ ]: 95% intervals; adjusted p: corrected across "
                          "the family; TOST: equivalence within ±δ. Beside the verdict, not part of it: the exact "
                          "sign-flip p (MC: Monte Carlo above 20 pairs), how many leave-one-seed-out deletions keep "
                          "the verdict, P(variant > reference) over all pairs of runs, Welch's unpaired interval "
                          "(a check on the pairing), and the effect detectable with 80% power at the correction's "
                          "strictest level with this n and paired SD.</p>"))
    fig = figures.paired_deltas(rep.comparisons)
    if fig is not None:
        items += [_image(rep._png(fig, "findings-deltas")),
                  HTML("<p class='ar-cap'>Each distinct comparison's paired Δ top-1. Wide bar: the interval at the "
                       "level its corrected test used (1 − α·p/adjusted p; it excludes 0 exactly when the "
                       "family-wise verdict is above or below); whiskers: the raw 95% t interval. Green: above, red: below, blue: "
                       "equivalent within ±δ, grey: inconclusive.</p>")]
    return items


def provenance_items(rep, header: bool = True) -> list:
    """The provenance table and the failed, incomplete and missing runs (after :meth:`header_items` when
    ``header``)."""
    from IPython.display import HTML

    c = rep._counts()
    items = header_items(rep) if header else []
    items.append(HTML("<h2>Provenance</h2>"))
    rows = [("preset", rep.preset), ("report built", rep.built),
            ("report code (git)", _git_describe(_repo_root())),
            ("runs found", f"{c['found']}: {c['finished']} finished, {c['failed']} failed, "
                           f"{c['incomplete']} incomplete; {c['missing']} expected but missing"),
            ("runs expected from", rep.expected_from if c["found"] else "—")]
    r = rep.runs
    if len(r):
        rows += [("runs' code (git)", _counts_text(r["git_commit"])),
                 ("training code", results.training_code_text(results.training_code(rep.runs_dir, rep.preset))),
                 ("config keys unlike the preset's", "; ".join(f"{k}: {v}" for k, v in
                                                             rep.config_differences().items()) or "none"),
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
    items.append(plain_table(pd.DataFrame(rows, columns=["", "value"])))
    bad = rep.problem_runs()
    if len(bad):
        items.append(HTML("<h3>Failed, incomplete and missing runs</h3>"))
        items.append(plain_table(bad))
    elif c["found"]:
        items.append(HTML("<p>No failed, incomplete or missing runs.</p>"))
    return items


def ablation_items(rep, ablation: str) -> list:
    from IPython.display import HTML

    items = [HTML(f"<h2>Ablation: {html.escape(ablation)}</h2>")]
    text = _ablation_text(rep, ablation)
    table = rep.tables.get(ablation)
    if table is None or table.empty:
        items.append(HTML(f"<p>{html.escape(text)} <b>No runs of this ablation under "
                          f"<code>runs/{html.escape(rep.preset)}/{html.escape(ablation)}</code>.</b></p>"))
        return items
    ref = results.reference_variant(rep.runs, ablation)
    varied = sorted({k for v in rep.runs[rep.runs["ablation"] == ablation]["varied"] for k in (v or {})})
    differs = rep.config_differences(ablation)
    also = (" Also set for every run, unlike the preset declares: " +
            "; ".join(f"{k} ({v})" for k, v in differs.items()) + ".") if differs else ""
    items.append(HTML(f"<p>{html.escape(text)} Varied: {html.escape(', '.join(varied) or '—')}."
                      f"<b>{html.escape(also)}</b> Reference "
                      f"variant: <b>{html.escape(ref or 'none marked: no deltas')}</b>. Best value per "
                      "column in bold (top-1, Δ, images/s: highest; params, MACs: lowest).</p>"))
    items.append(bold_best(*display_table(table)))
    for fig, caption in ablation_figures(rep, ablation):
        items.append(_image(fig))
        items.append(HTML(f"<p class='ar-cap'>{html.escape(caption)}</p>"))
    return items


def ablation_figures(rep, ablation: str) -> list[tuple[bytes, str]]:
    """(PNG bytes, caption) for each figure of the ablation that has data; after :meth:`write_csvs`, each is also
    saved as ``figures/<ablation>-<name>.png``."""
    out = []
    table = rep.tables.get(ablation)

    def add(name, fig, caption):
        if fig is not None:
            out.append((rep._png(fig, f"{ablation}-{name}"), caption))

    add("curves", figures.accuracy_curves(rep.curves, ablation),
        "Validation top-1 per epoch, finished runs only; band: 95% t interval over seeds (none with one seed).")
    ref = results.reference_variant(rep.runs, ablation)
    if ref is not None:
        add("paired_seeds", figures.paired_seeds(rep.runs, ablation, ref),
            f"Each seed a line from {ref} to the variant (final top-1), one colour per seed in every panel: a "
            "seed that is bad for every variant shows as the same colour falling everywhere.")
    if ablation == "baseline" and table is not None:
        add("top1_vs_macs", figures.accuracy_vs_cost(table, "macs"),
            "Final top-1 (mean, 95% t interval) against fvcore MACs per image (1 MAC = 1 fused multiply-add).")
    if ablation == "placement" and table is not None:
        add("top1_by_placement", figures.accuracy_by_variant(table, xlabel="placement"),
            "Final top-1 per placement (mean over seeds, 95% t interval).")
    if len(rep.radii) and (rep.radii["ablation"] == ablation).any():
        add("radius", figures.radius_over_training(rep.radii, ablation),
            "Learned ExpAtt radius per layer (mean over heads and seeds; band: 95% t over seeds). "
            "Epoch 0 is radius_init from config.json.")
        panels = map_panels(rep, ablation)
        add("attention_maps", figures.attention_maps(panels),
            "Attention of the centre pixel of the first ExpAtt layer's feature map at each variant's final "
            "learned radius (median over layers, heads and finished seeds).")
        if ablation == "kernel":
            shapes = [{"label": p["label"], "kernel": p["kernel"], "radius": p["radius"]} for p in panels]
            add("kernel_shapes", figures.kernel_shapes(shapes),
                "k(d; r) of each kernel variant at its learned radius (uniform ignores r).")
    return out


def map_panels(rep, ablation: str, max_panels: int = 8) -> list[dict[str, Any]]:
    """One heatmap spec per variant with learned radii: median final radius, kernel, feature size."""
    runs = rep.runs[(rep.runs["ablation"] == ablation) & (rep.runs["status"] == "finished")]
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


def claims_items(rep) -> list:
    from IPython.display import HTML

    rule = rep.claims_data.get("rule", "")
    d = rep.claims_data.get("defaults", {})
    items = [HTML("<h2>The papers' claims beside these runs</h2>"),
             HTML(f"<p>Each claim is put beside the nearest comparison in these runs. min_seeds = "
                  f"{d.get('min_seeds')}, min_epochs = {d.get('min_epochs')}, confidence = "
                  f"{d.get('confidence')}. Measured: paired Δ top-1 in percentage points [95% CI] (n = paired "
                  "seeds), or, for cost claims, the relative difference between the paper's models built "
                  "here at the paper's input size (no runs needed), judged against the claimed one with the "
                  "tolerance each claim declares.</p>"
                  f"<details><summary>The status rule (claims.yaml)</summary><pre class='ar-rule'>"
                  f"{html.escape(rule)}</pre></details>")]
    cl = rep.claims
    tab = pd.DataFrame({"claim": cl["claim"], "paper": cl["paper"], "reported": cl["reported"],
                        "nearest comparison": cl["comparison"], "measured": cl["measured"],
                        "status": cl["status"], "why": cl["why"]})

    def colour(_: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame("", index=tab.index, columns=tab.columns)
        out["status"] = tab["status"].map({"consistent": "color: #1a7f37; font-weight: bold",
                                           "inconsistent": "color: #cf222e; font-weight: bold",
                                           "not testable": "color: #6e7781"}) + "; white-space: nowrap"
        return out

    sty = plain_table(tab).apply(colour, axis=None)
    items.append(sty)
    counts = cl["status"].value_counts()
    items.append(HTML("<p>" + ", ".join(f"{k}: {counts.get(k, 0)}"
                                        for k in ("consistent", "inconsistent", "not testable")) + ".</p>"))
    return items


def paper_tables_items(rep) -> list:
    from IPython.display import HTML

    from . import tables

    t = rep.paper_table
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
    items.append(plain_table(tables.wide(t)))
    return items


def bench_items(rep) -> list:
    from IPython.display import HTML, Markdown

    if rep.bench_md is None or not rep.bench_md.is_file():
        return [HTML("<h2>Benchmarks</h2><p>No benchmark table (<code>reports/bench/bench.md</code>): run "
                     "<code>attnrepro bench</code> to add one.</p>")]
    import re

    # included as is, its headings moved two levels down to sit under this section's heading
    text = re.sub(r"^(#{1,4})(?=\s)", r"\1##", rep.bench_md.read_text(), flags=re.M)
    return [HTML("<h2>Benchmarks</h2><p>From <code>reports/bench/bench.md</code> (written by "
                 "<code>attnrepro bench</code>), included as is.</p>"), Markdown(text)]


def style_items(rep) -> list:
    from IPython.display import HTML

    return [HTML("<style>.ar-warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;}"
                 ".ar-cap{color:#555;font-size:12px;margin-top:0;} .ar-rule{white-space:pre-wrap;font-size:12px;}"
                 " img{max-width:100%;height:auto;}</style>")]
