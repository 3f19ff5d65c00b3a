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

How the variants are built: the model is built once with ``build_model``; a variant differs only in the blocks whose
3x3 (or its replacement) strides, so only those blocks are copied, modified (strides set on the copies; a strided
attention layer replaced by a plain 3x3 conv with the same channels and stride) and counted alone at their input
size; the model's count is the default count minus those blocks' counts plus their variants'. The tests check this
against counting a whole modified model. Params change only with ``strided-blocks-plain``.

``matches`` is True when the measured value, rounded to the digits the paper prints, equals the paper's number
(``|measured - reported| <= half a unit of the last printed digit``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import itertools
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

__all__ = ["Convention", "CONVENTIONS", "DEFAULT_CONVENTION", "ModelSpec", "PaperRow", "measure", "load_paper_rows",
           "build_tables", "summarize_conventions", "column_verdicts", "write_tables", "COLUMNS", "configure",
           "run"]

DEFAULT_CONVENTION = "fvcore-default"
COLUMNS = ["paper", "table", "model", "quantity", "unit", "convention", "reported", "measured", "residual",
           "residual_rel_pct", "tolerance", "matches", "params", "macs", "build"]


# ============================================================================================ conventions
@dataclass(frozen=True)
class Convention:
    """One way to build and count: ``strides`` ``"v1.5"`` or ``"v1"``; ``strided_blocks`` ``"attention"`` or
    ``"plain"``; ``attention_matmuls`` counted or not (see the module docstring)."""

    strides: str = "v1.5"
    strided_blocks: str = "attention"
    attention_matmuls: bool = True

    @property
    def name(self) -> str:
        parts = (["resnet-v1-strides"] if self.strides == "v1" else []) + \
                (["strided-blocks-plain"] if self.strided_blocks == "plain" else []) + \
                ([] if self.attention_matmuls else ["no-attention-matmuls"])
        return "+".join(parts) or DEFAULT_CONVENTION

    @property
    def construction(self) -> tuple[str, str]:
        """What a variant block depends on (the matmul choice only changes what is summed)."""
        return self.strides, self.strided_blocks

    def describe(self) -> str:
        return ("stride on the bottleneck's " + ("first 1x1 (ResNet v1)" if self.strides == "v1" else
                                                 "3x3 (torchvision v1.5)")
                + "; strided blocks " + ("plain" if self.strided_blocks == "plain" else "augmented")
                + "; attention matmuls " + ("counted" if self.attention_matmuls else "not counted"))


CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (Convention(s, b, m) for s, b, m in
                        itertools.product(("v1.5", "v1"), ("attention", "plain"), (True, False)))}


def check_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ValueError(f"unknown counting convention {name!r}; choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


# ============================================================================================ models
@dataclass(frozen=True)
class ModelSpec:
    """The ``build_model`` call for a paper's row: backbone, classes, image side, attention and its keywords."""

    model: str
    num_classes: int = 1000
    input_size: int = 224
    attention: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "build") -> "ModelSpec":
        if not isinstance(d, Mapping) or "model" not in d:
            raise ValueError(f"{where}: {d!r} must be a mapping with at least 'model' (and num_classes, input_size, "
                             "attention, attention keywords)")
        rest = {k: v for k, v in d.items() if k not in ("model", "num_classes", "input_size", "attention")}
        att = d.get("attention")
        return cls(str(d["model"]), int(d.get("num_classes", 1000)), int(d.get("input_size", 224)),
                   None if att in (None, "none") else str(att),
                   tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rest.items())))

    def build(self):
        from .models import build_model
        return build_model(self.model, self.num_classes, 3, self.attention, input_size=self.input_size,
                           **dict(self.kwargs))

    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.kwargs)
        return f"{self.model} @{self.input_size}px, {self.num_classes} classes, attention={self.attention or 'none'}" \
               f"{extra}"


def _stride(layer) -> int:
    s = getattr(layer, "stride", 1)
    return int(s[0] if isinstance(s, (tuple, list)) else s)


def _unstride(layer) -> None:
    """Stride 1 for a 3x3 conv or an attention layer that replaced it (its own ``stride`` and its convs')."""
    import torch.nn as nn
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
        elif isinstance(getattr(m, "stride", None), int):
            m.stride = 1


def _applies(block, conv: Convention) -> tuple[bool, bool]:
    """``(plain, v1)``: whether ``conv`` changes ``block`` by a plain strided 3x3, by ResNet v1's strides."""
    import torch.nn as nn
    from torchvision.models.resnet import Bottleneck

    from .models.placement import block_slots

    layer = getattr(block, block_slots(block)[0])
    if _stride(layer) == 1:
        return False, False
    return (conv.strided_blocks == "plain" and type(layer) is not nn.Conv2d,
            conv.strides == "v1" and isinstance(block, Bottleneck))


