"""``attnrepro tables``: the papers' params / GFLOPs rows beside what this suite builds, under named counting
conventions.

Every row the seed papers print with a parameter count or a GFLOPs figure is set beside the model this suite builds
for it (:func:`attnrepro.models.build_model`, counted with :mod:`attnrepro.flops`). The papers' numbers are typed
once, as printed: the AA paper's ImageNet and CIFAR-100 rows in ``paper_tables.yaml``, the ExpAtt paper's
ResNet-152 cost claims (relative to AA-ResNet-152) in ``claims.yaml``. Nothing measured is typed anywhere.

Units. ``params_M``: parameters / 1e6. ``gflops``: 2 x MACs / 1e9, the AA paper's "about twice the multiply-adds"
(fvcore counts one fused multiply-add as one). The ExpAtt rows are relative differences in percent,
``100 (ExpAtt - AA) / AA``, of params and of GFLOPs (a ratio of GFLOPs is a ratio of MACs).

Counting conventions (:data:`CONVENTIONS`). The AA paper does not say how it counts, and its GFLOPs for the AA
models do not follow from the suite's own construction and counting, so each row is computed under every combination
of three choices, and the table says which, if any, reproduces each column (and by how much the closest misses):

- **attention matmuls** counted (default) or not (``no-attention-matmuls``): the ops of
  :data:`attnrepro.flops.ATTENTION_MATMUL_OPS` (SDPA's ``Q K^T`` and ``A V``, the relative logits, ExpAtt's map
  applied to V) dropped from the count, as a counter that only sees layers (conv, linear) would.
- **where a bottleneck strides**: torchvision's "v1.5" (default: stride 2 on the 3x3 conv, so on the attention layer
  that replaces it), or ResNet v1 (``resnet-v1-strides``: stride 2 on the block's first 1x1 conv, the 3x3 and its
  replacement at stride 1 on the already downsampled map), as in TensorFlow's original ResNets. Basic blocks
  (ResNet-34) and the WRN stride on their first 3x3 either way: the choice changes nothing there.
- **the strided blocks**: augmented like the others (default; the attention runs on the average-pooled input), or
  left as plain convs (``strided-blocks-plain``: the first block of each augmented stage keeps its strided 3x3).

How a variant is counted without building a whole second model: :mod:`.counting`.

``matches`` is True when the measured value, rounded to the digits the paper prints, equals the paper's number
(``|measured - reported| <= half a unit of the last printed digit``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from .counting import (CONVENTIONS, DEFAULT_CONVENTION, Convention, ModelSpec, check_convention, claim_specs,
                       measure, relative_difference)

__all__ = ["Convention", "CONVENTIONS", "DEFAULT_CONVENTION", "ModelSpec", "PaperRow", "measure", "load_paper_rows",
           "build_tables", "summarize_conventions", "column_verdicts", "write_tables", "wide", "COLUMNS"]


COLUMNS = ["paper", "table", "model", "quantity", "unit", "convention", "reported", "measured", "residual",
           "residual_rel_pct", "tolerance", "matches", "params", "macs", "build"]


@dataclass(frozen=True)
class PaperRow:
    """One number a paper prints. ``reference`` set: ``reported`` is a relative difference in percent of ``spec``
    against ``reference``."""

    paper: str
    table: str
    model: str
    quantity: str          # params_M | gflops
    reported: float
    spec: ModelSpec
    reference: ModelSpec | None = None
    decimals: int = 1

    @property
    def unit(self) -> str:
        if self.reference is not None:
            return f"% vs {self.reference.label()}"
        return "M" if self.quantity == "params_M" else "GFLOPs (2 x MACs)"


def _decimals(x: Any) -> int:
    text = repr(float(x)) if not isinstance(x, str) else x
    if "e" in text.lower():
        raise ValueError(f"reported value {x!r}: write it as printed, in plain decimal notation")
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def load_paper_rows(tables_path: str | Path | None = None, claims: Mapping[str, Any] | None = None
                    ) -> list[PaperRow]:
    """The rows of ``paper_tables.yaml`` (the package's unless ``tables_path``) and the cost claims of ``claims``
    (default: the package's ``claims.yaml``) that give an effect."""
    import yaml

    text = Path(tables_path).read_text() if tables_path else \
        resources.files("attnrepro.analysis").joinpath("paper_tables.yaml").read_text()
    data = yaml.safe_load(text)
    papers = data.get("papers", {})
    rows = []
    for i, r in enumerate(data["rows"]):
        where = f"paper_tables row {i} ({r.get('model', '?')})"
        for key in ("paper", "table", "model", "build"):
            if key not in r:
                raise ValueError(f"{where} lacks {key!r}")
        if r["paper"] not in papers:
            raise ValueError(f"{where}: paper={r['paper']!r} is not valid; choose one of: {', '.join(papers)}")
        quantities = [q for q in ("params_M", "gflops") if r.get(q) is not None]
        if not quantities:
            raise ValueError(f"{where} has neither params_M nor gflops")
        spec = ModelSpec.from_dict(r["build"], where)
        for q in quantities:
            rows.append(PaperRow(papers[r["paper"]], r["table"], r["model"], q, float(r[q]), spec,
                                 decimals=_decimals(r[q])))
    if claims is None:
        from .claims import load_claims
        claims = load_claims()
    for c in claims["claims"]:
        if c["kind"] != "cost" or c.get("effect") is None:
            continue
        v, ref = claim_specs(c)
        q = "params_M" if c["metric"] == "params" else "gflops"
        rows.append(PaperRow(c["paper"], f"claim {c['id']}", _claim_model(c), q, float(c["effect"]), v, ref,
                             decimals=_decimals(c["effect"])))
    return rows


def _claim_model(claim: Mapping[str, Any]) -> str:
    b = claim["build"]
    v, r = (b[k].get("attention", "none") for k in ("variant", "reference"))
    return f"{v} vs {r} on {b['model']}"


def _measured(row: PaperRow, conv: str) -> tuple[float, int, int]:
    m = measure(row.spec)[conv]
    key = "params" if row.quantity == "params_M" else "macs"
    if row.reference is not None:
        r = measure(row.reference)[conv]
        return relative_difference(m[key], r[key]), m["params"], m["macs"]
    value = m["params"] / 1e6 if key == "params" else 2 * m["macs"] / 1e9
    return value, m["params"], m["macs"]


def build_tables(rows: Sequence[PaperRow] | None = None, conventions: Iterable[str] | None = None
                 ) -> pd.DataFrame:
    """One row per paper row, quantity and convention (columns :data:`COLUMNS`).

    ``residual = measured - reported`` (in the row's unit: M, GFLOPs, or percentage points for the relative rows);
    ``residual_rel_pct = 100 * residual / |reported|``; ``tolerance`` half a unit of the paper's last printed digit;
    ``matches``: ``|residual| <= tolerance``; ``params`` / ``macs``: the counts of the row's model itself.
    """
    rows = load_paper_rows() if rows is None else list(rows)
    convs = [check_convention(c).name for c in (conventions or CONVENTIONS)]
    out = []
    for r in rows:
        for conv in convs:
            value, params, macs = _measured(r, conv)
            tol = 0.5 * 10 ** (-r.decimals)
            res = value - r.reported
            out.append({"paper": r.paper, "table": r.table, "model": r.model, "quantity": r.quantity,
                        "unit": r.unit, "convention": conv, "reported": r.reported, "measured": value,
                        "residual": res,
                        "residual_rel_pct": 100.0 * res / abs(r.reported) if r.reported else math.nan,
                        "tolerance": tol, "matches": bool(abs(res) <= tol + 1e-9), "params": params, "macs": macs,
                        "build": r.spec.label() if r.reference is None else
                        f"{r.spec.label()} vs {r.reference.label()}"})
    return pd.DataFrame(out, columns=COLUMNS)


def summarize_conventions(table: pd.DataFrame) -> pd.DataFrame:
    """Per column of a paper (paper, table, quantity) and convention: rows, rows matching, the largest absolute
    residual, the root-mean-square residual and the mean relative residual."""
    cols = ["paper", "table", "quantity", "convention", "rows", "rows_matching", "max_abs_residual", "rms_residual",
            "mean_residual_rel_pct", "all_match"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    out = []
    order = list(dict.fromkeys(table["convention"]))
    for (paper, tab, q), sub in table.groupby(["paper", "table", "quantity"], sort=False):
        for conv in order:
            s = sub[sub["convention"] == conv]
            if s.empty:
                continue
            res = s["residual"].astype(float)
            out.append({"paper": paper, "table": tab, "quantity": q, "convention": conv, "rows": len(s),
                        "rows_matching": int(s["matches"].sum()), "max_abs_residual": float(res.abs().max()),
                        "rms_residual": float(math.sqrt((res ** 2).mean())),
                        "mean_residual_rel_pct": float(s["residual_rel_pct"].mean()),
                        "all_match": bool(s["matches"].all())})
    return pd.DataFrame(out, columns=cols)


def _unit(table_name: str, quantity: str) -> str:
    return "pp" if table_name.startswith("claim ") else ("M" if quantity == "params_M" else "GFLOPs")


def column_verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per column of a paper (paper, table, quantity): the conventions that reproduce every row of it
    at the paper's rounding; or, when none does, the closest (most rows within rounding, then the smallest rms
    residual), the rows it misses with their residuals, and its largest residual."""
    summ = summarize_conventions(table)
    lines = []
    for (paper, tab, q), sub in summ.groupby(["paper", "table", "quantity"], sort=False):
        unit = _unit(tab, q)
        what = f"{paper}, {tab}, {q}"
        ok = sub[sub["all_match"]]
        n = int(sub["rows"].iloc[0])
        if len(ok):
            lines.append(f"{what}: every row ({n}) reproduced within the paper's rounding by "
                         + ", ".join(ok["convention"]) + ".")
            continue
        best = sub.sort_values(["rows_matching", "rms_residual"], ascending=[False, True], kind="stable").iloc[0]
        rows = table[(table["paper"] == paper) & (table["table"] == tab) & (table["quantity"] == q)
                     & (table["convention"] == best["convention"]) & ~table["matches"]]
        missed = ", ".join(f"{r.model} {r.residual:+.2f}" for r in rows.itertuples())
        lines.append(f"{what}: no convention reproduces every row. Closest: {best['convention']}, "
                     f"{int(best['rows_matching'])}/{n} rows within rounding; misses {missed} {unit} "
                     f"(largest |residual| {best['max_abs_residual']:.2f} {unit}).")
    return lines


def wide(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Paper rows x conventions: ``measured (residual)`` per convention, beside the reported number; ``✓`` where
    the measured value rounds to the paper's."""
    if table.empty:
        return pd.DataFrame()
    keys = ["paper", "table", "model", "quantity", "reported"]
    out = []
    for k, sub in table.groupby(keys, sort=False):
        row = dict(zip(keys, k))
        for r in sub.itertuples():
            row[r.convention] = f"{r.measured:.{digits}f} ({r.residual:+.{digits}f})" + (" ✓" if r.matches else "")
        out.append(row)
    return pd.DataFrame(out)


def write_tables(out_dir: str | Path, table: pd.DataFrame | None = None) -> list[Path]:
    """``paper_tables.csv`` (:func:`build_tables`) and ``paper_tables_conventions.csv``
    (:func:`summarize_conventions`) under ``out_dir``."""
    from .._io import atomic_write_text

    table = build_tables() if table is None else table
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "paper_tables.csv", out / "paper_tables_conventions.csv"]
    atomic_write_text(paths[0], table.to_csv(index=False))
    atomic_write_text(paths[1], summarize_conventions(table).to_csv(index=False))
    return paths
