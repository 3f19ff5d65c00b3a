"""The ablation pipeline: grids x presets x seeds -> run configs -> one papermill notebook execution per run.

``attnrepro run ABLATION... --preset NAME [-p KEY VALUE]... [--jobs N] [--force] [--runs-dir DIR]`` and
``attnrepro list [ABLATION...] [--preset NAME]``. Nothing here is from the papers: it is this suite's machinery.

Files
-----
An *ablation* is a pair ``notebooks/<name>.ipynb`` + ``notebooks/<name>.yaml`` (the grid). A *preset* is
``notebooks/presets/<name>.yaml``. Another notebooks folder can be used with ``--notebooks-dir`` or the
``ATTNREPRO_NOTEBOOKS`` environment variable (the tests do).

Grid YAML (``notebooks/<ablation>.yaml``)::

    reference: gaussian            # the variant the report compares the others with (paired deltas)
    base: {attention: expatt}      # run-config keys every variant of this ablation shares
    variants:                      # explicit variants: stable name -> run-config keys it sets
      gaussian: {kernel: gaussian}
      uniform: {kernel: uniform}
    axes:                          # and/or a product: axis key -> {value name: value}; variant name is the
      radius_init: {r1: 1.0, r2: 2.0}    #   value names joined by '-' in axis order (e.g. 'r2-frozen');
      learn_radius: {learn: true, frozen: false}   # a value may also be a mapping of several keys

Preset YAML (``notebooks/presets/<preset>.yaml``)::

    description: one line for `attnrepro list`
    seeds: [0, 1, 2]
    jobs: 1                                            # default for --jobs
    base: {dataset: fashion_mnist, epochs: 30, ...}    # run-config keys of every run
    options: {nproc_per_node: 1}                       # notebook options (non-config parameters), optional
    ablations:                                         # optional, per ablation:
      placement:
        base: {heads: 2}                               #   keys applied after the grid's base
        variants: {s4: {stages: [4]}}                  #   extra (or replaced) variants
        only: [none, s1, s4]                           #   run only these variants

A run's config is merged in this order, later wins: RunConfig defaults, preset ``base``, grid ``base``,
preset ``ablations.<name>.base``, the variant, ``seed``, CLI ``-p`` overrides. ``stages`` may also be written
``all``, ``firstN`` or ``lastN`` (resolved against the model's number of stages, so one grid serves 3-stage CIFAR
nets and 4-stage ImageNet ResNets). Every config is validated with :meth:`RunConfig.from_dict` before anything runs;
a bad ablation, preset, key or value exits with code 2 naming the valid choices.

Runs
----
Each run goes to ``<runs-dir>/<preset>/<ablation>/<variant>-s<seed>/`` (runs-dir default ``runs``, or
``ATTNREPRO_RUNS``) and holds ``variant.json`` (ablation, variant, seed, preset, reference, is_reference, params:
the keys the variant sets, config_hash), the engine's files (``config.json``, ``metrics.jsonl``, ``metrics.json``,
``checkpoint.pt``), the executed ``notebook.ipynb`` and ``log.txt`` (the kernel's stdout and stderr).

- A run whose ``metrics.json`` says ``finished`` with the config's hash is skipped; ``--force`` re-runs it.
- A run folder holding a *different* config (the grid or the preset changed) is emptied first, so the engine
  never resumes a checkpoint of another config. A failed run of the *same* config keeps its checkpoint and resumes.
- A run that fails (an exception in the notebook, a NaN the engine rejects, the kernel dying) has ``metrics.json``
  with ``status: failed`` and a ``reason`` (written here when the engine could not); the other runs go on and
  the command exits 1 after a summary table.
- A lock per run (``.<variant>-s<seed>.lock`` beside the folder) keeps two pipelines on one runs folder from
  executing the same config twice: the second waits, then sees the run finished and skips it.
- ``--jobs N`` executes N notebooks at once, each in its own process with its own kernel; each kernel gets
  ``OMP_NUM_THREADS = cores // N`` (unless set) and, when there are at least N GPUs, its own share of them
  through ``CUDA_VISIBLE_DEVICES``.
- Notebooks run with the Jupyter kernel ``attnrepro`` (``make`` installs it; when it is missing it is installed
  for the current interpreter into ``sys.prefix``).

Multi-GPU runs
--------------
One run on several GPUs of one machine: set the notebook option ``nproc_per_node`` (in a preset's ``options`` or
with ``-p nproc_per_node 8``). The notebook then does not train in its own kernel: it starts
``torchrun --standalone --nproc_per_node 8 -m attnrepro train -p KEY VALUE... --out RUN_DIR`` and waits for it, then
draws its figures from the run folder as usual; ``batch_size`` stays the global batch. ``torchrun_args``
(e.g. ``"--nnodes 2 --node_rank 0 --rdzv_endpoint host:29500"``, which replaces ``--standalone``) passes extra
arguments for several machines; then start the same ``attnrepro train`` command by hand on the other nodes. Example:
``attnrepro run baseline --preset imagenet -p data_dir /data/imagenet -p nproc_per_node 8``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ._io import atomic_write_text, read_json
from .cli import UsageError, add_overrides
from .config import KEYS, ConfigError, RunConfig, coerce, num_stages

__all__ = [
    "KERNEL_NAME", "Run", "notebooks_dir", "list_ablations", "list_presets", "load_grid", "load_preset",
    "grid_variants", "expand", "run_state", "execute", "run_all", "notebook_parameters", "resolve_stages",
    "ensure_kernel", "configure_run", "run_run", "configure_list", "run_list",
]

KERNEL_NAME = "attnrepro"
RUNNER_KEYS = ("out_dir",)  # notebook parameters the runner always sets (besides every run-config key)
_GRID_KEYS = {"reference", "base", "variants", "axes", "description", "notebook"}
_PRESET_KEYS = {"description", "seeds", "jobs", "base", "options", "ablations"}
_PRESET_ABLATION_KEYS = {"base", "variants", "only"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


# ---------------------------------------------------------------------------- where things are
def notebooks_dir(path: str | os.PathLike | None = None) -> Path:
    """The notebooks folder: ``path``, else ``$ATTNREPRO_NOTEBOOKS``, else the repository's ``notebooks/``."""
    if path is None:
        path = os.environ.get("ATTNREPRO_NOTEBOOKS")
    if path is None:
        repo = Path(__file__).resolve().parents[2] / "notebooks"
        path = repo if repo.is_dir() else Path.cwd() / "notebooks"
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"notebooks folder {str(p)!r} does not exist")
    return p


