"""Figures of the ablation notebooks, drawn from run folders (this suite's; nothing here is from the papers).

Every function takes the notebook's ``out_dir`` (one run folder, ``runs/<preset>/<ablation>/<variant>-s<seed>``).
With ``siblings=True`` the figures also show the other *finished* runs of the same preset and ablation (the folders
beside it), averaged over seeds per variant, so the last notebook of a pipeline shows the whole ablation. The
cross-run statistics (confidence intervals, paired deltas against the reference) are the report's
(:mod:`.report`); these figures are quick looks.
"""
from __future__ import annotations

import math
from pathlib import Path
from .._io import read_json, read_jsonl

__all__ = ["load_run", "load_siblings", "summary", "plot_curves", "plot_kernel_maps", "plot_radii",
           "plot_accuracy_vs_macs", "plot_cost_accuracy"]

_DPI = 72


def load_run(out_dir: str | Path) -> dict:
    """``{"dir", "variant": variant.json, "metrics": metrics.json, "curves": [metrics.jsonl rows], "config"}``."""
    d = Path(out_dir)
    curves = read_jsonl(d / "metrics.jsonl")
    metrics = read_json(d / "metrics.json") or {}
    variant = read_json(d / "variant.json") or {"variant": d.name, "seed": None}
    config = metrics.get("config") or (read_json(d / "config.json") or {})
    return {"dir": d, "variant": variant, "metrics": metrics, "curves": curves, "config": config}


def load_siblings(out_dir: str | Path, include_self: bool = True) -> list[dict]:
    """The finished runs in the folders beside ``out_dir`` (and ``out_dir`` itself when ``include_self``)."""
    d = Path(out_dir).resolve()
    runs = []
    for p in sorted(d.parent.iterdir()) if d.parent.is_dir() else []:
        if not p.is_dir() or (p == d and not include_self):
            continue
        r = load_run(p)
        if r["metrics"].get("status") == "finished" or p == d:
            runs.append(r)
    return runs


def _group(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(str(r["variant"].get("variant", r["dir"].name)), []).append(r)
    return out


def _mean(xs) -> float:
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def summary(metrics: dict) -> None:
    """One line about a finished run."""
    f = metrics.get("final") or {}

    def num(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "-"
    print(f"{metrics.get('status', '?')}: val top-1 {num(f.get('val_top1'), '.2f')}% "
          f"(best {num(metrics.get('best_val_top1'), '.2f')}%), top-5 {num(f.get('val_top5'), '.2f')}%, "
          f"{metrics.get('epochs_completed', '-')} epoch(s) in {num(metrics.get('wall_time_s'), '.0f')} s; "
          f"{num((metrics.get('params') or 0) / 1e6, '.3f')} M params, "
          f"{num((metrics.get('macs') or 0) / 1e6, '.2f')} M MACs/image")


def _plt():
    import matplotlib.pyplot as plt
    return plt


def plot_curves(out_dir: str | Path, siblings: bool = True):
    """Train loss and validation top-1 per epoch; this run bold, the other variants (seed means) thin."""
    plt = _plt()
    me = load_run(out_dir)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=_DPI)
    groups = _group(load_siblings(out_dir, include_self=False)) if siblings else {}
    mine = str(me["variant"].get("variant"))
    if max((len(r["curves"]) for rs in [[me], *groups.values()] for r in rs), default=0) <= 1:
        return _final_bars(fig, axes, me, mine, groups)   # one epoch: no curves to draw, compare the variants
    for name, runs in sorted(groups.items()):
        if name == mine:
            continue
        _curve_pair(axes, runs, name, lw=1, alpha=0.6)
    _curve_pair(axes, [me], f"{mine} (this run)", lw=2.5, alpha=1, color="k")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="val top-1 (%)", title="validation accuracy")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _final_bars(fig, axes, me: dict, mine: str, groups: dict):
    groups = {k: v for k, v in groups.items() if k != mine}
    names = sorted(groups) + [mine]
    runs = [groups[n] for n in sorted(groups)] + [[me]]
    for ax, key, label in ((axes[0], "train_loss", "train loss"), (axes[1], "val_top1", "val top-1 (%)")):
        vals = [_mean(r["curves"][-1].get(key) if r["curves"] else None for r in rs) for rs in runs]
        ax.barh(names, vals, color=["tab:blue"] * (len(names) - 1) + ["k"])
        ax.set(xlabel=label, title=f"{label} after the last epoch")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _curve_pair(axes, runs: list[dict], label: str, **kw) -> None:
    by_epoch: dict[int, list[dict]] = {}
    for r in runs:
        for row in r["curves"]:
            by_epoch.setdefault(int(row.get("epoch", 0)), []).append(row)
    if not by_epoch:
        return
    ep = sorted(by_epoch)
    for ax, key in zip(axes, ("train_loss", "val_top1")):
        ax.plot(ep, [_mean(r.get(key) for r in by_epoch[e]) for e in ep], marker="o", ms=3, label=label, **kw)


