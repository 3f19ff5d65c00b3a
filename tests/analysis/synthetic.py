"""Run records in memory, as :func:`attnrepro.analysis.results.load_runs` returns them, with values the tests
choose: the analysis tests use them where they need many seeds or a known truth (the on-disk format has its own
tests, with :mod:`analysis_records`)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

BASE = {"dataset": "fashion_mnist", "model": "resnet20", "stages": None, "epochs": 12, "max_steps": 0,
        "input_size": 28}


def run_rows(ablation: str, variant: str, values: Sequence[float], *, reference: bool = False,
             config: Mapping[str, Any] | None = None, seeds: Iterable[int] | None = None, preset: str = "syn",
             params: float = 1000.0, hash_of: str | None = None, **facts: Any) -> list[dict]:
    """One finished run per value (seed i has ``values[i]``), with ``config`` (``attention`` included) and ``facts``
    (frame columns such as dataset, model, stages, input_size, epochs_completed) over :data:`BASE`.
    ``hash_of``: the config hash stands for that name (two groups with one name train the same configs)."""
    cfg = {"attention": "none", **dict(config or {})}
    seeds = list(seeds) if seeds is not None else list(range(len(values)))
    f = {**BASE, **facts}
    rows = []
    for s, v in zip(seeds, values):
        rows.append({
            "preset": preset, "ablation": ablation, "variant": variant, "seed": int(s), "is_reference": reference,
            "status": "finished", "reason": None, "path": f"{preset}/{ablation}/{variant}-s{s}",
            "val_top1": float(v), "epochs_completed": f.get("epochs_completed", f["epochs"]),
            "max_steps": f["max_steps"], "params": params, "macs": 10 * params, "wall_time_s": 1.0,
            "config_hash": f"{hash_of or ablation + '/' + variant}-s{s}", "dataset": f["dataset"], "model": f["model"],
            "attention": cfg["attention"], "stages": f["stages"], "input_size": f["input_size"],
            "epochs": f["epochs"], "reused_from": None, "config": {**cfg, "stages": f["stages"]}, "varied": dict(cfg)})
    return rows


def frame(*groups: list[dict]) -> pd.DataFrame:
    """The runs frame of several :func:`run_rows` groups."""
    return pd.DataFrame([r for g in groups for r in g])


def null_family(rng: np.random.Generator, m: int, n: int, effects: Sequence[float] | None = None,
                sd_seed: float = 1.0, sd_run: float = 1.0) -> pd.DataFrame:
    """One ablation with a reference and ``m`` variants over ``n`` seeds: every run is a shared seed effect (SD
    ``sd_seed``) plus its own noise (SD ``sd_run``), plus the variant's true effect (``effects``, default all 0).
    The paired differences have SD ``sd_run * sqrt(2)``."""
    effects = list(effects) if effects is not None else [0.0] * m
    seed_effect = rng.normal(0.0, sd_seed, n)
    groups = [run_rows("sim", "ref", 80 + seed_effect + rng.normal(0, sd_run, n), reference=True)]
    for j, e in enumerate(effects):
        groups.append(run_rows("sim", f"v{j:02d}", 80 + e + seed_effect + rng.normal(0, sd_run, n),
                               config={"attention": "se", "reduction": j + 1}))
    return frame(*groups)
