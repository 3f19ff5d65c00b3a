"""The analysis half's command-line verbs: ``attnrepro report``, ``compare``, ``findings``, ``tables`` and ``plan``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..pipeline.grids import default_runs_dir
from .counting import CONVENTIONS
from .findings import report_markdown, update_readme
from .results import preset_folders
from .report import build_report
from .tables import build_tables, column_verdicts, write_tables

__all__ = ["configure_report", "run_report", "configure_compare", "run_compare", "configure_findings",
           "run_findings", "configure_tables", "run_tables", "configure_plan", "run_plan"]


def configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None,
                        help="preset whose runs to report (default: the only preset under --runs-dir, else smoke)")
    parser.add_argument("--runs-dir", default=None, help="runs root (default: runs, or $ATTNREPRO_RUNS)")
    parser.add_argument("--out", default="reports",
                        help="reports root; the report goes to OUT/<preset>/report.html (default: reports)")


def run_report(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    preset = args.preset
    if preset is None:
        found = [p.name for p in preset_folders(runs_dir)]
        if len(found) > 1:
            raise UsageError(f"several presets under {runs_dir}: {', '.join(found)}; choose one with --preset")
        preset = found[0] if found else "smoke"
    _check_preset(preset, runs_dir)
    if not runs_dir.is_dir():
        print(f"attnrepro report: note: {runs_dir} does not exist; the report will say there are no runs",
              file=sys.stderr)
    out = build_report(preset, runs_dir, args.out)
    print(out)
    return 0


def _check_preset(preset: str, runs_dir: Path) -> None:
    """A preset with neither a preset file (``notebooks/presets/``) nor a runs folder is a typo: exit 2 with the
    choices, before any notebook starts. (A preset's ``+key=value`` folder counts as that preset's.)"""
    from ..pipeline.grids import base_preset, list_presets, notebooks_dir
    folders = [p.name for p in preset_folders(runs_dir)]
    try:
        declared = list_presets(notebooks_dir())
    except UsageError:
        declared = []
    if preset in folders or base_preset(preset) in declared:
        return
    raise UsageError(f"unknown preset {preset!r}: no notebooks/presets/{preset}.yaml and no folder {runs_dir / preset}; "
                     f"choose from: {', '.join(sorted(set(declared) | set(folders))) or '(none)'}")


def configure_compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ablation", metavar="ABLATION", help="the ablation whose variants to compare, e.g. baseline")
    parser.add_argument("a", metavar="A", help="the variant compared with (the delta is B minus A), e.g. se")
    parser.add_argument("b", metavar="B", help="the variant compared, e.g. cbam")
    parser.add_argument("--preset", required=True, help="preset whose run records to read (runs/<preset>/)")
    parser.add_argument("--runs-dir", default=None, help="runs root (default: runs, or $ATTNREPRO_RUNS)")
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR",
                        help="the folder of the grids and presets/ (default: the repository's notebooks/)")
    parser.add_argument("--json", action="store_true", help="print the comparison's row as JSON")


def run_compare(args: argparse.Namespace) -> int:
    """B minus A, paired by seed, as the report computes it (:func:`.comparisons.compare_pair`)."""
    import json
    import math

    from ..pipeline.grids import notebooks_dir
    from . import results
    from .claims import claim_comparisons, load_claims
    from .comparisons import compare_pair
    from .report import preset_spec

    runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    nbd = notebooks_dir(args.notebooks_dir)
    runs = results.load_runs(runs_dir, args.preset, grids_dir=nbd)
    if runs.empty:
        found = [p.name for p in preset_folders(runs_dir)]
        raise UsageError(f"no run records of preset {args.preset!r} under {runs_dir}"
                         + (f"; presets with records: {', '.join(found)}" if found else ""))
    abls = results.ablations(runs)
    if args.ablation not in abls:
        raise UsageError(f"unknown ablation {args.ablation!r} in preset {args.preset!r}; choose from: "
                         f"{', '.join(abls)}")
    variants = sorted(set(runs.loc[runs["ablation"] == args.ablation, "variant"]), key=results.natural_key)
    for v in (args.a, args.b):
        if v not in variants:
            raise UsageError(f"unknown variant {v!r} of {args.preset}/{args.ablation}; choose from: "
                             f"{', '.join(variants)}")
    if args.a == args.b:
        raise UsageError(f"A and B are both {args.a!r}; compare two different variants of: {', '.join(variants)}")
    spec = preset_spec(args.preset, nbd)
    claims = load_claims()
    row = compare_pair(runs, args.ablation, args.b, args.a, spec, claims=claims,
                       extra=claim_comparisons(runs, claims))
    if args.json:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        print(json.dumps(clean, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        return 0
    print(_compare_text(row, args.preset))
    return 0


def _compare_text(row: dict, preset: str) -> str:
    def pt(x: float) -> str:
        return "n/a" if x is None or x != x else f"{x:+.2f}"

    def num(x: float, f: str = ".3g") -> str:
        return "n/a" if x is None or x != x else format(x, f)

    b, a = row["variant"], row["reference"]
    lines = [f"{preset} / {row['ablation']}: {b} vs {a} (final top-1 of {b} minus {a}, paired by seed)",
             f"  paired seeds   {row['n_pairs']}: {' '.join(map(str, row['seeds'])) or '-'}",
             f"  mean top-1     {b} {num(row['mean'], '.2f')}, {a} {num(row['ref_mean'], '.2f')} (every finished run)",
             f"  delta          {pt(row['delta'])} pt, 95% t interval [{pt(row['delta_low'])}, "
             f"{pt(row['delta_high'])}], paired SD {num(row['sd'], '.2f')}",
             f"  paired t       p = {num(row['p'])}; sign-flip p = {num(row['signflip_p'])}"]
    corr = row["correction"]
    if row["verdict"] == "no pairs":
        lines.append("  verdict        no pairs (fewer than two seeds where both finished)")
    elif row["verdict"] == "not in family":
        lines += [f"  verdict        not in the preset's family ({row['family_size']} hypotheses, corrected by "
                  f"{corr}): the report does not judge it",
                  f"  judged alone   {row['alone']} (the report's verdict rule at alpha = {row['alpha']:g}, "
                  "without correction: exploratory)"]
    else:
        same = f"; the same runs as {row['same_as']}" if row.get("same_as") else ""
        lines += [f"  verdict        {row['verdict']} (in the preset's family of {row['family_size']}, {corr}: "
                  f"adjusted p = {num(row['p_adj'])}, interval at level {num(row['level'], '.4f')}: "
                  f"[{pt(row['adj_low'])}, {pt(row['adj_high'])}]{same})"]
    if row.get("tost_p") is not None and row["tost_p"] == row["tost_p"]:
        lines.append(f"  equivalence    TOST p = {num(row['tost_p'])} against +-{row['margin']:g} pt"
                     + (f", adjusted {num(row['tost_p_adj'])}" if row["tost_p_adj"] == row["tost_p_adj"] else ""))
    return "\n".join(lines)


def configure_findings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="preset whose report tables to read (reports/<preset>/)")
    parser.add_argument("--reports", default="reports", help="reports root (default: reports)")
    parser.add_argument("--readme", default=None, metavar="FILE",
                        help="rewrite the preset's findings block in FILE (between its markers) instead of printing")


def run_findings(args: argparse.Namespace) -> int:
    d = Path(args.reports) / args.preset
    body = report_markdown(d, args.preset)
    if body is None:
        raise UsageError(f"no ablation tables under {d}; build them with `attnrepro report --preset {args.preset}`")
    if args.readme:
        try:
            changed = update_readme(args.readme, args.preset, body)
        except ValueError as e:
            raise UsageError(str(e)) from e
        print(f"{args.readme}: findings block {'updated' if changed else 'already up to date'}")
    else:
        print(body, end="")
    return 0


def configure_tables(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(Path("reports") / "tables"),
                        help="folder for paper_tables.csv and paper_tables_conventions.csv (default: reports/tables)")
    parser.add_argument("--convention", nargs="+", choices=tuple(CONVENTIONS), default=None, metavar="NAME",
                        help="only these counting conventions (default: all): " + ", ".join(CONVENTIONS))


def run_tables(args: argparse.Namespace) -> int:
    table = build_tables(conventions=args.convention)
    paths = write_tables(args.out, table)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 40):
        view = table[["model", "quantity", "convention", "reported", "measured", "residual", "matches"]]
        print(view.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print()
    for line in column_verdicts(table):
        print(line)
    for p in paths:
        print(p, file=sys.stderr)
    return 0


def configure_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="preset whose run records give the paired SDs")
    parser.add_argument("--delta", type=float, required=True, metavar="PP",
                        help="the true difference to detect, percentage points of top-1")
    parser.add_argument("--power", type=float, default=0.8, help="the power to detect it with (default 0.8)")
    parser.add_argument("--family-size", type=int, default=None, metavar="M",
                        help="the number of distinct comparisons the new design will judge together (default: the "
                             "preset's own family)")
    parser.add_argument("--sd", type=float, default=None, help="plan with this paired SD instead of the records'")
    parser.add_argument("--runs-dir", default=None, help="runs root (default: runs, or $ATTNREPRO_RUNS)")
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR",
                        help="the folder of the grids and presets/ (default: the repository's notebooks/)")


def run_plan(args: argparse.Namespace) -> int:
    from ..pipeline.grids import list_presets, notebooks_dir
    from . import results
    from .claims import load_claims
    from .plan import format_plan, plan_for, plan_table
    from .report import preset_spec

    nbd = notebooks_dir(args.notebooks_dir)
    if args.preset not in list_presets(nbd):
        raise UsageError(f"unknown preset {args.preset!r}; choose from: {', '.join(list_presets(nbd))}")
    for name, v, low in (("--delta", args.delta, 0.0), ("--sd", args.sd, 0.0)):
        if v is not None and not v > low:
            raise UsageError(f"{name} {v}: must be > 0")
    if not 0 < args.power < 1:
        raise UsageError(f"--power {args.power}: must lie in (0, 1)")
    if args.family_size is not None and args.family_size < 1:
        raise UsageError(f"--family-size {args.family_size}: must be >= 1")
    runs_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    runs = results.load_runs(runs_dir, args.preset, grids_dir=nbd)
    if runs.empty and args.sd is None:
        raise UsageError(f"no run records of preset {args.preset!r} under {runs_dir}; run it first, or give --sd")
    spec = preset_spec(args.preset, nbd)
    comp = plan_for(runs, spec, load_claims())
    table, m, alpha = plan_table(comp, spec, args.delta, power=args.power, m=args.family_size, sd=args.sd)
    print(format_plan(table, args.preset, spec, args.delta, args.power, m, alpha, args.sd))
    return 0