def default_runs_dir() -> Path:
    return Path(os.environ.get("ATTNREPRO_RUNS", "runs"))


def list_ablations(nb_dir: Path) -> list[str]:
    """Ablations: every ``<name>.yaml`` with a ``<name>.ipynb`` beside it."""
    return sorted(p.stem for p in nb_dir.glob("*.yaml") if (nb_dir / f"{p.stem}.ipynb").is_file())


def list_presets(nb_dir: Path) -> list[str]:
    return sorted(p.stem for p in (nb_dir / "presets").glob("*.yaml"))


def _read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path.name}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path.name}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _check_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of run-config keys, got {value!r}")
    return dict(value)


def _check_unknown(data: Mapping, allowed: set, where: str) -> None:
    bad = sorted(set(data) - allowed)
    if bad:
        raise ConfigError(f"{where}: unknown entry {bad[0]!r}; valid entries: {', '.join(sorted(allowed))}")


def load_grid(nb_dir: Path, ablation: str) -> dict:
    """Read and check ``<ablation>.yaml``; unknown ablation -> :class:`UsageError` naming the valid ones."""
    names = list_ablations(nb_dir)
    if ablation not in names:
        raise UsageError(f"unknown ablation {ablation!r}; choose from: {', '.join(names) or '(none found)'}")
    grid = _read_yaml(nb_dir / f"{ablation}.yaml", "grid")
    _check_unknown(grid, _GRID_KEYS, f"grid {ablation}.yaml")
    grid["base"] = _check_mapping(grid.get("base"), f"grid {ablation}.yaml: base")
    return grid


