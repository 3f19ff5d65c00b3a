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

- Before any notebook starts, every run that will train is checked (:func:`check_runs`): the device
  (``device='cuda'`` without a GPU), the AMP mode, ``nproc_per_node`` against the GPUs a run gets and torchrun's
  presence, the dataset (where ``data_dir`` says, else the default places) and the sizes (the model is built on the
  meta device and given a batch of the dataset's shape). Any problem exits with code 2 and one message naming each
  problem and the runs it hits; nothing starts.
- A run whose ``metrics.json`` says ``finished`` with the config's hash is skipped; ``--force`` re-runs it.
- Runs of one config (the same hash: e.g. ``placement/none`` and ``baseline/none``) train once per preset. The first
  in order trains; the others wait for it (they are scheduled after it) and then :func:`reuse` it: their folders get
  copies of its ``config.json``, ``metrics.jsonl``, ``log.txt`` and ``metrics.json`` (not the checkpoint or the
  executed notebook), and their ``variant.json`` and ``metrics.json`` say ``reused_from: <preset>/<ablation>/<run>``
  (the folder that trained it), so a sum of ``wall_time_s`` counts that training once. A finished run of the same
  config in another folder of the preset is reused the same way (not with ``--force``). When the first fails, the
  others are recorded as failed with that reason and are retried with it next time.
- A run folder holding a *different* config (the grid or the preset changed) is emptied first, so the engine
  never resumes a checkpoint of another config. A failed run of the *same* config keeps its checkpoint and resumes;
  each attempt removes the earlier attempt's ``metrics.json`` and rewrites ``config.json``, so keys left out of the
  hash (``device``, ``data_dir``, ``num_workers``) may change between attempts and never come back with an old value.
- A run that fails (an exception in the notebook, a NaN the engine rejects, the kernel dying) has ``metrics.json``
  with ``status: failed`` and a ``reason`` (written here when the engine could not); the other runs go on and
  the command exits 1 after a summary table. A kernel that dies before it answers (it has run nothing) is started
  again, up to :data:`KERNEL_START_ATTEMPTS` times.
- Locks keep two pipelines on one runs folder from executing one config twice: one per config
  (``<preset>/.config-<hash>.lock``) and one per folder (``.<variant>-s<seed>.lock`` beside it). The second waits,
  then sees the run finished and skips (or reuses) it. The lock files are removed when the run ends; a waiting
  pipeline is never let in twice (see :func:`attnrepro._io.held_lock`).
- ``--jobs N`` executes N notebooks at once, each in its own process with its own kernel; each kernel gets
  ``OMP_NUM_THREADS = cores // N`` (unless set) and, when there are at least N GPUs, its own share of them
  through ``CUDA_VISIBLE_DEVICES``. Kernels talk to the runner over Unix sockets in a private temporary folder per
  kernel (ZeroMQ's IPC transport), so kernels started at once cannot collide on a TCP port.
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

from ._io import atomic_write, atomic_write_text, held_lock, read_json
from .cli import UsageError, add_overrides
from .config import KEYS, ConfigError, RunConfig, coerce, num_stages

__all__ = [
    "KERNEL_NAME", "Run", "notebooks_dir", "list_ablations", "list_presets", "load_grid", "load_preset",
    "grid_variants", "expand", "run_state", "execute", "run_all", "notebook_parameters", "resolve_stages",
    "ensure_kernel", "configure_run", "run_run", "configure_list", "run_list", "check_runs", "run_problems", "plan",
    "reuse", "find_twin", "record_twin_failure", "KERNEL_START_ATTEMPTS",
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


# ---------------------------------------------------------------------------- checks before anything starts
#: run-config keys that do not change the model (the size check builds one model per distinct rest)
_NOT_MODEL_KEYS = frozenset({
    "seed", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "no_decay_norm_bias",
    "label_smoothing", "schedule", "warmup_epochs", "restart_period", "device", "amp", "channels_last", "compile",
    "cudnn_benchmark", "tf32", "eval_batch_size", "checkpoint", "max_steps", "data_dir", "num_workers",
    "train_subset", "val_split", "augment"})
#: what the in-memory datasets feed a model: (channels, side, classes)
_DATA_SHAPES = {"fashion_mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100),
                "synthetic": (3, 32, 10)}


def _gpus_per_job(jobs: int) -> int:
    """GPUs one notebook sees: its share when ``--jobs`` splits them (see :func:`_job_envs`), else all."""
    ngpu = _gpu_count()
    return ngpu // jobs if jobs > 1 and ngpu >= jobs else ngpu


def _device_problems(cfg: RunConfig, nproc: int, multi_node: bool, gpus: int) -> tuple[list[str], Any]:
    from .train.cuda import check_amp, resolve_device
    try:
        device = resolve_device(cfg.device)
    except ConfigError as e:
        return [str(e)], None
    out = []
    try:
        check_amp(cfg.amp, device)
    except ConfigError as e:
        out.append(str(e))
    if device.type == "cuda" and nproc > gpus and not multi_node:
        out.append(f"nproc_per_node={nproc} needs {nproc} GPUs per run, but each run gets {gpus} here; "
                   f"use -p nproc_per_node {max(gpus, 1)}" + (" or fewer --jobs" if gpus < _gpu_count() else ""))
    return out, device


def _launch_problems(run: Run) -> tuple[list[str], int, bool]:
    """(problems, nproc_per_node, multi-node) of the notebook options that start torchrun."""
    import shlex
    nproc = run.options.get("nproc_per_node", 1)
    targs = run.options.get("torchrun_args", "") or ""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        return [f"nproc_per_node={nproc!r} is not valid; it must be an integer >= 1"], 1, False
    try:
        extra = shlex.split(str(targs))
    except ValueError as e:
        return [f"torchrun_args={targs!r} cannot be split into arguments ({e})"], nproc, False
    multi_node = any(a.split("=")[0] in ("--nnodes", "--rdzv_endpoint", "--rdzv-endpoint", "--master_addr",
                                         "--master-addr") for a in extra)
    if nproc > 1 or extra:
        import importlib.util
        import torch.distributed
        if not torch.distributed.is_available() or importlib.util.find_spec("torch.distributed.run") is None:
            return [f"nproc_per_node={nproc} needs torchrun (torch.distributed.run), which this torch build lacks; "
                    "use -p nproc_per_node 1"], nproc, multi_node
    return [], nproc, multi_node


def _data_facts(cfg: RunConfig) -> tuple[str | None, tuple[int, int, int] | None]:
    """(problem, (channels, side, classes)) of the dataset; checks presence only (see :func:`attnrepro.data.locate`)."""
    from .data import DataError, locate
    try:
        where = locate(cfg)
        if cfg.dataset == "imagefolder":
            classes = sum(1 for p in (Path(where) / "train").iterdir() if p.is_dir())
            return None, (3, cfg.image_size, classes)
    except (DataError, ValueError, OSError) as e:
        return str(e), None
    return None, _DATA_SHAPES[cfg.dataset]


def _size_problem(cfg: RunConfig, shape: tuple[int, int, int]) -> str | None:
    """Build the model on the meta device (no memory, no compute) and pass a batch of 2 through it."""
    import torch
    from .models import model_from_config
    c, side, classes = shape
    what = f"{cfg.model} with attention={cfg.attention!r} on {c}x{side}x{side} inputs"
    try:
        with torch.device("meta"):
            model = model_from_config(cfg, num_classes=classes, in_chans=c, input_size=side)
        with torch.no_grad():
            y = model(torch.empty(2, c, side, side, device="meta"))
    except NotImplementedError:   # an op without a meta kernel: the size cannot be checked here, the run will tell
        return None
    except (ValueError, TypeError, RuntimeError) as e:
        msg = str(e).strip().splitlines()
        return f"{what} cannot be built or run: {msg[-1] if msg else type(e).__name__}"
    if tuple(y.shape) != (2, classes):
        return f"{what} gives outputs of shape {tuple(y.shape)}, not (2, {classes})"
    return None


def run_problems(runs: Sequence[Run], *, jobs: int = 1) -> dict[str, list[str]]:
    """Every problem that can be found without training, for each run: problem -> the runs it hits.

    Checks the device (``device='cuda'`` without a GPU), the AMP mode on that device, the notebook options that start
    torchrun (``nproc_per_node`` against the GPUs each run gets, torchrun's presence), the dataset (its presence where
    ``data_dir`` says, or the default places; see :func:`attnrepro.data.locate`) and the sizes (the model is built on
    the meta device and given one batch of the dataset's shape).
    """
    problems: dict[str, list[str]] = {}
    gpus = _gpus_per_job(jobs) if runs else 0
    data_cache: dict[tuple, tuple] = {}
    size_cache: dict[str, str | None] = {}
    for run in runs:
        cfg = run.config
        found, nproc, multi_node = _launch_problems(run)
        dev_found, _ = _device_problems(cfg, nproc, multi_node, gpus)
        found += dev_found
        key = (cfg.dataset, cfg.data_dir, cfg.image_size)
        if key not in data_cache:
            data_cache[key] = _data_facts(cfg)
        data_problem, shape = data_cache[key]
        if data_problem:
            found.append(data_problem)
        if shape is not None:
            mkey = json.dumps([{k: v for k, v in cfg.to_dict().items() if k not in _NOT_MODEL_KEYS}, shape],
                              sort_keys=True, default=str)
            if mkey not in size_cache:
                size_cache[mkey] = _size_problem(cfg, shape)
            if size_cache[mkey]:
                found.append(size_cache[mkey])
        for p in found:
            problems.setdefault(p, []).append(run.name)
    return problems


def check_runs(runs: Sequence[Run], *, jobs: int = 1) -> None:
    """:func:`run_problems`, raised as one :class:`UsageError` (exit code 2) that names each problem and its runs."""
    problems = run_problems(runs, jobs=jobs)
    if not problems:
        return
    hit = {name for names in problems.values() for name in names}

    def names(ns: list[str]) -> str:
        return ", ".join(ns[:3]) + (f" and {len(ns) - 3} more" if len(ns) > 3 else "")
    parts = [f"{p.rstrip('.')} ({'all' if len(ns) == len(runs) > 1 else names(ns)})" for p, ns in problems.items()]
    raise UsageError(f"{len(hit)} of {len(runs)} run(s) cannot start here, so none was started: " + "; ".join(parts))


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


def find_twin(run: Run) -> Path | None:
    """Another run folder of the same preset that finished this run's config (same hash), or None. Folders that
    trained it themselves come before folders that reused it."""
    found, h = [], run.config.hash()
    for m in sorted((run.out_dir.parent.parent).glob("*/*/metrics.json")):
        d = m.parent
        if d != run.out_dir and (done := _finished_with(d, h)) is not None:
            found.append((bool(done.get("reused_from")), d))
    return min(found)[1] if found else None


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


def execute(run: Run, *, force: bool = False, kernel_name: str = KERNEL_NAME, start_timeout: int = 180,
            reuse_from: Path | None | bool = True) -> dict:
    """Execute one run's notebook under its locks. Returns a summary dict (name, status, reason, top1, time).

    Status ``skipped`` (this folder finished this config), ``reused`` (another folder of the preset finished the
    same config: its record is copied, see :func:`reuse`), ``finished`` or ``failed``. ``reuse_from``: True looks for
    such a folder (not with ``force``), a Path names it (the pipeline passes the twin it has just run), False never
    reuses. Never raises for a failing run: the failure is recorded in the run folder and returned.

    Every attempt starts from the config it is given: the record of an earlier failed attempt (``metrics.json``) is
    removed and ``config.json`` rewritten, so a key left out of the hash (``device``, ``data_dir``, ``num_workers``)
    lets the run resume its checkpoint but never brings back an old value.
    """
    summary = {"run": run.name, "ablation": run.ablation, "variant": run.variant, "seed": run.seed}
    with _run_locks(run):
        state = run_state(run)
        if state == "finished" and not force:
            return {**summary, **_summary_of(run, "skipped")}
        src = None
        if isinstance(reuse_from, Path):
            src = reuse_from if _finished_with(reuse_from, run.config.hash()) is not None else None
        elif reuse_from and not force:
            src = find_twin(run)
        if src is not None:
            reuse(run, src)
            return {**summary, **_summary_of(run, "reused")}
        if state == "stale" or force:
            _clear_dir(run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (run.out_dir / "metrics.json").unlink()     # an earlier attempt's record: this attempt writes its own
        _write_json(run.out_dir / "config.json", {**run.config.to_dict(), "config_hash": run.config.hash()})
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


def record_twin_failure(run: Run, twin: str, reason: str | None) -> dict:
    """``run`` is not trained because the run ``twin`` of the same config has just failed: record that (so the
    report says why) and return the summary. The next ``attnrepro run`` tries ``twin`` again, then reuses it."""
    summary = {"run": run.name, "ablation": run.ablation, "variant": run.variant, "seed": run.seed}
    with _run_locks(run):
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


#: how often a kernel that dies before it answers is started again (it has run no cell, so this is safe)
KERNEL_START_ATTEMPTS = 3


def _kernel_died_at_start(e: BaseException) -> bool:
    # jupyter_client's KernelClient.wait_for_ready: the kernel process exited before it answered kernel_info
    return isinstance(e, RuntimeError) and "died before replying to kernel_info" in str(e)


@contextlib.contextmanager
def _kernel_config():
    """The kernel manager's config for one notebook: ZeroMQ over Unix sockets in a fresh private folder.

    With TCP, each process picks "free" ports and the kernel binds them later; two workers starting kernels at once
    can pick the same port, and one kernel dies (``Address already in use``). Socket files in a folder of their own
    cannot collide. Falls back to TCP where ZeroMQ has no IPC transport (Windows).
    """
    import tempfile
    import zmq
    from traitlets.config import Config
    if not zmq.has("ipc"):
        yield Config()
        return
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):   # a Unix socket path has at most ~104 bytes
        base = "/tmp"
    with tempfile.TemporaryDirectory(prefix="attnrepro-kernel-", dir=base) as d:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(d, "kernel")}})


