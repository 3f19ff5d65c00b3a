"""Run-folder state and reuse: what a folder holds (:func:`run_state`), the locks that keep two pipelines from running
one config twice, the reuse of an identical config's finished run (:func:`find_twin`, :func:`reuse`), the
execution plan (:func:`plan`) and the failure records.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .._io import atomic_write, atomic_write_text, held_lock, read_json
from ..records import config_disagreement, reuse_origin
from .grids import Run, base_preset

__all__ = ["run_state", "plan", "find_twin", "reuse", "record_twin_failure", "protected", "reuse_origin"]


#: the cluster job last submitted for a run folder (:mod:`attnrepro.pipeline.jobs`): a pointer to the job, not a
#: record of the run, so emptying the folder (another config, ``--force``, a reuse) keeps it
JOB_FILE = "job.json"


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def run_state(run: Run) -> str:
    """``new`` (nothing there), ``finished`` (this config finished), ``failed`` (this config failed),
    ``stale`` (the folder holds another config), ``incomplete`` (this config, no final status), ``corrupt``
    (``config.json`` disagrees with ``metrics.json``: see :func:`attnrepro.records.config_disagreement`)."""
    m = read_json(run.out_dir / "metrics.json")
    h = run.config.hash()
    if m is not None and config_disagreement(run.out_dir, m):
        return "corrupt"
    if m is None:
        c = read_json(run.out_dir / "config.json")
        if c is None:
            return "new" if not any(p.name != JOB_FILE for p in run.out_dir.glob("*")) else "incomplete"
        return "incomplete" if c.get("config_hash") == h else "stale"
    if m.get("config_hash") != h:
        return "stale"
    return "finished" if m.get("status") == "finished" else "failed"


def _clear_dir(path: Path) -> None:
    """Empty a run folder for a new attempt, but for its :data:`JOB_FILE`."""
    if path.is_dir():
        for p in path.iterdir():
            if p.name == JOB_FILE:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def _failure_reason(e: BaseException) -> str:
    name = type(e).__name__
    ename = getattr(e, "ename", None)
    if ename:   # PapermillExecutionError: the exception raised inside the notebook
        evalue = str(getattr(e, "evalue", "")).strip().splitlines()
        return f"{ename}: {evalue[-1] if evalue else ''}".strip()[:500]
    msg = str(e).strip().splitlines()
    return f"{name}: {msg[-1] if msg else ''}"[:500]


def _epochs_done(run: Run) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for line in (run.out_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    return 0


def _record_failure(run: Run, reason: str, started: float) -> dict:
    """Write ``metrics.json`` with status failed, unless the engine wrote a failed one for this config in this
    attempt (:func:`execute` removes the record of an earlier attempt before it starts the notebook)."""
    path = run.out_dir / "metrics.json"
    m = read_json(path)
    h = run.config.hash()
    if m is not None and m.get("config_hash") == h and m.get("status") == "failed" and m.get("reason") \
            and m.get("config", run.config.to_dict()) == run.config.to_dict():
        return m
    m = {**(m or {}), "status": "failed", "reason": reason, "config": run.config.to_dict(), "config_hash": h,
         "wall_time_s": round(time.time() - started, 3),
         "epochs_completed": (m or {}).get("epochs_completed", _epochs_done(run))}
    _write_json(path, m)
    return m


def _config_lock_path(run: Run) -> Path:
    """The lock of a config (per preset), whichever folder runs it: two ablations with one config train it once."""
    return run.out_dir.parent.parent / f".config-{run.config.hash()}.lock"


@contextlib.contextmanager
def _run_locks(run: Run):
    """Hold the run's config lock, then its folder lock (always in this order, so two pipelines cannot deadlock).
    Both lock files are removed when the run ends (see :func:`attnrepro._io.held_lock`)."""
    run.out_dir.parent.mkdir(parents=True, exist_ok=True)

    def waiting() -> None:
        print(f"{run.name}: another pipeline is running this config; waiting", file=sys.stderr, flush=True)
    with held_lock(_config_lock_path(run), on_wait=waiting), held_lock(run.lock_path, on_wait=waiting):
        yield


def _finished_with(d: Path, h: str) -> dict | None:
    m = read_json(d / "metrics.json")
    return m if isinstance(m, dict) and m.get("status") == "finished" and m.get("config_hash") == h else None


def protected(run: Run) -> str | None:
    """Why executing ``run`` would replace a record it must not replace without ``--force``, or None: its folder
    holds a finished run of another config (the preset or the grid changed since), or a corrupt record."""
    state = run_state(run)
    if state == "corrupt":
        return f"corrupt record ({config_disagreement(run.out_dir, read_json(run.out_dir / 'metrics.json'))})"
    if state == "stale":
        m = read_json(run.out_dir / "metrics.json")
        if isinstance(m, dict) and m.get("status") == "finished":
            return f"holds a finished run of another config ({m.get('config_hash')}, not {run.config.hash()})"
    return None


def _twin_roots(run: Run) -> list[Path]:
    """Where identical configs are looked for: the run's own preset folder; for a ``<preset>+...`` override
    folder also the preset's own folder (an override that leaves a config unchanged reuses the preset's run); then
    the folders of the presets its preset names in ``reuse_from`` (a follow-up preset reuses the reference runs of
    the preset it follows, so they are trained and counted once)."""
    root = run.out_dir.parent.parent
    roots = [root]
    for other in (base_preset(root.name), *run.twin_presets):
        d = root.parent / other
        if d not in roots and d.is_dir():
            roots.append(d)
    return roots


def find_twin(run: Run) -> Path | None:
    """Another run folder that finished this run's config (same hash), or None: in the run's preset folder (and
    its base preset's, see :func:`_twin_roots`). Folders of the run's own preset folder come first, then folders
    that trained it themselves before folders that reused it. A corrupt record is never a twin."""
    found, h = [], run.config.hash()
    for i, root in enumerate(_twin_roots(run)):
        for m in sorted(root.glob("*/*/metrics.json")):
            d = m.parent
            if d != run.out_dir and (done := _finished_with(d, h)) is not None \
                    and not config_disagreement(d, done):
                found.append((i, bool(done.get("reused_from")), d))
    return min(found)[2] if found else None


def _rel_run(d: Path) -> str:
    """``<preset>/<ablation>/<run>``: a run folder relative to the runs root (the report's ``path`` column)."""
    return "/".join(d.parts[-3:])


def reuse(run: Run, src: Path) -> dict:
    """Make ``run``'s folder a copy of the finished run ``src`` of the same config, instead of training it again.

    Copies ``config.json``, ``metrics.jsonl``, ``log.txt`` and ``metrics.json`` (checkpoints and the executed
    notebook stay in ``src``), and writes this run's ``variant.json``. Both JSON files get ``reused_from``: the
    ``<preset>/<ablation>/<run>`` that trained it, so a sum of ``wall_time_s`` can count that training once.
    ``metrics.json`` is written last: until it is there, the folder does not count as finished.
    """
    metrics = _finished_with(src, run.config.hash())
    if metrics is None:
        raise RuntimeError(f"{src} holds no finished run of config {run.config.hash()}")
    origin = metrics.get("reused_from") or _rel_run(src)
    _clear_dir(run.out_dir)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run.out_dir / "variant.json", {**run.variant_info(), "reused_from": origin})
    for name in ("config.json", "metrics.jsonl", "log.txt"):
        with contextlib.suppress(FileNotFoundError):
            data = (src / name).read_bytes()
            atomic_write(run.out_dir / name, lambda f: f.write(data))
    _write_json(run.out_dir / "metrics.json", {**metrics, "reused_from": origin})
    return metrics


def record_twin_failure(run: Run, twin: str, reason: str | None) -> dict:
    """``run`` is not trained because the run ``twin`` of the same config has just failed: record that (so the
    report says why) and return the summary. The next ``attnrepro run`` tries ``twin`` again, then reuses it."""
    summary = run.identity()
    with _run_locks(run):
        if (why := protected(run)) is not None:
            raise RuntimeError(f"{run.name}: {why}; not replaced (attnrepro run --replace replaces it)")
        if run_state(run) == "stale":
            _clear_dir(run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run.out_dir / "variant.json", run.variant_info())
        _record_failure(run, f"not run: {twin} has the same config and failed ({reason or 'no reason'})",
                        time.time())
    return {**summary, **_summary_of(run, "failed")}


def _summary_of(run: Run, status: str) -> dict:
    m = read_json(run.out_dir / "metrics.json") or {}
    final = m.get("final") or {}
    return {"status": status, "reason": m.get("reason") if status == "failed" else None,
            "val_top1": final.get("val_top1"), "wall_time_s": m.get("wall_time_s"),
            "reused_from": m.get("reused_from")}


def plan(runs: Sequence[Run], *, force: bool = False) -> tuple[list[Run], dict[str, list[Run]]]:
    """(the runs to execute first, and for each of them the runs of the same config that wait for it).

    Runs whose folder finished their config are left out (unless ``force``). Of the remaining runs with one config
    (same preset, same hash), the first in order trains and the others reuse it once it has finished.
    """
    todo = [r for r in runs if force or run_state(r) != "finished"]
    groups: dict[tuple, list[Run]] = {}
    for r in todo:
        groups.setdefault((r.preset, r.out_dir.parent.parent, r.config.hash()), []).append(r)
    firsts = [g[0] for g in groups.values()]
    return firsts, {g[0].name: g[1:] for g in groups.values()}
