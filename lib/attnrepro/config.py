"""The run configuration: one vocabulary for the CLI (``-p KEY VALUE``), notebook parameters and YAML grids.

Every key has a type, a default, a help line and, where it has a closed set of values, its choices. A value
arrives typed (Python, YAML) or as a string (CLI, environment); :func:`coerce` turns either into the declared
type and :meth:`RunConfig.validate` checks ranges and choices. Any mistake raises :class:`ConfigError`, a
``ValueError`` whose message names the key, the bad value and what would have been valid, before any data is
read or any model is built.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

__all__ = ["ConfigError", "RunConfig", "coerce", "describe", "KEYS", "ADDED_KEYS", "SEED_STREAM_STRIDE"]


class ConfigError(ValueError):
    """A bad key or value in a run configuration. The message names the value and the valid choices."""


DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
          "resnet20", "resnet32", "resnet56", "resnet110", "wrn28_10")


class _AttentionChoices(Sequence):
    """The ``attention`` choices: "none" and every kind of the registry (:func:`attnrepro.registry.model_kinds`:
    the layer kinds, then each conv kind with each gate), read each time they are asked for, so a kind registered
    with ``attnrepro.register`` (or a plugin) is a valid choice from then on."""

    def _all(self) -> tuple[str, ...]:
        from .registry import model_kinds    # torch-free
        return ("none",) + model_kinds()

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, Sequence)) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._all())


#: "none", the layer kinds, and a conv kind with a gate: read from attnrepro.registry when asked
ATTENTIONS: Sequence[str] = _AttentionChoices()
KERNELS = ("gaussian", "laplacian", "cauchy", "uniform")
SCHEDULES = ("cosine", "expatt", "aa", "constant")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16", "fp16")


def _f(default, help: str, choices: tuple | None = None, low: float | None = None, high: float | None = None,
       low_open: bool = False):
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """One training run. Field order is the order ``attnrepro config`` prints."""

    # data
    dataset: str = _f("fashion_mnist", "dataset to train on ('synthetic' is random data for tests and benchmarks)",
                      DATASETS)
    data_dir: str | None = _f(None, "where the dataset lies; None: the dataset's default place (see `attnrepro.data`)")
    train_subset: int = _f(0, "train on a fixed random subset of N training images (the same for every seed); "
                              "0: all", low=0)
    val_split: float = _f(0.0, "fraction of the training set held out as validation; 0: validate on the test split",
                          low=0.0, high=0.5)
    augment: bool = _f(True, "random crop (padding 4, or random-resized crop for imagefolder) and horizontal flip")
    image_size: int = _f(224, "imagefolder only: training crop size (validation: resize to 8/7 x, centre crop)", low=8)
    num_workers: int = _f(4, "imagefolder only: DataLoader worker processes", low=0)
    # model
    model: str = _f("resnet20", "backbone", MODELS)
    width: float = _f(1.0, "multiplier on every stage's channel count (CIFAR nets and WRN; 1.0 = the paper's)",
                      low=0.0, low_open=True)
    attention: str = _f("none", "attention module added to the backbone; 'aw+se' etc.: a conv kind and a gate, each "
                                "where it sits alone", ATTENTIONS)
    stages: list[int] | None = _f(None, "stages that get the attention, 1-based, e.g. [3, 4] (every part of a "
                                        "combination); None: each module's paper default")
    kernel: str = _f("gaussian", "expatt: distance kernel of the attention map", KERNELS)
    radius_init: float = _f(2.0, "expatt: initial radius in feature-map pixels", low=0.0, low_open=True)
    learn_radius: bool = _f(True, "expatt: learn the radius (False: frozen at radius_init)")
    radius_per_head: bool = _f(False, "expatt: one radius per head instead of one per layer")
    heads: int = _f(8, "expatt/aa: attention heads (reduced for narrow layers, see the modules)", low=1)
    kappa: float = _f(0.2, "aa: key depth as a fraction of the output channels (may exceed 1)", low=0.0,
                      low_open=True)
    min_key_dims: int = _f(20, "aa: at least this many key channels per head, d_k = heads * max(min_key_dims, "
                               "round(kappa * F_out / heads)) (the AA paper's 20); 0: kappa alone", low=0)
    upsilon: float = _f(0.1, "expatt/aa: value depth (attention channels) as a fraction of the output channels",
                        low=0.0, high=1.0, low_open=True)
    relative: bool = _f(True, "aa: relative position logits")
    reduction: int = _f(16, "se/cbam/aw: channel reduction ratio of the gate MLP (every part of a combination)",
                        low=1)
    aw_maps: int = _f(8, "aw: number of attention maps m shared by the output channels", low=1)
    # optimisation
    epochs: int = _f(1, "training epochs", low=1)
    batch_size: int = _f(128, "global batch size", low=1)
    lr: float = _f(0.1, "peak learning rate", low=0.0, low_open=True)
    momentum: float = _f(0.9, "SGD momentum", low=0.0, high=1.0)
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(5e-4, "L2 weight decay", low=0.0)
    no_decay_norm_bias: bool = _f(False, "no weight decay on norm weights, biases and attention radii")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy", low=0.0, high=1.0)
    schedule: str = _f("cosine", "learning-rate schedule, per step: cosine; expatt (warm-up then cosine with warm "
                       "restarts); aa (warm-up over 5% then cosine); constant", SCHEDULES)
    warmup_epochs: float = _f(0.0, "linear warm-up length in epochs (schedule 'aa' uses 5% of epochs instead)",
                              low=0.0)
    restart_period: float = _f(10.0, "expatt schedule: length of the first cosine cycle in epochs (then doubles)",
                               low=0.0, low_open=True)
    # execution
    seed: int = _f(0, "random seed: same seed, same CPU, same numbers", low=0)
    seed_stream: int = _f(0, "a second stream of seeds under the same seed numbers (an A/A control pairs seed s of "
                             "stream 1 with seed s of stream 0); the run trains with RunConfig.run_seed", low=0)
    device: str = _f("auto", "auto picks CUDA when present", DEVICES)
    amp: str = _f("none", "mixed precision: bf16 autocast, or fp16 with a GradScaler (CUDA)", AMP_MODES)
    channels_last: bool = _f(False, "channels_last memory format for model and batches")
    compile: bool = _f(False, "torch.compile the model")
    cudnn_benchmark: bool = _f(True, "CUDA: cudnn.benchmark autotuning")
    tf32: bool = _f(True, "CUDA: TF32 matmuls and convolutions")
    deterministic: bool = _f(False, "bit-reproducible GPU runs: torch.use_deterministic_algorithms (an op without a "
                                    "deterministic kernel raises), cudnn.benchmark off whatever cudnn_benchmark says, "
                                    "CUBLAS_WORKSPACE_CONFIG=:4096:8; slower (no autotuned convolutions, "
                                    "deterministic reductions). CPU training is deterministic without it")
    sync_bn: bool = _f(False, "DDP on CUDA: SyncBatchNorm, batch statistics over all ranks (one all-reduce per BN "
                              "layer per step); nothing with one process")
    eval_batch_size: int = _f(512, "batch size for evaluation", low=1)
    eval_every: int = _f(1, "evaluate every N epochs and always after the last one (1: every epoch); the epochs in "
                            "between record no val_* values. Training is the same whatever N is", low=1)
    checkpoint: bool = _f(True, "write a checkpoint (atomic, fsync'd) and resume from it")
    checkpoint_every: int = _f(1, "with checkpoint: write it every N epochs and after the last; a resume re-runs "
                                  "the epochs since the last one (the same numbers: the order of each epoch is a "
                                  "function of (seed, epoch)). Changes no result", low=1)
    max_steps: int = _f(0, "stop each epoch after N steps (0: full epochs); for smoke tests and benchmarks", low=0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **more: Any) -> "RunConfig":
        """Build and validate a config from typed or string values; unknown keys raise :class:`ConfigError`."""
        merged = dict(values or {})
        merged.update(more)
        check_keys(merged)
        kwargs = {k: coerce(k, v) for k, v in merged.items()}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (coerced and validated)."""
        d = self.to_dict()
        d.update(changes)
        return RunConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def canonical(self) -> dict[str, Any]:
        """The config as :meth:`hash` sees it: every key that changes the result, each in one spelling.

        Two configs that train the same model the same way get the same dict, so the pipeline trains them once
        (e.g. ``placement/all`` and ``kernel/gaussian``, or ``placement/none`` and ``baseline/none``):

        - ``data_dir``, ``num_workers``, ``device``, ``checkpoint_every`` are left out (where, how and how often,
          not what);
        - an attention key the chosen kind does not take (``kernel`` for ``aa``, every one for ``none``; see
          :data:`attnrepro.registry.ATTENTION_KEYS` and :func:`attnrepro.registry.accepted`) is set to its
          default (a registered kind hashes like a built-in one);
        - ``stages`` is None without attention, and None when it puts every part of the kind exactly where the
          kind's default puts it (:func:`attnrepro.models.placement.part_stages`); otherwise sorted, de-duplicated;
        - a key added after run records were published (:data:`ADDED_KEYS`) is left out while it has its default,
          so those records keep their hash (they trained with that default).
        """
        from . import registry
        from .models.placement import part_stages       # lazy: it imports torch

        d = {k: v for k, v in self.to_dict().items()
             if k not in _NOT_HASHED and not (k in ADDED_KEYS and v == _DEFAULTS[k])}
        if self.attention == "none":
            used = set()
        else:
            try:
                used = set(registry.accepted(self.attention))
            except KeyError:
                raise ConfigError(f"attention={self.attention!r} is not valid; choose one of: "
                                  f"{', '.join(ATTENTIONS)}{_PLUGIN_HINT}") from None
        for k in set(registry.ATTENTION_KEYS) - used:
            if k in d:
                d[k] = _DEFAULTS[k]
        if self.attention == "none":
            d["stages"] = None
        elif self.stages is not None:
            chosen = sorted(set(self.stages))
            default = part_stages(self.model, self.attention, None)
            d["stages"] = None if part_stages(self.model, self.attention, chosen) == default else chosen
        return d

    @property
    def run_seed(self) -> int:
        """The seed the run trains with (initialisation, data order, augmentation): ``seed`` in stream 0, else
        ``seed + SEED_STREAM_STRIDE * seed_stream``, a seed no stream-0 run of a preset uses."""
        return self.seed + SEED_STREAM_STRIDE * self.seed_stream

    def hash(self) -> str:
        """A stable short hash of :meth:`canonical`: every key that changes the result, in one spelling."""
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            meta = f.metadata
            if meta.get("choices") is not None and v not in meta["choices"]:
                raise ConfigError(f"{f.name}={v!r} is not valid; choose one of: {', '.join(meta['choices'])}"
                                  + (_PLUGIN_HINT if f.name == "attention" else ""))
            if v is None or isinstance(v, (bool, list, str)):
                continue
            low, high = meta.get("low"), meta.get("high")
            if low is not None and (v < low or (meta.get("low_open") and v == low)):
                op = ">" if meta.get("low_open") else ">="
                raise ConfigError(f"{f.name}={v!r} is out of range; it must be {op} {low}")
            if high is not None and v > high:
                raise ConfigError(f"{f.name}={v!r} is out of range; it must be <= {high}")
        if self.stages is not None:
            if not self.stages:
                raise ConfigError("stages=[] is empty; give at least one stage, or None for the paper's default")
            n = num_stages(self.model)
            bad = [s for s in self.stages if not 1 <= s <= n]
            if bad:
                raise ConfigError(f"stages={self.stages!r}: stage {bad[0]} does not exist in {self.model}; "
                                  f"valid stages are {list(range(1, n + 1))}")
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ConfigError("dataset='imagefolder' needs data_dir (a folder with train/<class>/ and val/<class>/)")