def _papermill(run: Run, kernel_name: str, start_timeout: int) -> None:
    import logging
    import papermill as pm
    logging.getLogger("papermill").setLevel(logging.ERROR)
    params = {**run.config.to_dict(), **run.options, "out_dir": str(run.out_dir.resolve())}
    with open(run.out_dir / "log.txt", "w") as log:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                with _kernel_config() as config:
                    pm.execute_notebook(str(run.notebook), str(run.out_dir / "notebook.ipynb"), parameters=params,
                                        kernel_name=kernel_name, progress_bar=False, log_output=False,
                                        stdout_file=log, stderr_file=log, start_timeout=start_timeout,
                                        cwd=os.getcwd(), config=config,
                                        extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no start-up chatter
                return
            except RuntimeError as e:
                if not _kernel_died_at_start(e):
                    raise
                if attempt == KERNEL_START_ATTEMPTS:
                    raise RuntimeError(f"the kernel died before it replied, {attempt} times in a row: {e}") from e
                print(f"attnrepro: the kernel died before it replied ({e}); starting another "
                      f"(attempt {attempt + 1} of {KERNEL_START_ATTEMPTS})", file=log, flush=True)


# process-pool plumbing: each worker takes a slot number, which picks its GPUs
_SLOT: dict = {}


def _init_worker(slots, env: dict) -> None:
    slot = slots.get()
    os.environ.update(env.get(slot, {}))
    _SLOT["slot"] = slot


def _job_error(run: Run, e: BaseException) -> dict:
    return {"run": run.name, "ablation": run.ablation, "variant": run.variant, "seed": run.seed,
            "status": "failed", "reason": f"runner error: {_failure_reason(e)}", "val_top1": None,
            "wall_time_s": None, "traceback": traceback.format_exc()}


def _execute_job(run: Run, force: bool, kernel_name: str, reuse_from: Path | None | bool = True) -> dict:
    try:
        return execute(run, force=force, kernel_name=kernel_name, reuse_from=reuse_from)
    except Exception as e:  # noqa: BLE001 - e.g. a lock or file-system error: report it, keep the pool going
        return _job_error(run, e)


def _twin_failed_job(run: Run, twin: str, reason: str | None) -> dict:
    try:
        return record_twin_failure(run, twin, reason)
    except Exception as e:  # noqa: BLE001
        return _job_error(run, e)


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


def _make_pool(workers: int, envs: dict[int, dict]) -> cf.Executor:
    """``workers`` processes (spawned: each starts its kernels from a clean interpreter), each with its slot's env."""
    ctx = mp.get_context("spawn")
    slots = ctx.Manager().Queue()
    for i in range(len(envs)):
        slots.put(i)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                  initargs=(slots, envs))


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