def _variant_block(block, plain: bool, v1: bool):
    """A copy of ``block`` with its strided 3x3 slot made a plain conv (``plain``) and/or its stride moved to the
    first 1x1 conv (``v1``)."""
    import torch.nn as nn

    from .models.placement import block_slots

    slot, _ = block_slots(block)
    layer = getattr(block, slot)
    s = _stride(layer)
    new = copy.deepcopy(block)
    if plain:
        k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
        setattr(new, slot, nn.Conv2d(layer.in_channels, layer.out_channels, k, s, k // 2, bias=False))
    if v1:
        new.conv1.stride = (s, s)
        _unstride(getattr(new, slot))
    return new


def _block_in_channels(block) -> int:
    c = getattr(block, "in_channels", None)
    return int(c) if c is not None else int(block.conv1.in_channels)


def _count_block(block, variant, side: int) -> dict[str, int]:
    """MACs by op of ``variant`` at the input of ``block`` (checked to give the block's output shape)."""
    import torch

    from .flops import mac_breakdown

    x = torch.zeros(1, _block_in_channels(block), side, side)
    with torch.no_grad():
        want, got = block.eval()(x).shape, variant.eval()(x).shape   # the variant's run is its warm-up
    if want != got:
        raise RuntimeError(f"a variant of {type(block).__name__} gives {tuple(got)} instead of {tuple(want)}; "
                           "its layers do not follow the stride set on them")
    return mac_breakdown(variant, tuple(x.shape), warmup=False)[""]


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads set to ``n`` for the block, then restored. Counting is dominated by tracing, not
    arithmetic: one thread is about as fast, and on a shared machine it does not spin against other processes."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=None)
def measure(spec: ModelSpec) -> dict[str, dict[str, int]]:
    """``{convention name: {"params": int, "macs": int}}`` for ``spec`` under every :data:`CONVENTIONS`.

    The model is built and traced once (eval mode, one image of ``spec.input_size``, one torch thread); each
    variant's strided blocks are counted alone (see the module docstring), each distinct variant of a block once.
    Cached for the process, so the report's claims and its tables share one count per model.
    """
    with _threads(1):
        return _measure(spec)


def _measure(spec: ModelSpec) -> dict[str, dict[str, int]]:
    from .flops import ATTENTION_MATMUL_OPS, count_params, mac_breakdown
    from .models.placement import iter_blocks

    model = spec.build()
    side = spec.input_size
    base = mac_breakdown(model, (1, 3, side, side))
    params = count_params(model)
    names = {id(m): n for n, m in model.named_modules()}
    blocks = list(iter_blocks(model, side, spec.model))
    counted: dict[tuple[int, bool, bool], tuple[int, dict[str, int]]] = {}   # (block, plain, v1) -> delta
    out = {}
    for conv in CONVENTIONS.values():
        p, ops = params, dict(base[""])
        for _, block, block_side in blocks:
            plain, v1 = _applies(block, conv)
            if not (plain or v1):
                continue
            key = (id(block), plain, v1)
            if key not in counted:
                new = _variant_block(block, plain, v1)
                delta = {op: -v for op, v in base.get(names[id(block)], {}).items()}
                for op, v in _count_block(block, new, block_side).items():
                    delta[op] = delta.get(op, 0) + v
                counted[key] = (count_params(new) - count_params(block), delta)
            dp, delta = counted[key]
            p += dp
            for op, v in delta.items():
                ops[op] = ops.get(op, 0) + v
        macs = sum(v for op, v in ops.items() if conv.attention_matmuls or op not in ATTENTION_MATMUL_OPS)
        out[conv.name] = {"params": int(p), "macs": int(macs)}
    return out


# ============================================================================================ the papers' rows
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
        resources.files("attnrepro").joinpath("paper_tables.yaml").read_text()
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
        from .report import load_claims
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


def claim_specs(claim: Mapping[str, Any]) -> tuple[ModelSpec, ModelSpec]:
    """The (variant, reference) models of a cost claim's ``build``."""
    b = claim.get("build")
    where = f"claim {claim.get('id', '?')!r}: build"
    if not isinstance(b, Mapping) or not isinstance(b.get("variant"), Mapping) or \
            not isinstance(b.get("reference"), Mapping):
        raise ValueError(f"{where} must be a mapping with model, input_size, num_classes, and variant and reference "
                         f"mappings of build_model keywords; got {b!r}")
    common = {k: v for k, v in b.items() if k not in ("variant", "reference")}
    return (ModelSpec.from_dict({**common, **b["variant"]}, where),
            ModelSpec.from_dict({**common, **b["reference"]}, where))


def relative_difference(variant: float, reference: float) -> float:
    """``100 * (variant - reference) / reference``, in percent."""
    return 100.0 * (variant - reference) / reference


# ============================================================================================ the table
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
    from ._io import atomic_write_text

    table = build_tables() if table is None else table
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "paper_tables.csv", out / "paper_tables_conventions.csv"]
    atomic_write_text(paths[0], table.to_csv(index=False))
    atomic_write_text(paths[1], summarize_conventions(table).to_csv(index=False))
    return paths


# ============================================================================================ CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=str(Path("reports") / "tables"),
                        help="folder for paper_tables.csv and paper_tables_conventions.csv (default: reports/tables)")
    parser.add_argument("--convention", nargs="+", choices=tuple(CONVENTIONS), default=None, metavar="NAME",
                        help="only these counting conventions (default: all): " + ", ".join(CONVENTIONS))


def run(args: argparse.Namespace) -> int:
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