def load_preset(nb_dir: Path, preset: str) -> dict:
    names = list_presets(nb_dir)
    if preset not in names:
        raise UsageError(f"unknown preset {preset!r}; choose from: {', '.join(names) or '(none found)'}")
    data = _read_yaml(nb_dir / "presets" / f"{preset}.yaml", "preset")
    where = f"preset {preset}.yaml"
    _check_unknown(data, _PRESET_KEYS, where)
    data["base"] = _check_mapping(data.get("base"), f"{where}: base")
    data["options"] = _check_mapping(data.get("options"), f"{where}: options")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s >= 0 for s in seeds):
        raise ConfigError(f"{where}: seeds={seeds!r} must be a non-empty list of integers >= 0")
    data["seeds"] = seeds
    jobs = data.get("jobs", 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"{where}: jobs={jobs!r} must be an integer >= 1")
    data["jobs"] = jobs
    abl = _check_mapping(data.get("ablations"), f"{where}: ablations")
    for name, over in abl.items():
        over = _check_mapping(over, f"{where}: ablations.{name}")
        _check_unknown(over, _PRESET_ABLATION_KEYS, f"{where}: ablations.{name}")
        abl[name] = over
    data["ablations"] = abl
    return data


# ---------------------------------------------------------------------------- grid -> variants
def grid_variants(grid: Mapping, where: str = "grid") -> dict[str, dict]:
    """Variant name -> the run-config keys it sets (explicit ``variants`` plus the product of ``axes``)."""
    out: dict[str, dict] = {}
    variants = grid.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError(f"{where}: variants must map a variant name to its run-config keys, e.g. "
                          f"{{gaussian: {{kernel: gaussian}}}}; got {variants!r}")
    for name, keys in variants.items():
        out[str(name)] = _check_mapping(keys, f"{where}: variant {name!r}")
    axes = grid.get("axes") or {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}: axes must map a key to {{value name: value}}, got {axes!r}")
    if axes:
        levels = []
        for key, values in axes.items():
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"{where}: axis {key!r} must be a non-empty mapping {{value name: value}}, "
                                  f"got {values!r}")
            levels.append([(str(n), v if isinstance(v, dict) else {key: v}) for n, v in values.items()])
        for combo in itertools.product(*levels):
            name = "-".join(n for n, _ in combo)
            if name in out:
                raise ConfigError(f"{where}: variant {name!r} is defined twice (variants and axes)")
            keys: dict = {}
            for _, kv in combo:
                keys.update(kv)
            out[name] = keys
    for name in out:
        if not _NAME_RE.match(name):
            raise ConfigError(f"{where}: variant name {name!r} is not a valid folder name "
                              "(letters, digits, and _ . + = -)")
    if not out:
        raise ConfigError(f"{where}: no variants (give 'variants' and/or 'axes')")
    return out


_ALIAS_RE = re.compile(r"^(all|first(\d+)|last(\d+))$")


def resolve_stages(value: Any, model: str) -> Any:
    """``'all'``, ``'firstN'``, ``'lastN'`` -> a list of 1-based stages of ``model``; anything else unchanged."""
    if not isinstance(value, str):
        return value
    m = _ALIAS_RE.match(value.strip().lower())
    if not m:
        return value
    n = num_stages(model)
    if m.group(1) == "all":
        return list(range(1, n + 1))
    k = int(m.group(2) or m.group(3))
    if not 1 <= k <= n:
        raise ConfigError(f"stages={value!r}: {model} has {n} stages; use 1..{n}")
    return list(range(1, k + 1)) if m.group(2) else list(range(n - k + 1, n + 1))


# ---------------------------------------------------------------------------- runs
@dataclasses.dataclass
class Run:
    """One notebook execution: one variant of one ablation with one seed under one preset."""
    preset: str
    ablation: str
    variant: str
    seed: int
    config: RunConfig
    params: dict           # the keys the variant sets (as resolved), for variant.json and the report
    reference: str | None
    notebook: Path
    out_dir: Path
    options: dict           # notebook options (non-config parameters)

    @property
    def name(self) -> str:
        return f"{self.ablation}/{self.variant}-s{self.seed}"

    @property
    def lock_path(self) -> Path:
        return self.out_dir.parent / f".{self.out_dir.name}.lock"

    def variant_info(self) -> dict:
        return {"ablation": self.ablation, "variant": self.variant, "seed": self.seed, "preset": self.preset,
                "reference": self.reference, "is_reference": self.variant == self.reference,
                "params": self.params, "notebook": self.notebook.name, "config_hash": self.config.hash()}


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook's ``parameters`` cell declares: name -> {inferred_type_name, default, help}."""
    import papermill as pm
    import logging
    logging.getLogger("papermill").setLevel(logging.ERROR)
    return {k: dict(v) for k, v in pm.inspect_notebook(str(path)).items()}