def run_all(runs: Sequence[Run], *, jobs: int = 1, force: bool = False, kernel_name: str = KERNEL_NAME,
            progress: bool = True) -> list[dict]:
    """Execute ``runs`` (skipping finished ones unless ``force``); returns one summary dict per run.

    Before anything starts, every run that will train is checked (:func:`check_runs`); a problem raises
    :class:`UsageError` and nothing starts. Runs with the same config train once (:func:`plan`, :func:`reuse`).
    """
    from tqdm.auto import tqdm
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    firsts, waiting = plan(runs, force=force)
    todo = {r.name for r in firsts} | {r.name for ws in waiting.values() for r in ws}
    results = {r.name: {"run": r.name, "ablation": r.ablation, "variant": r.variant, "seed": r.seed,
                        **_summary_of(r, "skipped")} for r in runs if r.name not in todo}
    will_train = [r for r in firsts if force or find_twin(r) is None]
    check_runs(will_train, jobs=jobs)
    if results:
        print(f"{len(results)} run(s) up to date (skipped), {len(todo)} to run", file=sys.stderr, flush=True)
    if will_train:
        ensure_kernel(kernel_name)
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo, file=sys.stderr,
               dynamic_ncols=True)

    def done(res: dict) -> None:
        results[res["run"]] = res
        t = res.get("wall_time_s")
        extra = f" val_top1={res['val_top1']:.2f}" if isinstance(res.get("val_top1"), (int, float)) else ""
        extra += f" ({t:.0f}s)" if isinstance(t, (int, float)) and res["status"] != "reused" else ""
        extra += f" from {res['reused_from']}" if res["status"] == "reused" else ""
        why = f": {res.get('reason')}" if res["status"] == "failed" else ""
        bar.write(f"{res['status']:>8}  {res['run']}{extra}{why}", file=sys.stderr)
        bar.update(1)

    def then(first: Run, res: dict) -> list[tuple]:
        """The jobs of the runs that waited for ``first``: reuse it, or record that it failed."""
        if res["status"] in ("finished", "skipped", "reused"):
            return [(_execute_job, w, force, kernel_name, first.out_dir) for w in waiting[first.name]]
        return [(_twin_failed_job, w, first.name, res.get("reason")) for w in waiting[first.name]]

    envs = _job_envs(jobs)
    try:
        if jobs == 1 or len(firsts) <= 1:
            with _environ(envs[0]):
                for r in firsts:
                    res = _execute_job(r, force, kernel_name)
                    done(res)
                    for fn, *args in then(r, res):
                        done(fn(*args))
        else:
            with _make_pool(min(jobs, len(firsts)), envs) as pool:
                pending = {pool.submit(_execute_job, r, force, kernel_name): r for r in firsts}
                while pending:
                    finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        r = pending.pop(fut)
                        res = fut.result()
                        done(res)
                        if r.name in waiting:
                            for fn, *args in then(r, res):
                                pending[pool.submit(fn, *args)] = args[0]
                            waiting.pop(r.name)
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
        note = (r.get("reason") or "") if r["status"] != "reused" else f"same config as {r.get('reused_from')}"
        rows.append((r["run"], r["status"], f"{top1:.2f}" if isinstance(top1, (int, float)) else "-",
                     f"{t:.0f}" if isinstance(t, (int, float)) and r["status"] != "reused" else "-", note[:100]))
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
        info = read_json(r.out_dir / "variant.json") or {}
        reused = f" (reused from {info['reused_from']})" if info.get("reused_from") and run_state(r) == "finished" \
            else ""
        print(f"{r.name:<{w}}  {run_state(r):<10}  {r.config.hash()}  {params}{ref}{reused}")
    return 0