def plot_kernel_maps(out_dir: str | Path, size: int = 15, max_layers: int = 6):
    """Each ExpAtt layer's attention map for the centre pixel of a ``size x size`` map, at its final radius."""
    from .figures import attention_map
    plt = _plt()
    me = load_run(out_dir)
    radii = me["metrics"].get("radius") or (me["curves"][-1].get("radius") if me["curves"] else None) or {}
    kernel = me["config"].get("kernel", "gaussian")
    if not radii:
        print("no ExpAtt layers in this run: no attention maps to draw")
        return None
    names = list(radii)[:max_layers]
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names), 2.4), dpi=_DPI, squeeze=False)
    for ax, name in zip(axes[0], names):
        r = float(radii[name][0])   # per-head radii: the first head's
        amap, _ = attention_map(size, size, r, kernel)
        ax.imshow(amap, cmap="viridis")
        ax.set_title(f"{name}\nr={r:.2f}", fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{kernel} kernel: attention of the centre pixel", fontsize=9)
    fig.tight_layout()
    return fig


def _radius_series(run: dict) -> dict[str, list[tuple[int, float]]]:
    init = run["config"].get("radius_init")
    series: dict[str, list[tuple[int, float]]] = {}
    for row in run["curves"]:
        for layer, vals in (row.get("radius") or {}).items():
            s = series.setdefault(layer, [(0, float(init))] if init is not None else [])
            s.append((int(row.get("epoch", len(s))), _mean(vals)))
    return series


def plot_radii(out_dir: str | Path, siblings: bool = True):
    """Radius of every ExpAtt layer over training (epoch 0: ``radius_init``), and final vs initial per variant."""
    plt = _plt()
    me = load_run(out_dir)
    series = _radius_series(me)
    if not series:
        print("no ExpAtt radii recorded in this run")
        return None
    fig, axes = plt.subplots(1, 2 if siblings else 1, figsize=(9 if siblings else 4.5, 3.2), dpi=_DPI,
                             squeeze=False)
    ax = axes[0][0]
    for layer, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=layer)
    ax.set(xlabel="epoch", ylabel="radius (feature-map px)", title="this run: radius per layer")
    _log2_axes(ax, "y")
    if len(series) <= 10:
        ax.legend(fontsize=6)
    if siblings:
        ax = axes[0][1]
        for learn, marker in ((True, "o"), (False, "x")):
            xs, ys, names = [], [], []
            for name, runs in _group(load_siblings(out_dir)).items():
                if bool(runs[0]["config"].get("learn_radius", True)) != learn:
                    continue
                finals = [_mean(v) for r in runs for v in (r["metrics"].get("radius") or {}).values()]
                if finals:
                    xs.append(float(runs[0]["config"].get("radius_init", float("nan"))))
                    ys.append(_mean(finals))
                    names.append(name)
            ax.scatter(xs, ys, marker=marker, label="learned" if learn else "frozen")
            for x, y, n in zip(xs, ys, names):
                ax.annotate(n, (x, y), fontsize=6)
        ax.set(xlabel="radius_init", ylabel="final radius (mean over layers)", title="all variants")
        _log2_axes(ax, "x", "y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _log2_axes(ax, *which: str) -> None:
    """Log-2 scale with plain numbers (0.5, 1, 2, 4...) as tick labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for w in which:
        getattr(ax, f"set_{w}scale")("log", base=2)
        axis = getattr(ax, f"{w}axis")
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())


def _variant_table(out_dir: str | Path, siblings: bool):
    runs = load_siblings(out_dir) if siblings else [load_run(out_dir)]
    rows = []
    for name, rs in _group(runs).items():
        m = [r["metrics"] for r in rs]
        rows.append({"variant": name, "attention": rs[0]["config"].get("attention"),
                     "stages": rs[0]["config"].get("stages"), "seeds": len(rs),
                     "val_top1": _mean((x.get("final") or {}).get("val_top1") for x in m),
                     "params": _mean(x.get("params") for x in m), "macs": _mean(x.get("macs") for x in m)})
    return rows


def plot_accuracy_vs_macs(out_dir: str | Path, siblings: bool = True):
    """Top-1 against the MACs per image the attention adds (over the variant without attention, when present)."""
    plt = _plt()
    rows = _variant_table(out_dir, siblings)
    base = [r["macs"] for r in rows if r["attention"] == "none"]
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=_DPI)
    for r in rows:
        x = (r["macs"] - base[0]) / 1e6 if base else r["macs"] / 1e6
        ax.scatter([x], [r["val_top1"]])
        ax.annotate(r["variant"], (x, r["val_top1"]), fontsize=7)
    ax.set(xlabel=("extra" if base else "total") + " M MACs / image", ylabel="val top-1 (%)",
           title="accuracy vs attention cost")
    fig.tight_layout()
    return fig


def plot_cost_accuracy(out_dir: str | Path, siblings: bool = True):
    """Validation top-1, parameters and MACs per variant (means over seeds)."""
    plt = _plt()
    rows = sorted(_variant_table(out_dir, siblings), key=lambda r: r["variant"])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0), dpi=_DPI)
    names = [r["variant"] for r in rows]
    for ax, key, scale, label in ((axes[0], "val_top1", 1, "val top-1 (%)"), (axes[1], "params", 1e6, "M params"),
                                  (axes[2], "macs", 1e6, "M MACs / image")):
        ax.bar(names, [r[key] / scale for r in rows], color="tab:blue")
        ax.set(ylabel=label)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    return fig
