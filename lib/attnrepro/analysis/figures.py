"""The figures the report draws (seaborn on matplotlib), each a function of the frames in :mod:`.results`.

Every function returns a :class:`matplotlib.figure.Figure`, or ``None`` when its data is empty (the report then says
so in words). Nothing here reads files or computes statistics beyond what it plots; the intervals are the
:func:`.stats.t_interval` ones (Student-t over seeds), not seaborn's bootstrap.

- :func:`accuracy_curves`: validation top-1 per epoch, mean over seeds with its 95% t band, one line per variant.
- :func:`accuracy_vs_cost`: final top-1 (mean, 95% CI) against MACs per image, one point per variant.
- :func:`accuracy_by_variant`: final top-1 (mean, 95% CI) per variant, e.g. per placement.
- :func:`paired_deltas`: every comparison's paired delta with its interval at the corrected level (the findings).
- :func:`paired_seeds`: per ablation, each seed a line from the reference to the variant.
- :func:`radius_over_training`: learned ExpAtt radius per layer over epochs (epoch 0: the initial radius).
- :func:`attention_maps`: explicit attention maps at given radii as a row of heatmaps (the map of the centre query).
- :func:`kernel_shapes`: the distance kernels ``k(d; r)`` of the kernel ablation.

Kernels and maps: :func:`kernel_value` writes out the four kernels of the project's ExpAtt definition (a
reconstruction, see ``attnrepro.modules``): gaussian ``exp(-d^2/(2r^2))``, laplacian ``exp(-d/r)``, cauchy
``1/(1+(d/r)^2)``, uniform ``1``. :func:`attention_map` asks ``attnrepro.modules.functional.explicit_attention_map``
for the normalised map and only falls back to these formulas when that module cannot be imported.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["KERNELS", "kernel_value", "attention_map", "feature_size", "accuracy_curves", "accuracy_vs_cost",
           "accuracy_by_variant", "paired_deltas", "paired_seeds", "radius_over_training", "attention_maps",
           "kernel_shapes", "to_png"]

KERNELS = ("gaussian", "laplacian", "cauchy", "uniform")
_DATASET_SIZE = {"fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "synthetic": 32}


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover - a backend already in use
            pass
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def to_png(fig, dpi: int = 96) -> bytes:
    """The figure as PNG bytes (tight bounding box); closes it."""
    import io

    plt, _ = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ kernels and maps
def kernel_value(d: np.ndarray | float, radius: float, kernel: str) -> np.ndarray:
    """Unnormalised kernel ``k(d; r)`` at distances ``d`` (pixels) and radius ``r > 0``."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not valid; choose one of: {', '.join(KERNELS)}")
    if not radius > 0:
        raise ValueError(f"radius={radius!r} is not valid; it must be > 0")
    d = np.asarray(d, dtype=float)
    if kernel == "gaussian":
        return np.exp(-d ** 2 / (2.0 * radius ** 2))
    if kernel == "laplacian":
        return np.exp(-d / radius)
    if kernel == "cauchy":
        return 1.0 / (1.0 + (d / radius) ** 2)
    return np.ones_like(d)