#: what an unknown ``attention`` adds to its message
_PLUGIN_HINT = (" (a module of one's own: register it with attnrepro.register in a plugin file and pass "
                "--plugin FILE.py, or set $ATTNREPRO_PLUGINS; see the README, 'Adding a module')")
#: where and how often, not what: keys that cannot change a run's numbers (``checkpoint_every``: a resume re-runs
#: the epochs since the last checkpoint, identically)
_NOT_HASHED = {"data_dir", "num_workers", "device", "checkpoint_every"}
#: keys added after run records were published: left out of the hash at their default (see RunConfig.canonical)
ADDED_KEYS = frozenset({"seed_stream", "deterministic", "sync_bn"})
#: the distance between two seed streams (a prime far above any seed a preset uses)
SEED_STREAM_STRIDE = 1_000_003


def num_stages(model: str) -> int:
    """Number of residual stages of a backbone: 4 for ImageNet ResNets, 3 for CIFAR ResNets and WRN."""
    return 4 if model in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152") else 3


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
KEYS: tuple[str, ...] = tuple(FIELDS)
_DEFAULTS: dict[str, Any] = RunConfig().to_dict()
_HINTS = typing.get_type_hints(RunConfig)


def check_keys(values: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first key that is not a run-config key, with close matches."""
    for k in values:
        if k not in FIELDS:
            close = difflib.get_close_matches(str(k), KEYS, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {k!r}{hint} (valid keys: {', '.join(KEYS)})")


_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}
_NONE = {"none", "null", "~", ""}


def coerce(key: str, value: Any) -> Any:
    """Turn ``value`` (typed, or a string from the CLI) into the declared type of ``key``."""
    check_keys({key: None})
    hint = _HINTS[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list \
        else hint
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None
    try:
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                s = value.strip().strip("[]()")
                items = [x for x in s.replace(",", " ").split()]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                items = [value]
            else:
                raise TypeError
            out = []
            for x in items:
                if isinstance(x, bool) or (isinstance(x, float) and not x.is_integer()):
                    raise TypeError
                out.append(int(x))
            return out
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise TypeError
        if base is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float):
                if not value.is_integer():
                    raise TypeError
                return int(value)
            if isinstance(value, str):
                f = float(value)
                if not f.is_integer():
                    raise TypeError
                return int(f)
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            if not isinstance(value, str):
                raise TypeError
            return value.strip()
    except (TypeError, ValueError):
        pass
    tname = _type_name(hint)
    raise ConfigError(f"{key}={value!r} is not a valid {tname}" + _choices_suffix(key))


def _type_name(hint) -> str:
    s = str(hint).replace("typing.", "")
    return s.replace("<class '", "").replace("'>", "")


def _choices_suffix(key: str) -> str:
    ch = FIELDS[key].metadata.get("choices")
    return f"; choose one of: {', '.join(ch)}" if ch else ""


def describe() -> list[dict[str, Any]]:
    """Every key with its type, default, choices and help, for ``attnrepro config`` and the README."""
    rows = []
    for f in dataclasses.fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append({"key": f.name, "type": _type_name(_HINTS[f.name]), "default": default,
                     "choices": list(f.metadata["choices"]) if f.metadata.get("choices") else None,
                     "help": f.metadata["help"]})
    return rows
