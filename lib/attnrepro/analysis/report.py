"""``attnrepro report``: the runs of a preset -> ``reports/<preset>/report.html`` (self-contained) + CSV tables.

The command executes ``notebooks/report.ipynb`` with papermill (kernel ``attnrepro``) and exports it with nbconvert
to HTML with the code hidden and the figures embedded as ``data:`` URIs, so the file needs nothing beside it. The
notebook is thin: it builds a :class:`Report` and displays what its ``*_items`` methods return (the functions of
:mod:`.sections`); this package holds the logic so that tests can check it without a kernel.

Every number comes from the files under ``runs/<preset>/`` (through :mod:`.results`); the papers' numbers come from
``claims.yaml`` and are shown as reported, beside the measurements (:mod:`.claims`). The "Paper tables" section sets
every params / GFLOPs row of the papers beside the models this suite builds, under each counting convention of
:mod:`.tables`; it and the cost claims share one count per model (:func:`.counting.measure` is cached for the
process).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .._io import atomic_write_text
from ..pipeline.execution import KERNEL_NAME, ensure_kernel  # one kernel name, one installer
from ..design import AnalysisSpec
from . import figures, findings, results, sections
from .claims import claim_comparisons, evaluate_claims, load_claims
from .comparisons import compare, effective_alpha, family_size, rule_text
from .sections import _repo_root

__all__ = ["build_report", "export_html", "Report", "expected_runs", "preset_spec", "ABLATIONS", "KERNEL_NAME"]

ABLATIONS = ("kernel", "radius_init", "placement", "baseline")


class Report:
    """Everything the report notebook shows, computed from the run folders of one preset; its sections are the
    functions of :mod:`.sections` (the methods below hand ``self`` to them).

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
        self.grids_dir = grids_dir
        self.bench_md = Path(bench_md) if bench_md else None
        self.runs = results.load_runs(self.runs_dir, preset, grids_dir=grids_dir)
        self.curves = results.load_curves(self.runs_dir, preset)
        self.radii = results.load_radii(self.runs_dir, preset)
        self.expected_from = "the seeds found (every variant of an ablation with every seed any variant has)"
        expected = None
        if len(self.runs) and "+" not in preset:   # a <preset>+<key>=<value> folder holds what its user ran
            expected = expected_runs(preset, results.ablations(self.runs), grids_dir)
            if expected is not None:
                self.expected_from = (f"the grids and preset {preset.split('+', 1)[0]}.yaml (attnrepro.pipeline), "
                                      "and the seeds run")
        self.missing = results.missing_runs(self.runs, expected)
        self.spec = preset_spec(preset, grids_dir)
        self.claims_data = load_claims(claims_path)
        self.comparisons = compare(self.runs, self.spec, extra=claim_comparisons(self.runs, self.claims_data),
                                   claims=self.claims_data)
        self.claims = evaluate_claims(self.runs, self.claims_data, self.comparisons, self.spec)
        found = results.ablations(self.runs)
        self.ablation_names = list(ABLATIONS) + [a for a in found if a not in ABLATIONS]
        self.tables = {a: results.ablation_table(self.runs, a, missing=self.missing) for a in found}
        self.findings = findings.findings(self.tables, self.comparisons)
        self.built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.figures_dir: Path | None = None
        self._paper_table: pd.DataFrame | None = None

    @property
    def paper_table(self) -> pd.DataFrame:
        """:func:`.tables.build_tables` (the papers' params / GFLOPs rows beside the built models), computed
        on first use."""
        if self._paper_table is None:
            from . import tables
            self._paper_table = tables.build_tables()
        return self._paper_table

    @property
    def design(self) -> dict[str, Any]:
        """The analysis design as applied (``analysis.json``): level, correction, margin and its reason, whether the
        family was declared, its size, the rule in words."""
        m = family_size(self.comparisons)
        s = self.spec
        return {"alpha": s.alpha, "correction": s.correction, "delta": s.delta, "delta_why": s.delta_why,
                "family_declared": s.declared, "family_size": m, "effective_alpha": effective_alpha(s, m),
                "stands_for": dict(s.stands_for), "note": s.note, "rule": rule_text(s, m)}

    # ------------------------------------------------------------------ files
    def write_csvs(self, out_dir: str | Path) -> list[Path]:
        """``runs.csv`` (one row per run, missing ones included), ``<ablation>.csv``, ``claims.csv``,
        ``findings.csv`` (:mod:`.findings`), ``comparisons.csv`` (:mod:`.comparisons`), ``paper_tables.csv`` and
        ``analysis.json`` (:attr:`design`); the figures the report then draws are also saved as
        ``figures/<ablation>-<i>.png`` beside them."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.figures_dir = out / "figures"
        paths = [out / "analysis.json"]
        atomic_write_text(paths[0], json.dumps(self.design, indent=1) + "\n")
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

    def config_differences(self, ablation: str | None = None) -> dict[str, str]:
        """``{key: text}``: the run-config keys (other than the seed and keys outside the hash) in which runs differ
        from what the grids and the preset declare for them, e.g. ``{"radius_init": "2.0 declared, 4.0 in 8 runs"}``
        for a ``<preset>+radius_init=4.0`` folder. Empty when every run is what its preset declares (or the preset
        cannot be expanded here)."""
        if not len(self.runs):
            return {}
        from ..config import _NOT_HASHED
        from .. import pipeline
        runs = self.runs if ablation is None else self.runs[self.runs["ablation"] == ablation]
        try:
            declared = pipeline.expand(sorted(set(runs["ablation"])), pipeline.base_preset(self.preset),
                                       nb_dir=self.grids_dir, seeds=sorted({int(s) for s in runs["seed"]}))
        except Exception:  # noqa: BLE001 - an unknown preset or a grid that no longer validates: nothing to compare
            return {}
        want = {(r.ablation, r.variant, r.seed): r.config.to_dict() for r in declared}
        seen: dict[str, dict[tuple, int]] = {}
        for row in runs.itertuples():
            w = want.get((row.ablation, row.variant, int(row.seed)))
            cfg = row.config if isinstance(row.config, dict) else {}
            if w is None or not cfg:
                continue
            for k, v in cfg.items():
                if k in _NOT_HASHED or k == "seed" or k not in w or w[k] == v:
                    continue
                key = (repr(w[k]), repr(v))
                seen.setdefault(k, {})[key] = seen.setdefault(k, {}).get(key, 0) + 1
        return {k: "; ".join(f"{a} declared, {b} in {n} run(s)" for (a, b), n in sorted(vals.items()))
                for k, vals in sorted(seen.items())}

    # ------------------------------------------------------------------ sections
    def _counts(self) -> dict[str, int]:
        s = self.runs["status"] if len(self.runs) else pd.Series(dtype=str)
        return {"found": len(self.runs), "finished": int((s == "finished").sum()), "failed": int((s == "failed").sum()),
                "incomplete": int((s == "incomplete").sum()), "missing": len(self.missing),
                **({"corrupt": int((s == "corrupt").sum())} if (s == "corrupt").any() else {})}

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

    def _png(self, fig, name: str) -> bytes:
        """The figure as PNG bytes; after :meth:`write_csvs`, also saved as ``figures/<name>.png``."""
        png = figures.to_png(fig)
        if self.figures_dir is not None:
            self.figures_dir.mkdir(parents=True, exist_ok=True)
            (self.figures_dir / f"{name}.png").write_bytes(png)
        return png

    @staticmethod
    def show(items: Iterable) -> None:
        from IPython.display import display

        for it in items:
            display(it)

    # ------------------------------------------------------------------ sections (see .sections)
    def header_items(self) -> list:
        return sections.header_items(self)

    def findings_items(self) -> list:
        return sections.findings_items(self)

    def provenance_items(self, header: bool = True) -> list:
        return sections.provenance_items(self, header)

    def ablation_items(self, ablation: str) -> list:
        return sections.ablation_items(self, ablation)

    def figures(self, ablation: str) -> list[tuple[bytes, str]]:
        return sections.ablation_figures(self, ablation)

    def map_panels(self, ablation: str, max_panels: int = 8) -> list[dict[str, Any]]:
        return sections.map_panels(self, ablation, max_panels)

    def claims_items(self) -> list:
        return sections.claims_items(self)

    def paper_tables_items(self) -> list:
        return sections.paper_tables_items(self)

    def bench_items(self) -> list:
        return sections.bench_items(self)

    def style_items(self) -> list:
        return sections.style_items(self)


def preset_spec(preset: str, grids_dir: str | Path | None = None) -> AnalysisSpec:
    """The ``analysis`` section of ``<grids_dir>/presets/<preset>.yaml`` (:mod:`attnrepro.design`); every default
    when there is no such preset (a runs folder of a preset whose YAML is elsewhere)."""
    from ..errors import UsageError
    from ..pipeline.grids import load_preset, notebooks_dir

    from ..pipeline.grids import base_preset
    try:
        return load_preset(notebooks_dir(grids_dir), base_preset(preset))["analysis_spec"]
    except UsageError:
        return AnalysisSpec()


def expected_runs(preset: str, ablations: Iterable[str], grids_dir: str | Path | None = None
                  ) -> pd.DataFrame | None:
    """``preset, ablation, variant, seed`` of the runs the grids and the preset call for, from
    :func:`attnrepro.pipeline.expand` (without CLI overrides: a ``<preset>+<key>=<value>`` folder expects what its
    preset does); None when that cannot be worked out (an unknown preset or ablation, a grid that does not
    validate, no pipeline)."""
    try:
        from .. import pipeline

        runs = pipeline.expand(list(ablations), pipeline.base_preset(preset), nb_dir=grids_dir)
    except Exception:  # noqa: BLE001 - the report then infers what is expected from the runs found
        return None
    return pd.DataFrame([{"preset": preset, "ablation": r.ablation, "variant": r.variant, "seed": int(r.seed)}
                         for r in runs], columns=["preset", "ablation", "variant", "seed"])


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
        from ..errors import UsageError
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
