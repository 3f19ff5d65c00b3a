"""Grids and presets -> run configs: reading the YAML files, checking them, and expanding
grid x preset x seeds x ``-p`` overrides into :class:`Run` objects (see :mod:`attnrepro.pipeline` for the file
formats and the merge order).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..config import _NOT_HASHED, KEYS, ConfigError, RunConfig, check_keys, coerce, num_stages
from ..design import analysis_spec
from ..errors import UsageError
from .cluster import cluster_spec

__all__ = ["Run", "RUNNER_KEYS", "notebooks_dir", "default_runs_dir", "list_ablations", "list_presets", "load_grid",
           "load_preset", "grid_variants", "resolve_stages", "notebook_parameters", "split_overrides", "expand",
           "base_preset", "override_folder"]


RUNNER_KEYS = ("out_dir",)  # notebook parameters the runner always sets (besides every run-config key)


_GRID_KEYS = {"reference", "base", "variants", "axes", "description", "notebook", "variants_on_request"}


_PRESET_KEYS = {"description", "seeds", "jobs", "base", "options", "ablations", "analysis", "reuse_from", "cluster"}


_PRESET_ABLATION_KEYS = {"base", "variants", "only"}


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def notebooks_dir(path: str | os.PathLike | None = None) -> Path:
    """The notebooks folder: ``path``, else ``$ATTNREPRO_NOTEBOOKS``, else the repository's ``notebooks/``."""
    if path is None:
        path = os.environ.get("ATTNREPRO_NOTEBOOKS")
    if path is None:
        repo = Path(__file__).resolve().parents[3] / "notebooks"
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
    data["analysis_spec"] = analysis_spec(data.get("analysis"), f"{where}: analysis")
    reuse_from = data.get("reuse_from") or []
    if isinstance(reuse_from, str):
        reuse_from = [reuse_from]
    others = [n for n in names if n != preset]
    if not isinstance(reuse_from, list) or any(not isinstance(r, str) or r not in others for r in reuse_from):
        raise ConfigError(f"{where}: reuse_from={data.get('reuse_from')!r} must list other presets whose finished "
                          f"runs of an identical config this preset reuses; presets: {', '.join(others) or 'none'}")
    data["reuse_from"] = reuse_from
    data["cluster_spec"] = cluster_spec(data.get("cluster"), where=where)
    return data


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
    overrides: dict = dataclasses.field(default_factory=dict)   # hashed `-p` keys that made this a preset+... folder
    twin_presets: tuple = ()   # other presets' folders searched for an identical finished config (reuse_from)

    @property
    def name(self) -> str:
        return f"{self.ablation}/{self.variant}-s{self.seed}"

    @property
    def lock_path(self) -> Path:
        return self.out_dir.parent / f".{self.out_dir.name}.lock"

    def identity(self) -> dict:
        """The keys that name this run in a summary row: ``run``, ``ablation``, ``variant``, ``seed``."""
        return {"run": self.name, "ablation": self.ablation, "variant": self.variant, "seed": self.seed}

    def variant_info(self) -> dict:
        return {"ablation": self.ablation, "variant": self.variant, "seed": self.seed, "preset": self.preset,
                "reference": self.reference, "is_reference": self.variant == self.reference,
                "params": self.params, "notebook": self.notebook.name, "config_hash": self.config.hash(),
                **({"overrides": self.overrides} if self.overrides else {})}


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


def base_preset(name: str) -> str:
    """The preset a runs folder belongs to: ``smoke+radius_init=4`` -> ``smoke`` (see :func:`override_folder`)."""
    return name.split("+", 1)[0]


def _value_text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "_".join(_value_text(x) for x in v) or "empty"
    return str(v)


#: the longest ``+key=value...`` suffix written out; a longer one becomes ``+o<hash>``
_SUFFIX_MAX = 60


def override_folder(preset: str, overrides: Mapping[str, Any]) -> str:
    """The runs folder of ``preset`` under hashed ``-p`` overrides: ``<preset>+<key>=<value>...`` (keys sorted), or
    ``<preset>+o<hash>`` when that would be long or not a plain folder name. Its runs never share a folder with the
    preset's own runs, so an override can never replace a finished run of the preset."""
    if not overrides:
        return preset
    items = sorted(overrides.items())
    suffix = "+".join(f"{k}={_value_text(v)}" for k, v in items)
    if len(suffix) > _SUFFIX_MAX or not re.fullmatch(r"[A-Za-z0-9_.=+-]+", suffix):
        import hashlib
        import json
        suffix = "o" + hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{preset}+{suffix}"


