"""Run folders -> pandas frames -> statistics over seeds.

Everything the report shows is computed here from the files a run writes (see the contract):
``runs/<preset>/<ablation>/<variant>-s<seed>/`` with ``variant.json``, ``config.json``, ``metrics.jsonl`` (one line per
finished epoch) and ``metrics.json`` (final; ``status`` ``finished`` or ``failed`` with a ``reason``). Accuracies are
percent (0-100) throughout.

Frames
- :func:`load_runs`: one row per run folder; ``status`` is ``finished``, ``failed`` or ``incomplete`` (a folder with no
  ``metrics.json``: still running, or killed before it could write one).
- :func:`missing_runs`: the (variant, seed) pairs an ablation expected but has no folder for. Expected seeds are the
  union of the seeds any variant of the ablation has (the pipeline runs every variant with the same seeds), expected
  variants the union of the variants found.
- :func:`load_curves`: one row per run and finished epoch; :func:`load_radii`: one row per run, epoch, ExpAtt layer and
  head (epoch 0 is the configured ``radius_init``).

Tables over seeds (the statistics themselves are :mod:`attnrepro.analysis.stats`)
- :func:`paired_deltas`: for each variant, the per-seed differences ``metric(variant, seed) - metric(reference, seed)``
  over the seeds where BOTH runs finished, then :func:`t_interval` of those differences (a paired t interval). Seeds
  where either run failed or is missing are left out, and ``n_pairs`` says how many remain.
- :func:`summarize` / :func:`ablation_table`: one row per variant of an ablation: n finished / failed / incomplete /
  missing, top-1 mean and CI, the paired delta to the reference variant, params, MACs (fvcore, per image), images/s.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..records import config_disagreement, reuse_origin

from .stats import TInterval, t_interval

__all__ = [
    "RUN_FILES", "STATUSES", "TInterval", "t_interval", "load_runs", "load_curves", "load_radii", "missing_runs",
    "reference_variant", "summarize", "paired_deltas", "ablation_table", "ablations", "natural_key", "run_seconds",
    "time_text", "preset_folders",
]


RUN_FILES = ("variant.json", "config.json", "metrics.json", "metrics.jsonl")


STATUSES = ("finished", "failed", "incomplete", "missing", "corrupt")


_FOLDER_RE = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)$")


# Columns copied from config.json into the runs frame (the rest stays in the ``config`` dict column).
_CONFIG_COLUMNS = ("dataset", "model", "attention", "stages", "kernel", "radius_init", "learn_radius", "epochs",
                   "batch_size", "max_steps", "train_subset", "width", "min_key_dims", "eval_every")


_FINAL_COLUMNS = ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1")


_ENV_COLUMNS = ("python", "torch", "torchvision", "device", "device_name", "git_commit")


def natural_key(s: Any) -> tuple:
    """Sort key that orders ``r0.5 < r1 < r2 < r10`` and ``s2 < s10``."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(s))
    return tuple((0, float(p), "") if re.fullmatch(r"\d+(?:\.\d+)?", p) else (1, 0.0, p) for p in parts if p)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None) or (None, why) for a missing or unreadable JSON file."""
    if not path.is_file():
        return None, f"{path.name} missing"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, f"{path.name} unreadable ({type(e).__name__}: {e})"


def _read_jsonl(path: Path) -> list[dict]:
    """The epoch records of ``metrics.jsonl``; a torn last line (a run killed mid-write) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def preset_folders(runs_dir: Path) -> list[Path]:
    """The preset folders of a runs folder (not hidden ones, such as the cluster jobs' ``.submitit/``)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _run_dirs(runs_dir: Path, preset: str | None) -> list[Path]:
    """Folders ``<runs_dir>/<preset>/<ablation>/<run>/`` that hold at least one run file."""
    runs_dir = Path(runs_dir)
    presets = [runs_dir / preset] if preset else preset_folders(runs_dir)
    out = []
    for p in presets:
        if not p.is_dir():
            continue
        for d in sorted(p.glob("*/*")):
            if d.is_dir() and any((d / f).exists() for f in RUN_FILES):
                out.append(d)
    return out


def _identity(d: Path, variant_json: Mapping | None) -> dict[str, Any]:
    """preset / ablation / variant / seed from variant.json, falling back to the folder names."""
    m = _FOLDER_RE.match(d.name)
    vj = dict(variant_json or {})
    seed = vj.get("seed", int(m["seed"]) if m else None)
    return {
        "preset": vj.get("preset", d.parent.parent.name),
        "ablation": vj.get("ablation", d.parent.name),
        "variant": str(vj.get("variant", m["variant"] if m else d.name)),
        "seed": int(seed) if seed is not None else -1,
        "is_reference": vj.get("is_reference"),
        "varied": dict(vj.get("params") or {}),
    }


def load_runs(runs_dir: str | Path, preset: str | None = None, *, grids_dir: str | Path | None = None
              ) -> pd.DataFrame:
    """One row per run folder under ``runs_dir`` (only ``runs_dir/preset`` when ``preset`` is given).

    Args:
        runs_dir: the runs root (``runs/``).
        preset: restrict to one preset.
        grids_dir: folder of the ablation grids (``notebooks/``): ``<ablation>.yaml`` with ``reference: <variant>``,
            read only for ablations whose ``variant.json`` files carry no ``is_reference``.

    Returns:
        DataFrame with columns ``preset, ablation, variant, seed, is_reference, status, reason, path`` (relative to
        ``runs_dir``), the final metrics (``val_top1`` ... percent), ``best_val_top1, epochs_completed,
        params, macs, images_per_s, peak_mem_mb, wall_time_s, config_hash``, config columns (``dataset, model,
        attention, stages, kernel, radius_init, learn_radius, epochs, batch_size, max_steps, train_subset, width``),
        env columns (``python, torch, torchvision, device, device_name, git_commit``), ``reused_from`` (the run this one
        was copied from, an identical config; None when it trained), ``written`` (``finished_at`` of metrics.json,
        else the newest run file's time, UTC), and dict columns ``varied`` (variant.json params), ``config``,
        ``radius`` (final radii).
    """
    runs_dir = Path(runs_dir)
    rows = []
    for d in _run_dirs(runs_dir, preset):
        vj, _ = _read_json(d / "variant.json")
        row: dict[str, Any] = _identity(d, vj if isinstance(vj, dict) else None)
        cfg, _ = _read_json(d / "config.json")
        cfg = cfg if isinstance(cfg, dict) else {}
        met, why = _read_json(d / "metrics.json")
        epochs = _read_jsonl(d / "metrics.jsonl")
        if isinstance(met, dict):
            status = str(met.get("status") or "failed")
            reason = met.get("reason")
            if status == "running":
                status, reason = "incomplete", f"metrics.json says running (or it stopped) after {len(epochs)} epoch(s)"
            elif status not in ("finished", "failed"):
                reason = f"unknown status {status!r}" + (f": {reason}" if reason else "")
                status = "failed"
            if status == "failed" and not reason:
                reason = "failed (no reason recorded)"
            if (bad := config_disagreement(d, met)) is not None:
                status, reason = "corrupt", bad
            cfg = cfg or dict(met.get("config") or {})
        else:
            met = {}
            status = "incomplete"
            reason = ("metrics.json unreadable: " + why) if why and "missing" not in why else \
                f"no metrics.json (running, or stopped) after {len(epochs)} epoch(s)"
        final = met.get("final") or {}
        last = epochs[-1] if epochs else {}
        row.update(status=status, reason=reason, path=str(d.relative_to(runs_dir)))
        for k in _FINAL_COLUMNS:
            v = final.get(k) if status == "finished" else None
            row[k] = float(v) if v is not None else math.nan
        best = met.get("best_val_top1")
        row["best_val_top1"] = float(best) if best is not None and status == "finished" else math.nan
        row["epochs_completed"] = int(met.get("epochs_completed", len(epochs)) or 0)
        row["last_val_top1"] = float(last["val_top1"]) if last.get("val_top1") is not None else math.nan
        for k in ("params", "macs", "images_per_s", "peak_mem_mb", "wall_time_s"):
            v = met.get(k)
            row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
        row["input_size"] = met.get("input_size")
        row["config_hash"] = met.get("config_hash") or cfg.get("config_hash")
        for k in _CONFIG_COLUMNS:
            row[k] = cfg.get(k)
        env = met.get("env") or {}
        for k in _ENV_COLUMNS:
            row[k] = env.get(k)
        if row["git_commit"] and env.get("git_dirty"):
            row["git_commit"] = f"{row['git_commit']} (with uncommitted changes)"
        row["reused_from"] = met.get("reused_from") or (vj.get("reused_from") if isinstance(vj, dict) else None)
        if met.get("reused_from") and reuse_origin(d, runs_dir)[1] is not None:
            row["reused_from"] = None      # the folder it names holds another config now: this copy counts here
        row["written"] = _written(d, met)
        row["config"] = {k: v for k, v in cfg.items() if k != "config_hash"}
        row["radius"] = met.get("radius") or last.get("radius") or {}
        rows.append(row)
    cols = ["preset", "ablation", "variant", "seed", "is_reference", "status", "reason", "path", *_FINAL_COLUMNS,
            "best_val_top1", "epochs_completed", "last_val_top1", "params", "macs", "images_per_s", "peak_mem_mb",
            "wall_time_s", "input_size", "config_hash", *_CONFIG_COLUMNS, *_ENV_COLUMNS, "reused_from", "written",
            "varied", "config",
            "radius"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    df = _fill_reference(df, grids_dir)
    order = sorted(range(len(df)), key=lambda i: (df["preset"].iat[i], df["ablation"].iat[i],
                                                    natural_key(df["variant"].iat[i]), df["seed"].iat[i]))
    return df.iloc[order].reset_index(drop=True)


def training_code(runs_dir: str | Path, preset: str | None = None) -> dict[str, dict[str, str]]:
    """``{run path: {group: hash}}``: the training-code hashes each run's ``metrics.json`` records (``env.code``,
    :func:`attnrepro.train.metrics.code_hashes`); a run that records none maps to ``{}``. Reused runs count once, under
    the folder that trained them."""
    runs_dir = Path(runs_dir)
    out: dict[str, dict[str, str]] = {}
    for d in _run_dirs(runs_dir, preset):
        met, _ = _read_json(d / "metrics.json")
        if not isinstance(met, dict) or met.get("status") != "finished" or met.get("reused_from"):
            continue
        code = (met.get("env") or {}).get("code")
        out[str(d.relative_to(runs_dir))] = dict(code) if isinstance(code, dict) else {}
    return out


def training_code_text(code: Mapping[str, Mapping[str, str]]) -> str:
    """One line for the report's provenance: "same training code in all N runs", or the groups whose code differs
    between runs (with how many runs have each version), or how many runs record no code hashes."""
    if not code:
        return "—"
    recorded = {p: c for p, c in code.items() if c}
    missing = len(code) - len(recorded)
    note = f"; {missing} run(s) record no code hashes (made before records carried them)" if missing else ""
    if not recorded:
        return f"not recorded: none of the {len(code)} trained runs carries code hashes"
    groups = sorted({g for c in recorded.values() for g in c})
    differ = []
    for g in groups:
        versions: dict[str, int] = {}
        for c in recorded.values():
            versions[c.get(g, "?")] = versions.get(c.get(g, "?"), 0) + 1
        if len(versions) > 1:
            differ.append(f"{g} ({len(versions)} versions: " +
                          ", ".join(f"{h} in {n}" for h, n in sorted(versions.items(), key=lambda kv: -kv[1])) + ")")
    if not differ:
        return f"same training code in all {len(recorded)} trained run(s) ({', '.join(groups)}){note}"
    return f"the training code differs between runs in {'; '.join(differ)}{note}"


def _written(d: Path, met: Mapping) -> str | None:
    """When the run was written: ``finished_at`` from metrics.json (recorded in the file, so the same in every
    clone), else the newest run file's modification time."""
    at = met.get("finished_at")
    if isinstance(at, str):
        try:
            return datetime.fromisoformat(at).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            pass
    mtimes = [(d / f).stat().st_mtime for f in RUN_FILES if (d / f).exists()]
    return datetime.fromtimestamp(max(mtimes), timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if mtimes else None


def run_seconds(runs: pd.DataFrame) -> dict[str, float]:
    """Training time of a runs frame: ``total`` = summed ``wall_time_s`` of the runs that trained (a run reused from
    an identical config, ``reused_from``, counts once, as its origin), ``trained`` and ``reused`` run counts and the
    ``median`` seconds of a trained run."""
    if runs.empty:
        return {"total": 0.0, "trained": 0, "reused": 0, "median": math.nan}
    own = runs[runs["reused_from"].isna()] if "reused_from" in runs else runs
    t = own["wall_time_s"].dropna()
    return {"total": float(t.sum()), "trained": int(len(own)), "reused": int(len(runs) - len(own)),
            "median": float(t.median()) if len(t) else math.nan}


def time_text(t: Mapping[str, Any]) -> str:
    """:func:`run_seconds` in words."""
    text = f"{t['total']:,.0f} s summed over the {t['trained']} runs that trained"
    if math.isfinite(t["median"]):
        text += f" (median {t['median']:.0f} s a run)"
    if t["reused"]:
        text += (f"; {t['reused']} runs reused an identical config's result and count once" if t["reused"] > 1
                 else "; 1 run reused an identical config's result and counts once")
    return text


def _fill_reference(df: pd.DataFrame, grids_dir: str | Path | None) -> pd.DataFrame:
    """``is_reference`` as a bool: from variant.json, else the grid's ``reference:``, else False."""
    df = df.copy()
    flags = df["is_reference"].map(lambda v: v if isinstance(v, bool) else None)
    for ablation, idx in df.groupby("ablation").groups.items():
        if flags.loc[idx].notna().any():
            continue
        ref = None
        if grids_dir is not None:
            p = Path(grids_dir) / f"{ablation}.yaml"
            if p.is_file():
                import yaml
                try:
                    ref = (yaml.safe_load(p.read_text()) or {}).get("reference")
                except (OSError, yaml.YAMLError):
                    ref = None
        flags.loc[idx] = df.loc[idx, "variant"].eq(str(ref)) if ref is not None else False
    df["is_reference"] = flags.fillna(False).astype(bool)
    return df


def ablations(runs: pd.DataFrame) -> list[str]:
    """The ablations present, the four of this suite first in their usual order, then any others."""
    usual = ("kernel", "radius_init", "placement", "baseline")
    found = list(dict.fromkeys(runs["ablation"])) if len(runs) else []
    return [a for a in usual if a in found] + sorted(a for a in found if a not in usual)


def reference_variant(runs: pd.DataFrame, ablation: str) -> str | None:
    """The ablation's reference variant (``is_reference``), or None when no run of the ablation names one."""
    sub = runs[(runs["ablation"] == ablation) & runs["is_reference"].astype(bool)]
    return str(sub["variant"].iloc[0]) if len(sub) else None


def missing_runs(runs: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """The (ablation, variant, seed) combinations with no run folder.

    Args:
        runs: :func:`load_runs` frame.
        expected: optional frame ``preset, ablation, variant, seed`` of the runs the grids call for (the pipeline's
            expansion); only ablations with at least one run folder are checked against it.

    An ablation that ``expected`` covers expects exactly those runs: seeds run beyond the preset's (``attnrepro run
    --seeds``) are used where they are, and expected of no other variant. An ablation it does not cover (or no
    ``expected``) expects every variant with every seed any variant of that ablation has.
    """
    cols = ["preset", "ablation", "variant", "seed", "status", "reason"]
    rows: dict[tuple, dict] = {}
    if len(runs):
        have = set(zip(runs["preset"], runs["ablation"], runs["variant"], runs["seed"].astype(int)))
        covered: set = set()
        if expected is not None and len(expected):
            present = set(zip(runs["preset"], runs["ablation"]))
            for r in expected.itertuples():
                key = (r.preset, r.ablation, str(r.variant), int(r.seed))
                if (r.preset, r.ablation) in present:
                    covered.add((r.preset, r.ablation))
                    if key not in have:
                        rows[key] = {"reason": f"no run folder {r.variant}-s{int(r.seed)} "
                                               "(the grid and preset expect it)"}
        for (preset, ablation), sub in runs.groupby(["preset", "ablation"], sort=False):
            if (preset, ablation) in covered:
                continue
            seeds = sorted(set(sub["seed"].astype(int)))
            for variant, vs in sub.groupby("variant", sort=False):
                for s in seeds:
                    key = (preset, ablation, str(variant), s)
                    if key not in have and key not in rows:
                        rows[key] = {"reason": f"no run folder {variant}-s{s} "
                                               f"(other variants of {ablation} have seed {s})"}
    out = [{"preset": k[0], "ablation": k[1], "variant": k[2], "seed": k[3], "status": "missing", **v}
           for k, v in rows.items()]
    out.sort(key=lambda r: (r["preset"], r["ablation"], natural_key(r["variant"]), r["seed"]))
    return pd.DataFrame(out, columns=cols)


def summarize(runs: pd.DataFrame, metric: str = "val_top1", confidence: float = 0.95,
              missing: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (ablation, variant): run counts by status, ``metric`` mean and CI, costs.

    Columns: ``ablation, variant, is_reference, n, n_failed, n_incomplete, n_missing, n_expected, seeds, mean, half,
    low, high, sd, epochs, params, macs, images_per_s``. ``n`` counts finished runs with a value; ``n_missing`` comes
    from ``missing`` (default :func:`missing_runs` of ``runs``); ``epochs`` is the smallest ``epochs_completed``
    among the finished runs; ``params``/``macs`` the median over finished runs (they do not depend on the seed);
    ``images_per_s`` the mean over finished runs (a timing: depends on the machine). A variant that only the grid
    knows (every seed missing) gets a row with ``n = 0``.
    """
    cols = ["ablation", "variant", "is_reference", "n", "n_failed", "n_incomplete", "n_missing", "n_expected",
            "seeds", "mean", "half", "low", "high", "sd", "epochs", "params", "macs", "images_per_s"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    miss = missing_runs(runs) if missing is None else missing
    rows = []
    for ablation in ablations(runs):
        sub = runs[runs["ablation"] == ablation]
        msub = miss[miss["ablation"] == ablation]
        for variant in sorted(set(sub["variant"]) | set(msub["variant"]), key=natural_key):
            vs = sub[sub["variant"] == variant]
            fin = _finished(vs, metric)
            ti = t_interval(fin[metric], confidence)
            n_miss = int((msub["variant"] == variant).sum())
            rows.append({
                "ablation": ablation, "variant": variant, "is_reference": bool(vs["is_reference"].any()),
                "n": ti.n, "n_failed": int((vs["status"] == "failed").sum()),
                "n_incomplete": int((vs["status"] == "incomplete").sum()), "n_missing": n_miss,
                "n_expected": int(len(vs) + n_miss), "seeds": sorted(int(s) for s in fin["seed"]),
                "mean": ti.mean, "half": ti.half, "low": ti.low, "high": ti.high, "sd": ti.sd,
                "epochs": int(fin["epochs_completed"].min()) if len(fin) else math.nan,
                "params": float(fin["params"].median()) if fin["params"].notna().any() else math.nan,
                "macs": float(fin["macs"].median()) if fin["macs"].notna().any() else math.nan,
                "images_per_s": float(fin["images_per_s"].mean()) if fin["images_per_s"].notna().any() else math.nan,
            })
    return pd.DataFrame(rows, columns=cols)


def load_curves(runs_dir: str | Path, preset: str | None = None) -> pd.DataFrame:
    """One row per run folder and finished epoch (``metrics.jsonl``), failed and incomplete runs included.

    Columns: ``preset, ablation, variant, seed, status, epoch, train_loss, train_top1, val_loss, val_top1, val_top5,
    lr, images_per_s, epoch_time_s``.
    """
    keys = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "epoch_time_s")
    rows = []
    for d in _run_dirs(Path(runs_dir), preset):
        vj, _ = _read_json(d / "variant.json")
        ident = _identity(d, vj if isinstance(vj, dict) else None)
        met, _ = _read_json(d / "metrics.json")
        status = str(met.get("status")) if isinstance(met, dict) and met.get("status") else "incomplete"
        for i, rec in enumerate(_read_jsonl(d / "metrics.jsonl")):
            row = {k: ident[k] for k in ("preset", "ablation", "variant", "seed")}
            row.update(status=status, epoch=int(rec.get("epoch", i + 1)))
            for k in keys:
                v = rec.get(k)
                row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=["preset", "ablation", "variant", "seed", "status", "epoch", *keys])


def load_radii(runs_dir: str | Path, preset: str | None = None) -> pd.DataFrame:
    """Learned ExpAtt radii over training: one row per run, epoch, layer and head.

    Epoch 0 is the configured ``radius_init`` (from ``config.json``), epochs 1.. come from ``metrics.jsonl``.
    Columns: ``preset, ablation, variant, seed, status, epoch, layer, head, radius, kernel, learn_radius``.
    Runs without ExpAtt layers (an empty ``radius`` dict) give no rows.
    """
    rows = []
    for d in _run_dirs(Path(runs_dir), preset):
        vj, _ = _read_json(d / "variant.json")
        ident = _identity(d, vj if isinstance(vj, dict) else None)
        cfg, _ = _read_json(d / "config.json")
        cfg = cfg if isinstance(cfg, dict) else {}
        met, _ = _read_json(d / "metrics.json")
        status = str(met.get("status")) if isinstance(met, dict) and met.get("status") else "incomplete"
        recs = _read_jsonl(d / "metrics.jsonl")
        base = {k: ident[k] for k in ("preset", "ablation", "variant", "seed")}
        base.update(status=status, kernel=cfg.get("kernel"), learn_radius=cfg.get("learn_radius"))
        first = next((r.get("radius") for r in recs if r.get("radius")), None)
        if first and cfg.get("radius_init") is not None:
            for layer, vals in first.items():
                for h in range(len(vals)):
                    rows.append({**base, "epoch": 0, "layer": layer, "head": h, "radius": float(cfg["radius_init"])})
        for i, rec in enumerate(recs):
            for layer, vals in (rec.get("radius") or {}).items():
                for h, v in enumerate(vals if isinstance(vals, (list, tuple)) else [vals]):
                    rows.append({**base, "epoch": int(rec.get("epoch", i + 1)), "layer": layer, "head": h,
                                 "radius": float(v)})
    return pd.DataFrame(rows, columns=["preset", "ablation", "variant", "seed", "status", "epoch", "layer", "head",
                                       "radius", "kernel", "learn_radius"])


def _finished(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    return runs[(runs["status"] == "finished") & runs[metric].notna()]


def paired_deltas(runs: pd.DataFrame, ablation: str, reference: str | None = None, metric: str = "val_top1",
                  confidence: float = 0.95) -> pd.DataFrame:
    """Per variant of ``ablation``: paired differences to ``reference`` over the seeds both finished.

    Args:
        runs: :func:`load_runs` frame.
        ablation: which ablation.
        reference: reference variant; None: :func:`reference_variant`.
        metric: a numeric column of ``runs`` (default final top-1, percent).
        confidence: CI coverage.

    Returns:
        DataFrame ``variant, n_pairs, seeds, delta, delta_half, delta_low, delta_high`` (the reference's own row:
        ``delta`` 0 and no interval). Empty when the ablation has no reference.
    """
    cols = ["variant", "n_pairs", "seeds", "delta", "delta_half", "delta_low", "delta_high"]
    reference = reference if reference is not None else reference_variant(runs, ablation)
    sub = runs[runs["ablation"] == ablation]
    if reference is None or sub.empty:
        return pd.DataFrame(columns=cols)
    if reference not in set(sub["variant"]):
        raise ValueError(f"reference={reference!r} is not a variant of ablation {ablation!r}; "
                         f"valid variants: {', '.join(sorted(set(sub['variant']), key=natural_key))}")
    fin = _finished(sub, metric)
    ref = fin[fin["variant"] == reference].groupby("seed")[metric].mean()
    rows = []
    for variant in sorted(set(sub["variant"]), key=natural_key):
        if variant == reference:
            rows.append({"variant": variant, "n_pairs": int(len(ref)), "seeds": sorted(int(s) for s in ref.index),
                         "delta": 0.0, "delta_half": math.nan, "delta_low": math.nan, "delta_high": math.nan})
            continue
        v = fin[fin["variant"] == variant].groupby("seed")[metric].mean()
        common = sorted(set(v.index) & set(ref.index))
        ti = t_interval([v[s] - ref[s] for s in common], confidence)
        rows.append({"variant": variant, "n_pairs": ti.n, "seeds": [int(s) for s in common], "delta": ti.mean,
                     "delta_half": ti.half, "delta_low": ti.low, "delta_high": ti.high})
    return pd.DataFrame(rows, columns=cols)


def ablation_table(runs: pd.DataFrame, ablation: str, metric: str = "val_top1", confidence: float = 0.95,
                   missing: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`summarize` of one ablation joined with :func:`paired_deltas` to its reference; reference first."""
    miss = missing_runs(runs) if missing is None else missing
    summ = summarize(runs[runs["ablation"] == ablation], metric, confidence, miss[miss["ablation"] == ablation])
    deltas = paired_deltas(runs, ablation, None, metric, confidence)
    if deltas.empty:
        deltas = pd.DataFrame({"variant": summ["variant"], "n_pairs": 0, "seeds": [[] for _ in range(len(summ))],
                               "delta": math.nan, "delta_half": math.nan, "delta_low": math.nan,
                               "delta_high": math.nan})
    out = summ.merge(deltas.rename(columns={"seeds": "paired_seeds"}), on="variant", how="left")
    out = out.sort_values("is_reference", ascending=False, kind="stable").reset_index(drop=True)
    return out