def _coerce_option(key: str, value: Any, declared: Mapping[str, dict]) -> Any:
    """A notebook option from YAML (typed) or the CLI (a string, parsed as YAML)."""
    if isinstance(value, str):
        tname = declared.get(key, {}).get("inferred_type_name", "")
        if tname != "str" or value.strip().lower() in ("none", "null"):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
    return value


def split_overrides(pairs: Sequence[Sequence[str]], option_names: Iterable[str]) -> tuple[dict, dict]:
    """``-p`` pairs -> (run-config overrides, notebook options); an unknown key raises :class:`ConfigError`."""
    option_names = set(option_names) - set(RUNNER_KEYS)
    cfg, opts = {}, {}
    for k, v in pairs:
        if k in KEYS:
            cfg[k] = v if k == "stages" and isinstance(v, str) and _ALIAS_RE.match(v.strip().lower()) \
                else coerce(k, v)
        elif k in option_names:
            opts[k] = v
        else:
            import difflib
            close = difflib.get_close_matches(k, list(KEYS) + sorted(option_names), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown key {k!r}{hint} (run-config keys: see `attnrepro config`; "
                              f"notebook options: {', '.join(sorted(option_names)) or 'none'})")
    return cfg, opts


def expand(ablations: Sequence[str], preset: str, overrides: Sequence[Sequence[str]] | Mapping[str, Any] = (),
           *, nb_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Every run of ``ablations`` under ``preset`` with ``overrides`` (``-p`` pairs or a dict), all validated."""
    nbd = notebooks_dir(nb_dir)
    rdir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not ablations:
        raise UsageError(f"name at least one ablation; choose from: {', '.join(list_ablations(nbd))}")
    grids = {a: load_grid(nbd, a) for a in dict.fromkeys(ablations)}   # unknown names fail here, first
    pre = load_preset(nbd, preset)
    declared = {a: notebook_parameters(nbd / f"{a}.ipynb") for a in grids}
    option_names = set().union(*(set(d) - set(KEYS) for d in declared.values()))
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else [tuple(p) for p in overrides]
    cfg_over, opt_over = split_overrides(pairs, option_names)
    for k in pre["options"]:
        if k not in option_names:
            raise ConfigError(f"preset {preset}.yaml: options.{k} is not a parameter of any of the notebooks "
                              f"{', '.join(grids)}; their options: {', '.join(sorted(option_names)) or 'none'}")
    for a in pre["ablations"]:
        if a not in list_ablations(nbd):
            raise ConfigError(f"preset {preset}.yaml: ablations.{a} is not an ablation; "
                              f"choose from: {', '.join(list_ablations(nbd))}")

    runs: list[Run] = []
    for abl, grid in grids.items():
        where = f"grid {abl}.yaml"
        variants = grid_variants(grid, where)
        pa = pre["ablations"].get(abl, {})
        extra = pa.get("variants") or {}
        for name, keys in _check_mapping(extra, f"preset {preset}.yaml: ablations.{abl}.variants").items():
            variants[str(name)] = _check_mapping(keys, f"preset {preset}.yaml: ablations.{abl}.variants.{name}")
        only = pa.get("only")
        if only is not None:
            missing = [v for v in only if v not in variants]
            if missing:
                raise ConfigError(f"preset {preset}.yaml: ablations.{abl}.only names {missing[0]!r}, not a "
                                  f"variant of {abl}; variants: {', '.join(variants)}")
            variants = {v: variants[v] for v in only}
        reference = grid.get("reference")
        if reference is not None and reference not in grid_variants(grid, where) and reference not in variants:
            raise ConfigError(f"{where}: reference {reference!r} is not a variant; variants: {', '.join(variants)}")
        decl = declared[abl]
        opts = {k: _coerce_option(k, v, decl) for k, v in {**pre["options"], **opt_over}.items() if k in decl}
        for vname, vkeys in variants.items():
            for seed in pre["seeds"]:
                merged: dict[str, Any] = {}
                for layer, src in ((pre["base"], f"preset {preset}.yaml: base"), (grid["base"], f"{where}: base"),
                                   (_check_mapping(pa.get("base"), f"preset {preset}.yaml: ablations.{abl}.base"),
                                    f"preset {preset}.yaml: ablations.{abl}.base"),
                                   (vkeys, f"{where}: variant {vname!r}"), ({"seed": seed}, "seed"),
                                   (cfg_over, "-p")):
                    try:
                        from .config import check_keys
                        check_keys(layer)
                    except ConfigError as e:
                        raise ConfigError(f"{src}: {e}") from None
                    merged.update(layer)
                model = merged.get("model", RunConfig.model)
                merged["stages"] = resolve_stages(merged.get("stages"), model)
                try:
                    cfg = RunConfig.from_dict(merged)
                except ConfigError as e:
                    raise ConfigError(f"{abl}/{vname} (preset {preset}, seed {seed}): {e}") from None
                params = {k: getattr(cfg, k) for k in vkeys}
                runs.append(Run(preset=preset, ablation=abl, variant=vname, seed=seed, config=cfg, params=params,
                                reference=reference, notebook=nbd / f"{abl}.ipynb",
                                out_dir=rdir / preset / abl / f"{vname}-s{seed}", options=opts))
    return runs


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")


def run_state(run: Run) -> str:
    """``new`` (nothing there), ``finished`` (this config finished), ``failed`` (this config failed),
    ``stale`` (the folder holds another config), ``incomplete`` (this config, no final status)."""
    m = read_json(run.out_dir / "metrics.json")
    h = run.config.hash()
    if m is None:
        c = read_json(run.out_dir / "config.json")
        if c is None:
            return "new" if not any(run.out_dir.glob("*")) else "incomplete"
        return "incomplete" if c.get("config_hash") == h else "stale"
    if m.get("config_hash") != h:
        return "stale"
    return "finished" if m.get("status") == "finished" else "failed"


# ---------------------------------------------------------------------------- kernel spec
def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Make sure the Jupyter kernel ``name`` exists; install it for this interpreter into ``sys.prefix`` if not."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
        exe = spec.argv[0] if spec.argv else ""
        if exe and not (Path(exe).exists() or shutil.which(exe)):
            raise NoSuchKernel(name)
        return name
    except NoSuchKernel:
        pass
    try:
        from ipykernel.kernelspec import install
        install(kernel_name=name, display_name=f"{name} ({Path(sys.prefix).name})", prefix=sys.prefix)
        KernelSpecManager().get_kernel_spec(name)
    except Exception as e:  # noqa: BLE001 - any failure here means no kernel
        raise UsageError(f"the Jupyter kernel {name!r} is missing and could not be installed ({e}); install it "
                         f"with: {sys.executable} -m ipykernel install --sys-prefix --name {name}") from None
    return name


# ---------------------------------------------------------------------------- execution
def _clear_dir(path: Path) -> None:
    if path.is_dir():
        for p in path.iterdir():
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


def _record_failure(run: Run, reason: str, started: float) -> dict:
    """Write ``metrics.json`` with status failed unless the engine already wrote it for this config."""
    path = run.out_dir / "metrics.json"
    m = read_json(path)
    h = run.config.hash()
    if m is not None and m.get("config_hash") == h and m.get("status") == "failed" and m.get("reason"):
        return m
    epochs = 0
    with contextlib.suppress(OSError):
        epochs = sum(1 for line in (run.out_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    m = {**(m or {}), "status": "failed", "reason": reason, "config": run.config.to_dict(), "config_hash": h,
         "wall_time_s": round(time.time() - started, 3), "epochs_completed": (m or {}).get("epochs_completed",
                                                                                         epochs)}
    _write_json(path, m)
    return m


def execute(run: Run, *, force: bool = False, kernel_name: str = KERNEL_NAME, start_timeout: int = 180) -> dict:
    """Execute one run's notebook under its lock. Returns a summary dict (name, status, reason, top1, time).

    Never raises for a failing run: the failure is recorded in the run folder and returned.
    """
    import filelock
    run.out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(run.lock_path))
    summary = {"run": run.name, "ablation": run.ablation, "variant": run.variant, "seed": run.seed}
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"{run.name}: another pipeline is running it; waiting", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        state = run_state(run)
        if state == "finished" and not force:
            return {**summary, **_summary_of(run, "skipped")}
        if state == "stale" or force:
            _clear_dir(run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run.out_dir / "variant.json", run.variant_info())
        started = time.time()
        try:
            _papermill(run, kernel_name, start_timeout)
        except BaseException as e:  # noqa: BLE001 - a kernel death or a cell error is a failed run, not a crash
            if isinstance(e, KeyboardInterrupt):
                _record_failure(run, "interrupted", started)
                raise
            _record_failure(run, _failure_reason(e), started)
            return {**summary, **_summary_of(run, "failed")}
        m = read_json(run.out_dir / "metrics.json")
        if not m or m.get("status") != "finished" or m.get("config_hash") != run.config.hash():
            _record_failure(run, "the notebook finished without writing a finished metrics.json for this config",
                            started)
            return {**summary, **_summary_of(run, "failed")}
        return {**summary, **_summary_of(run, "finished")}
    finally:
        lock.release()


def _summary_of(run: Run, status: str) -> dict:
    m = read_json(run.out_dir / "metrics.json") or {}
    final = m.get("final") or {}
    return {"status": status, "reason": m.get("reason") if status == "failed" else None,
            "val_top1": final.get("val_top1"), "wall_time_s": m.get("wall_time_s")}


def _papermill(run: Run, kernel_name: str, start_timeout: int) -> None:
    import logging
    import papermill as pm
    logging.getLogger("papermill").setLevel(logging.ERROR)
    params = {**run.config.to_dict(), **run.options, "out_dir": str(run.out_dir.resolve())}
    with open(run.out_dir / "log.txt", "w") as log:
        pm.execute_notebook(str(run.notebook), str(run.out_dir / "notebook.ipynb"), parameters=params,
                            kernel_name=kernel_name, progress_bar=False, log_output=False, stdout_file=log,
                            stderr_file=log, start_timeout=start_timeout, cwd=os.getcwd(),
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])   # no kernel start-up chatter


# process-pool plumbing: each worker takes a slot number, which picks its GPUs
_SLOT: dict = {}


def _init_worker(slots, env: dict) -> None:
    slot = slots.get()
    os.environ.update(env.get(slot, {}))
    _SLOT["slot"] = slot


def _execute_job(run: Run, force: bool, kernel_name: str) -> dict:
    try:
        return execute(run, force=force, kernel_name=kernel_name)
    except Exception as e:  # noqa: BLE001 - e.g. a lock or file-system error: report it, keep the pool going
        return {"run": run.name, "ablation": run.ablation, "variant": run.variant, "seed": run.seed,
                "status": "failed", "reason": f"runner error: {_failure_reason(e)}", "val_top1": None,
                "wall_time_s": None, "traceback": traceback.format_exc()}


def _gpu_count() -> int:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return len([d for d in vis.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def _job_envs(jobs: int) -> dict[int, dict]:
    """Per-slot environment: CPU threads split between jobs; GPUs split when there are at least ``jobs``."""
    cores = os.cpu_count() or 1
    env: dict[int, dict] = {i: {} for i in range(jobs)}
    for i in range(jobs):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if var not in os.environ:
                env[i][var] = str(max(1, cores // jobs))
    ngpu = _gpu_count()
    if jobs > 1 and ngpu >= jobs:
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in vis.split(",")] if vis else [str(i) for i in range(ngpu)]
        per = ngpu // jobs
        for i in range(jobs):
            env[i]["CUDA_VISIBLE_DEVICES"] = ",".join(ids[i * per:(i + 1) * per])
    return env


def run_all(runs: Sequence[Run], *, jobs: int = 1, force: bool = False, kernel_name: str = KERNEL_NAME,
            progress: bool = True) -> list[dict]:
    """Execute ``runs`` (skipping finished ones unless ``force``); returns one summary dict per run."""
    from tqdm.auto import tqdm
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    states = {r.name: run_state(r) for r in runs}
    todo = [r for r in runs if force or states[r.name] != "finished"]
    results = {r.name: {"run": r.name, "ablation": r.ablation, "variant": r.variant, "seed": r.seed,
                        **_summary_of(r, "skipped")} for r in runs if r not in todo}
    if results:
        print(f"{len(results)} run(s) up to date (skipped), {len(todo)} to run", file=sys.stderr, flush=True)
    if todo:
        ensure_kernel(kernel_name)
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo, file=sys.stderr,
               dynamic_ncols=True)

    def done(res: dict) -> None:
        results[res["run"]] = res
        t = res.get("wall_time_s")
        extra = f" val_top1={res['val_top1']:.2f}" if isinstance(res.get("val_top1"), (int, float)) else ""
        extra += f" ({t:.0f}s)" if isinstance(t, (int, float)) else ""
        why = f": {res.get('reason')}" if res["status"] == "failed" else ""
        bar.write(f"{res['status']:>8}  {res['run']}{extra}{why}", file=sys.stderr)
        bar.update(1)

    envs = _job_envs(jobs)
    try:
        if jobs == 1 or len(todo) <= 1:
            with _environ(envs[0]):
                for r in todo:
                    done(_execute_job(r, force, kernel_name))
        else:
            ctx = mp.get_context("spawn")
            slots = ctx.Manager().Queue()
            for i in range(jobs):
                slots.put(i)
            with cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                                        initargs=(slots, envs)) as pool:
                futs = [pool.submit(_execute_job, r, force, kernel_name) for r in todo]
                for f in cf.as_completed(futs):
                    done(f.result())
    finally:
        bar.close()
    return [results[r.name] for r in runs]


@contextlib.contextmanager
def _environ(env: Mapping[str, str]):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summary_table(results: Sequence[Mapping]) -> str:
    rows = [("run", "status", "val_top1", "time_s", "reason")]
    for r in results:
        top1 = r.get("val_top1")
        t = r.get("wall_time_s")
        rows.append((r["run"], r["status"], f"{top1:.2f}" if isinstance(top1, (int, float)) else "-",
                     f"{t:.0f}" if isinstance(t, (int, float)) else "-", (r.get("reason") or "")[:100]))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d:>{w[3]}}  {e}".rstrip() for a, b, c, d, e in rows)


# ---------------------------------------------------------------------------- CLI
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR",
                        help="folder with the ablation notebooks, grids and presets/ (default: the repository's "
                             "notebooks/, or $ATTNREPRO_NOTEBOOKS)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="where run folders go (default: runs, or $ATTNREPRO_RUNS)")


def configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ablations", nargs="+", metavar="ABLATION", help="ablation(s) to run, e.g. kernel placement")
    parser.add_argument("--preset", required=True, help="preset name (notebooks/presets/NAME.yaml), e.g. smoke")
    add_overrides(parser)
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="notebooks executed at once (default: the preset's jobs, else 1)")
    parser.add_argument("--force", action="store_true", help="re-run finished runs too")
    _common(parser)


def run_run(args: argparse.Namespace) -> int:
    runs = expand(args.ablations, args.preset, args.param, nb_dir=args.notebooks_dir, runs_dir=args.runs_dir)
    jobs = args.jobs if args.jobs is not None else load_preset(notebooks_dir(args.notebooks_dir), args.preset)["jobs"]
    results = run_all(runs, jobs=jobs, force=args.force)
    failed = [r for r in results if r["status"] == "failed"]
    print(summary_table(results))
    if failed:
        print(f"{len(failed)} of {len(results)} run(s) failed; see their log.txt and notebook.ipynb",
              file=sys.stderr)
        return 1
    return 0


def configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ablations", nargs="*", metavar="ABLATION",
                        help="with --preset: show the runs these ablations expand to and their state")
    parser.add_argument("--preset", default=None, help="preset to expand the grids with")
    add_overrides(parser)
    _common(parser)


def run_list(args: argparse.Namespace) -> int:
    nbd = notebooks_dir(args.notebooks_dir)
    if args.preset is None and not args.ablations:
        print("ablations:")
        for a in list_ablations(nbd):
            g = load_grid(nbd, a)
            n = len(grid_variants(g, f"grid {a}.yaml"))
            print(f"  {a:<12} {n:>2} variants, reference {g.get('reference')!s:<10} {g.get('description', '')}")
        print("presets:")
        for p in list_presets(nbd):
            d = load_preset(nbd, p)
            print(f"  {p:<12} seeds {d['seeds']!s:<10} {d.get('description', '')}")
        return 0
    preset = args.preset or "smoke"
    runs = expand(args.ablations or list_ablations(nbd), preset, args.param, nb_dir=nbd, runs_dir=args.runs_dir)
    w = max(len(r.name) for r in runs)
    for r in runs:
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        ref = " (reference)" if r.variant == r.reference else ""
        print(f"{r.name:<{w}}  {run_state(r):<10}  {r.config.hash()}  {params}{ref}")
    return 0