def _parse_seeds(seeds: Sequence[int] | str | None) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.replace(" ", "").split(",") if s != ""]
        except ValueError:
            raise UsageError(f"--seeds {seeds!r}: give seeds as integers separated by commas, e.g. 5,6") from None
    seeds = list(dict.fromkeys(seeds))
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if not seeds or bad:
        raise UsageError(f"--seeds {seeds!r}: give one or more integers >= 0, e.g. 5,6")
    return seeds


def _parse_variants(variants: Sequence[str] | str | None) -> list[str] | None:
    if variants is None:
        return None
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    variants = list(dict.fromkeys(variants))
    if not variants:
        raise UsageError("--variants: name one or more variants, e.g. none,se")
    return variants


def expand(ablations: Sequence[str], preset: str, overrides: Sequence[Sequence[str]] | Mapping[str, Any] = (),
           *, nb_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
           seeds: Sequence[int] | str | None = None, variants: Sequence[str] | str | None = None) -> list[Run]:
    """Every run of ``ablations`` under ``preset`` with ``overrides`` (``-p`` pairs or a dict), all validated.

    Args:
        seeds: run these seeds instead of the preset's (``--seeds``).
        variants: run only these variants (``--variants``); each ablation's reference is added, since its deltas
            pair by seed. A name that is not a variant of any of the ablations raises :class:`UsageError`.

    ``-p seed`` is refused (use ``seeds``). When an override of a key in the config hash changes any run's config,
    every run of the call goes to ``<runs>/<preset>+<key>=<value>.../`` (:func:`override_folder`) instead of
    ``<runs>/<preset>/``: the preset's own records are never touched by an override.
    """
    nbd = notebooks_dir(nb_dir)
    rdir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not ablations:
        raise UsageError(f"name at least one ablation; choose from: {', '.join(list_ablations(nbd))}")
    grids = {a: load_grid(nbd, a) for a in dict.fromkeys(ablations)}   # unknown names fail here, first
    pre = load_preset(nbd, preset)
    declared = {a: notebook_parameters(nbd / f"{a}.ipynb") for a in grids}
    option_names = set().union(*(set(d) - set(KEYS) for d in declared.values()))
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else [tuple(p) for p in overrides]
    if any(k in ("seed", "seeds") for k, _ in pairs):
        raise UsageError("-p seed is not an override: use --seeds 5,6 (runs those seeds of every variant named, "
                         "with the reference's matching seeds, in the preset's own folders)")
    cfg_over, opt_over = split_overrides(pairs, option_names)
    seed_list = _parse_seeds(seeds)
    only_variants = _parse_variants(variants)
    hashed = sorted(k for k in cfg_over if k not in _NOT_HASHED)
    changed = False
    for k in pre["options"]:
        if k not in option_names:
            raise ConfigError(f"preset {preset}.yaml: options.{k} is not a parameter of any of the notebooks "
                              f"{', '.join(grids)}; their options: {', '.join(sorted(option_names)) or 'none'}")
    for c in pre["analysis_spec"].family or ():
        if c.ablation not in list_ablations(nbd):
            raise ConfigError(f"preset {preset}.yaml: analysis.family entry {c.label!r}: {c.ablation!r} is not an "
                              f"ablation; choose from: {', '.join(list_ablations(nbd))}")
    for a in pre["ablations"]:
        if a not in list_ablations(nbd):
            raise ConfigError(f"preset {preset}.yaml: ablations.{a} is not an ablation; "
                              f"choose from: {', '.join(list_ablations(nbd))}")

    runs: list[Run] = []
    unknown_variants = set(only_variants or ())
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
        if only_variants is not None:
            variants.update(_on_request(grid, where, [v for v in only_variants if v not in variants]))
            unknown_variants -= set(variants)
            keep = [v for v in variants if v in only_variants or v == reference]
            if not any(v in only_variants for v in variants):
                keep = []                        # none of this ablation's variants named: nothing of it runs
            variants = {v: variants[v] for v in keep}
        for c in pre["analysis_spec"].family or ():
            missing = [v for v in (c.variant, c.reference) if c.ablation == abl and v not in variants]
            if missing:
                raise ConfigError(f"preset {preset}.yaml: analysis.family entry {c.label!r}: {missing[0]!r} is not a "
                                  f"variant this preset runs in {abl}; variants: {', '.join(variants)}")
        decl = declared[abl]
        opts = {k: _coerce_option(k, v, decl) for k, v in {**pre["options"], **opt_over}.items() if k in decl}
        for vname, vkeys in variants.items():
            for seed in (seed_list or pre["seeds"]):
                merged: dict[str, Any] = {}
                for layer, src in ((pre["base"], f"preset {preset}.yaml: base"), (grid["base"], f"{where}: base"),
                                   (_check_mapping(pa.get("base"), f"preset {preset}.yaml: ablations.{abl}.base"),
                                    f"preset {preset}.yaml: ablations.{abl}.base"),
                                   (vkeys, f"{where}: variant {vname!r}"), ({"seed": seed}, "seed"),
                                   (cfg_over, "-p")):
                    try:
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
                if hashed and not changed:     # does an override change what this run trains?
                    changed = _without(merged, hashed, pre, grid, pa, vkeys, seed).hash() != cfg.hash()
                params = {k: getattr(cfg, k) for k in vkeys}
                runs.append(Run(preset=preset, ablation=abl, variant=vname, seed=seed, config=cfg, params=params,
                                reference=reference, notebook=nbd / f"{abl}.ipynb",
                                out_dir=rdir / preset / abl / f"{vname}-s{seed}", options=opts,
                                twin_presets=tuple(pre["reuse_from"])))
    if unknown_variants:
        keys = sorted({g["variants_on_request"] for g in grids.values() if g.get("variants_on_request")})
        more = (f"; or any value of {' or '.join(keys)} this code accepts, run on request (`attnrepro config` "
                f"lists them; a plugin's kind needs --plugin)") if keys else ""
        raise UsageError(f"--variants: {', '.join(sorted(unknown_variants))} is not a variant of "
                         f"{', '.join(grids)} under preset {preset}; variants: "
                         f"{', '.join(_all_variant_names(grids, pre, preset))}{more}")
    if hashed and changed:
        folder = override_folder(preset, {k: cfg_over[k] for k in hashed})
        for r in runs:
            r.preset, r.overrides = folder, {k: getattr(r.config, k) for k in hashed}
            r.out_dir = rdir / folder / r.ablation / r.out_dir.name
    return runs


