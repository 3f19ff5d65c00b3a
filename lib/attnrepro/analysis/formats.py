"""How the report's tables look: numbers as text, an ablation table as display strings, the best value of each
column in bold. Presenting only; the numbers come from :mod:`.results` and :mod:`.findings`."""
from __future__ import annotations

import hashlib
import math
from typing import Any

import pandas as pd

__all__ = ["display_table", "bold_best", "plain_table"]


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


def plain_table(df: pd.DataFrame):
    return bold_best(df.reset_index(drop=True), pd.DataFrame(index=df.index))
