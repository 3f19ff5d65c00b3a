"""The run record's own consistency: what makes a run folder's files disagree with each other.

A finished run folder holds ``config.json`` (the config as the runner wrote it, with ``config_hash``) and
``metrics.json`` (the engine's final record, which repeats the config and its hash). Both halves of the suite read
this one rule: the pipeline's :func:`attnrepro.pipeline.run_state` calls such a folder ``corrupt`` (and will not
replace it without ``--force``), the report lists it as corrupt instead of using its numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["config_disagreement", "reuse_origin"]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reuse_origin(run_dir: str | Path, runs_root: str | Path) -> tuple[str | None, str | None]:
    """(``reused_from`` of a run folder's ``metrics.json``, or None, and why that link is not to be trusted, or None).

    The link is checked, not trusted: the folder it names (``<preset>/<ablation>/<run>`` under ``runs_root``) must
    still hold a finished run of the same config hash. If it was replaced since (``--force``), the record here is
    still that training's copy, but the link is broken, and the run counts as trained here (its ``wall_time_s`` is
    no longer counted anywhere else)."""
    m = _read(Path(run_dir) / "metrics.json")
    origin = m.get("reused_from") if isinstance(m, dict) else None
    if not origin:
        return None, None
    src = _read(Path(runs_root) / origin / "metrics.json")
    if not (isinstance(src, dict) and src.get("status") == "finished" and src.get("config_hash") == m.get("config_hash")):
        return origin, f"{origin} no longer holds this config ({m.get('config_hash')})"
    return origin, None


def config_disagreement(run_dir: str | Path, metrics: Mapping[str, Any] | None) -> str | None:
    """Why ``run_dir/config.json`` disagrees with its ``metrics.json`` (``metrics``, already read), or None.

    None also when there is nothing to compare: no ``metrics.json``, or no ``config.json`` (a run recorded as
    failed before it started writes only ``metrics.json``). Otherwise the config file must parse to a mapping, carry
    the same ``config_hash`` as the metrics, and (where the metrics repeat the config) hold the same keys and values.
    """
    if not isinstance(metrics, Mapping):
        return None
    path = Path(run_dir) / "config.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"config.json unreadable: {e}"
    try:
        cfg = json.loads(text)
    except ValueError as e:
        return f"config.json is not JSON ({e})"
    if not isinstance(cfg, dict):
        return f"config.json holds a {type(cfg).__name__}, not a config"
    if cfg.get("config_hash") != metrics.get("config_hash"):
        return (f"config.json has config_hash {cfg.get('config_hash')!r} but metrics.json has "
                f"{metrics.get('config_hash')!r}")
    recorded = metrics.get("config")
    if isinstance(recorded, Mapping):
        plain = {k: v for k, v in cfg.items() if k != "config_hash"}
        diff = sorted(k for k in set(plain) | set(recorded) if plain.get(k) != recorded.get(k))
        if diff:
            return f"config.json and metrics.json disagree on {', '.join(diff[:5])}" + (" ..." if len(diff) > 5 else "")
    return None