def _on_request(grid: Mapping, where: str, names: Sequence[str]) -> dict[str, dict]:
    """The variants that ``--variants`` names beyond the grid's, for a grid with ``variants_on_request: KEY``: each
    name that is a valid value of run-config key ``KEY`` becomes the variant ``{KEY: name}`` (e.g. a plugin's
    attention kind ``eca`` in the baseline ablation). Names that are not valid values stay unknown."""
    key = grid.get("variants_on_request")
    if not key:
        return {}
    if key not in KEYS:
        raise ConfigError(f"{where}: variants_on_request {key!r} is not a run-config key (`attnrepro config` lists "
                          f"them)")
    out = {}
    for name in names:
        if not _NAME_RE.match(name):
            continue
        try:
            value = coerce(key, name)
            RunConfig.from_dict({key: value})
        except ConfigError:
            continue
        out[name] = {key: value}
    return out


def _without(merged: Mapping, hashed: Sequence[str], pre: Mapping, grid: Mapping, pa: Mapping, vkeys: Mapping,
             seed: int) -> RunConfig:
    """The run's config without the ``-p`` layer (each overridden key back to what the lower layers say)."""
    d = {k: v for k, v in merged.items() if k not in hashed}
    for layer in (pre["base"], grid["base"], pa.get("base") or {}, vkeys, {"seed": seed}):
        d.update({k: v for k, v in layer.items() if k in hashed})
    d["stages"] = resolve_stages(d.get("stages"), d.get("model", RunConfig.model))
    return RunConfig.from_dict(d)


def _all_variant_names(grids: Mapping[str, dict], pre: Mapping, preset: str) -> list[str]:
    out: dict[str, None] = {}
    for abl, grid in grids.items():
        vs = dict(grid_variants(grid, f"grid {abl}.yaml"))
        pa = pre["ablations"].get(abl, {})
        vs.update(pa.get("variants") or {})
        only = pa.get("only")
        out.update(dict.fromkeys(only if only is not None else vs))
    return list(out)