def attention_map(H: int, W: int, radius: float, kernel: str) -> tuple[np.ndarray, str]:
    """The attention of the centre query over an ``H x W`` feature map, as an ``(H, W)`` array summing to 1.

    Returns:
        (map, source): source names what computed it: ``"attnrepro.modules"`` (``explicit_attention_map``), or
        ``"formula"`` (:func:`kernel_value`, normalised here) when the modules cannot be imported.
    """
    centre = (H // 2) * W + (W // 2)
    try:
        import torch
        from attnrepro.modules.functional import explicit_attention_map
    except ImportError:
        explicit_attention_map = None
    if explicit_attention_map is not None:
        a = explicit_attention_map(H, W, torch.tensor([float(radius)]), kernel)
        a = a.detach().to("cpu", torch.float64).numpy().reshape(-1, H * W, H * W)[0]
        return a[centre].reshape(H, W), "attnrepro.modules"
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - H // 2, xx - W // 2)
    k = kernel_value(d, radius, kernel)
    return k / k.sum(), "formula"


def feature_size(config: Mapping[str, Any], layer: str) -> tuple[int, int]:
    """Side of the feature map an ExpAtt layer sees, from the run config and the layer's name.

    The input side is 28 (Fashion-MNIST), 32 (CIFAR, synthetic) or ``image_size`` (imagefolder); stage ``s`` (from a
    ``layer<s>`` in the name) divides it by ``2^(s-1)`` in CIFAR nets and WRN, by ``4 * 2^(s-1)`` in ImageNet ResNets
    (stride-2 stem and max-pool), rounding up as strided convs do. A name without ``layer<s>``: 8 x 8.
    """
    m = re.search(r"layer(\d+)", layer)
    if not m:
        return 8, 8
    stage = int(m.group(1))
    size = _DATASET_SIZE.get(str(config.get("dataset")), int(config.get("image_size") or 32))
    model = str(config.get("model") or "")
    down = 2 ** (stage - 1) * (4 if re.fullmatch(r"resnet(18|34|50|101|152)", model) else 1)
    side = max(1, math.ceil(size / down))
    return side, side


# ------------------------------------------------------------------------------------------------ accuracy figures
def _t_band(x) -> tuple[float, float]:
    from .stats import t_interval

    ti = t_interval(x)
    if ti.n < 2:
        return (ti.mean, ti.mean)
    return (ti.low, ti.high)


def accuracy_curves(curves: pd.DataFrame, ablation: str, metric: str = "val_top1", title: str | None = None):
    """Validation top-1 (percent) per epoch: mean over the seeds of each variant, with its 95% t band.

    Only finished runs are drawn; a variant with one seed has no band.
    """
    df = curves[(curves["ablation"] == ablation) & (curves["status"] == "finished") & curves[metric].notna()] \
        if len(curves) else curves
    if df is None or df.empty:
        return None
    from .results import natural_key

    plt, sns = _plt()
    order = sorted(df["variant"].unique(), key=natural_key)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    sns.lineplot(data=df, x="epoch", y=metric, hue="variant", hue_order=order, errorbar=_t_band, marker="o",
                 markersize=6, ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val top-1 (%)")
    _integer_ticks(ax)
    ax.set_title(title or f"{ablation}: validation top-1, mean over seeds with 95% t band")
    ax.legend(title="variant", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _integer_ticks(ax) -> None:
    """Integer epoch ticks; a single epoch gets one tick, centred."""
    from matplotlib.ticker import MaxNLocator

    xs = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    if len(xs) == 1:
        ax.set_xticks(xs)
        ax.set_xlim(xs[0] - 0.5, xs[0] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _errors(table: pd.DataFrame) -> np.ndarray:
    half = table["half"].to_numpy(dtype=float)
    return np.where(np.isnan(half), 0.0, half)


def accuracy_vs_cost(table: pd.DataFrame, cost: str = "macs", title: str | None = None):
    """Final top-1 (mean over seeds, 95% t interval as error bars) against ``cost`` (``macs`` or ``params``)."""
    df = table[table["mean"].notna() & table[cost].notna()] if len(table) else table
    if df.empty:
        return None
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    scale, unit = (1e6, "M") if df[cost].max() >= 1e6 else (1e3, "k")
    x = df[cost].to_numpy(dtype=float) / scale
    palette = sns.color_palette(n_colors=len(df))
    for i, (xi, row) in enumerate(zip(x, df.itertuples())):
        ax.errorbar(xi, row.mean, yerr=_errors(df.iloc[[i]]), fmt="o", color=palette[i], capsize=4,
                    label=f"{row.variant} (n={row.n})")
        ax.annotate(str(row.variant), (xi, row.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(f"{'MACs' if cost == 'macs' else 'parameters'} per image ({unit}, fvcore)" if cost == "macs"
                  else f"parameters ({unit})")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title or f"top-1 vs {'MACs' if cost == 'macs' else 'parameters'} (mean, 95% t interval)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def accuracy_by_variant(table: pd.DataFrame, title: str | None = None, xlabel: str = "variant"):
    """Final top-1 per variant: mean over seeds (point) with its 95% t interval, seeds as small dots if given."""
    df = table[table["mean"].notna()] if len(table) else table
    if df.empty:
        return None
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(df) + 2), 3.4))
    pos = np.arange(len(df))
    palette = sns.color_palette(n_colors=len(df))
    ax.errorbar(pos, df["mean"], yerr=_errors(df), fmt="none", ecolor="0.3", capsize=5)
    ax.scatter(pos, df["mean"], c=palette, s=50, zorder=3)
    ax.set_xticks(pos, [f"{v}\n(n={n})" for v, n in zip(df["variant"], df["n"])], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title or "final top-1 per variant (mean, 95% t interval)")
    fig.tight_layout()
    return fig



def paired_deltas(comparisons: pd.DataFrame, title: str | None = None):
    """Every comparison's paired delta (point) with two intervals: thick, at the level its corrected test used
    (``adj_low``, ``adj_high``: it excludes 0 exactly when the family-wise verdict is above or below), thin, the raw
    95% t interval; one row per distinct comparison, a line at 0: the findings at a glance. ``comparisons`` is
    :func:`.comparisons.compare`; rows without an interval are drawn as points only."""
    df = comparisons[comparisons["delta"].notna()] if len(comparisons) else comparisons
    if len(df) and "same_as" in df:
        df = df[df["same_as"].fillna("").astype(str) == ""]
    if df.empty:
        return None
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(df) + 1.3))
    colours = {"above": "#1a7f37", "below": "#cf222e", "equivalent": "#0969da"}
    y = np.arange(len(df))[::-1]
    for yi, row in zip(y, df.itertuples()):
        c = colours.get(row.verdict, "0.35")
        lo, hi = getattr(row, "adj_low", math.nan), getattr(row, "adj_high", math.nan)
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=c, lw=2.6, alpha=0.55, solid_capstyle="butt")
        if math.isfinite(row.delta_low) and math.isfinite(row.delta_high):
            ax.errorbar(row.delta, yi, xerr=[[row.delta - row.delta_low], [row.delta_high - row.delta]], fmt="none",
                        ecolor=c, elinewidth=0.9, capsize=3)
        ax.plot([row.delta], [yi], "o", color=c, ms=4)
    ax.axvline(0.0, color="0.2", lw=0.8)
    ax.set_yticks(y, [f"{a}: {v} vs {r}" for a, v, r in zip(df["ablation"], df["variant"], df["reference"])],
                  fontsize=8)
    ax.set_xlabel("paired Δ top-1 (percentage points); wide bar: at the corrected level, whiskers: raw 95%")
    ax.set_title(title or "each comparison (green: above 0, red: below 0, blue: equivalent, family-wise)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def paired_seeds(runs: pd.DataFrame, ablation: str, reference: str, metric: str = "val_top1", max_cols: int = 4,
                 title: str | None = None):
    """One panel per variant of ``ablation``: each seed a line from its reference run to its variant run (final
    top-1), one colour per seed in every panel, so that a seed that is bad for every variant shows at a glance."""
    from .results import natural_key

    fin = runs[(runs["ablation"] == ablation) & (runs["status"] == "finished") & runs[metric].notna()] \
        if len(runs) else runs
    if fin is None or fin.empty or reference not in set(fin["variant"]):
        return None
    ref = fin[fin["variant"] == reference].groupby("seed")[metric].mean()
    variants = [v for v in sorted(set(fin["variant"]), key=natural_key) if v != reference]
    if not variants:
        return None
    plt, sns = _plt()
    seeds = sorted(set(fin["seed"]))
    palette = dict(zip(seeds, sns.color_palette("husl", n_colors=len(seeds))))
    cols = min(max_cols, len(variants))
    rows = -(-len(variants) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 0.6, 2.4 * rows + 0.4), sharey=True, squeeze=False)
    for ax, v in zip(axes.flat, variants):
        var = fin[fin["variant"] == v].groupby("seed")[metric].mean()
        for s in sorted(set(var.index) & set(ref.index)):
            ax.plot([0, 1], [ref[s], var[s]], "-o", color=palette[s], lw=1.0, ms=3)
        ax.set_xticks([0, 1], [reference, v], fontsize=8)
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(v, fontsize=9)
    for ax in list(axes.flat)[len(variants):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel(f"final {metric} (%)")
    if len(seeds) <= 12:
        handles = [plt.Line2D([], [], color=palette[s], marker="o", ms=3, lw=1) for s in seeds]
        fig.legend(handles, [f"seed {s}" for s in seeds], loc="lower right", fontsize=7, ncol=min(6, len(seeds)),
                   frameon=False)
    fig.suptitle(title or f"{ablation}: each seed from {reference} to the variant", fontsize=10)
    fig.tight_layout()
    return fig

# ------------------------------------------------------------------------------------------------ radius figures
def radius_over_training(radii: pd.DataFrame, ablation: str, title: str | None = None, max_cols: int = 4):
    """Learned radius per ExpAtt layer over epochs, one panel per variant (mean over seeds and heads, 95% t band
    over seeds). Epoch 0 is the initial radius."""
    df = radii[(radii["ablation"] == ablation) & (radii["status"] == "finished")] if len(radii) else radii
    if df is None or df.empty:
        return None
    from .results import natural_key

    plt, sns = _plt()
    df = df.groupby(["variant", "seed", "epoch", "layer"], as_index=False)["radius"].mean()
    variants = sorted(df["variant"].unique(), key=natural_key)
    layers = sorted(df["layer"].unique(), key=natural_key)
    ncols = min(max_cols, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1.8, 2.8 * nrows), squeeze=False, sharey=True)
    for ax, v in zip(axes.flat, variants):
        sns.lineplot(data=df[df["variant"] == v], x="epoch", y="radius", hue="layer", hue_order=layers,
                     errorbar=_t_band, marker="o", markersize=3, ax=ax, legend=ax is axes.flat[0])
        ax.set_title(str(v), fontsize=9)
        _integer_ticks(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("radius (pixels)")
    for ax in list(axes.flat)[len(variants):]:
        ax.set_visible(False)
    first = axes.flat[0]
    if first.get_legend() is not None:
        first.get_legend().remove()
        handles, labels = first.get_legend_handles_labels()
        fig.legend(handles, labels, title="layer", fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle(title or f"{ablation}: learned radius per layer (epoch 0 = initial radius)", fontsize=10)
    fig.tight_layout()
    return fig


def attention_maps(panels: Sequence[Mapping[str, Any]], title: str | None = None):
    """A row of heatmaps: the normalised attention of the centre query at each panel's radius.

    Args:
        panels: dicts with ``label``, ``H``, ``W``, ``radius`` (pixels), ``kernel``.
        title: figure title.
    """
    if not panels:
        return None
    plt, sns = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n + 0.6, 2.9), squeeze=False)
    sources = set()
    for ax, p in zip(axes.flat, panels):
        a, src = attention_map(int(p["H"]), int(p["W"]), float(p["radius"]), str(p["kernel"]))
        sources.add(src)
        sns.heatmap(a, ax=ax, cmap="viridis", square=True, cbar=True, xticklabels=False, yticklabels=False,
                    cbar_kws={"shrink": 0.7})
        kern = "" if str(p["label"]) == str(p["kernel"]) else f"{p['kernel']}, "
        ax.set_title(f"{p['label']}\n{kern}r={float(p['radius']):.2f}, {p['H']}x{p['W']}", fontsize=8)
    src = "explicit_attention_map" if sources == {"attnrepro.modules"} else "the kernel formulas"
    fig.suptitle(title or f"attention of the centre pixel at the learned radii (from {src})", fontsize=10)
    fig.tight_layout()
    return fig


def kernel_shapes(curves: Sequence[Mapping[str, Any]], d_max: float = 8.0, title: str | None = None):
    """``k(d; r)`` against the distance ``d`` for each entry (``label``, ``kernel``, ``radius``)."""
    if not curves:
        return None
    plt, sns = _plt()
    d = np.linspace(0.0, d_max, 200)
    rows = []
    for c in curves:
        k = kernel_value(d, float(c["radius"]), str(c["kernel"]))
        rows.append(pd.DataFrame({"d": d, "k": k, "curve": f"{c['label']} (r={float(c['radius']):.2f})"}))
    df = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    sns.lineplot(data=df, x="d", y="k", hue="curve", ax=ax)
    ax.set_xlabel("distance d (feature-map pixels)")
    ax.set_ylabel("k(d; r)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(title or "distance kernels at the learned radii (unnormalised)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
