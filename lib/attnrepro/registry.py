"""The registry of attention kinds: every module a model can have, by name, with what it accepts.

Every kind in the suite comes from here: the run config's ``attention`` choices, the layer factory
(:mod:`attnrepro.modules.factory`), the placement in a ResNet (:mod:`attnrepro.models.placement`), the FLOP table
(:func:`attnrepro.flops.complexity_table`), the benchmarks (:mod:`attnrepro.bench`) and the report's wording. The
suite's five (``expatt``, ``aa``, ``aw``, ``se``, ``cbam``) are registered when this module is imported; a module
of one's own joins them with :func:`register` (``attnrepro.register``), usually from a plugin file
(:func:`load_plugin`, ``--plugin FILE.py``, :data:`PLUGINS_ENV`). The README's "Adding a module" walks through one.

A kind is one of two sorts (``kind=``):

- ``"conv"`` stands in for a residual block's ``k x k`` convolution (like ``expatt``, ``aa``, ``aw``) and keeps its
  channels and stride: ``build(in_channels, out_channels, kernel_size, stride, **kwargs)``;
- ``"gate"`` sits on the residual branch after the block's last batch norm (like ``se``, ``cbam``) and keeps the
  channels: ``build(channels, **kwargs)``.

Combined kinds are derived, never registered: every conv kind with every gate kind, ``"conv+gate"`` (``aw+se``,
and ``aw+eca`` once a gate ``eca`` is registered); each part sits where it would sit alone.

``accepts`` names the run-config keys the kind takes; they reach ``build`` under those names. They must be among
:data:`ATTENTION_KEYS`, the keys that some built-in kind takes (a run config hashes every other attention key at its
default, see :meth:`attnrepro.config.RunConfig.canonical`, so that registering a kind changes no existing config's
hash). ``max_size`` is no run-config key: a conv kind that accepts it gets the largest side of the feature map it
attends over (AA's relative tables need it).

Plugins. :func:`load_plugin` imports a Python file by path once per process (the file calls :func:`register`).
The files named in the environment variable :data:`PLUGINS_ENV` (``ATTNREPRO_PLUGINS``, separated by
``os.pathsep``) are loaded the first time anything asks the registry, so the processes the commands start (the
notebook kernels of ``attnrepro run``, the children of ``torchrun``) see the same kinds as the command;
:func:`use_plugins` (what ``--plugin`` calls) loads files now and adds them to that variable.

This module imports no torch: the built-ins' classes are imported when a layer is first built.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import UsageError

__all__ = ["Kind", "RegistryError", "PluginError", "register", "unregister", "get", "kinds", "names",
           "conv_kinds", "gate_kinds", "layer_kinds", "combined_kinds", "model_kinds", "accepted", "is_registered",
           "title", "ATTENTION_KEYS", "SORTS", "PLUGINS_ENV", "load_plugin", "load_env_plugins", "use_plugins",
           "loaded_plugins"]

#: the two sorts of kind: stands in for a conv, or gates a block's output
SORTS = ("conv", "gate")

#: the run-config keys a kind may accept (those some built-in kind takes), and ``max_size`` (see the docstring)
ATTENTION_KEYS = ("heads", "upsilon", "kernel", "radius_init", "learn_radius", "radius_per_head", "kappa",
                  "min_key_dims", "relative", "max_size", "reduction", "aw_maps")

#: the environment variable of plugin files, ``os.pathsep``-separated
PLUGINS_ENV = "ATTNREPRO_PLUGINS"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(ValueError):
    """A bad :func:`register` call (a taken name, an unknown sort, a key no kind may accept...)."""


class PluginError(UsageError):
    """A plugin file that is missing or fails to import (the message names the file); exits with code 2."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """One registered attention kind (see the module docstring).

    Args:
        name: the ``attention`` value that selects it, e.g. ``"eca"``.
        kind: ``"conv"`` or ``"gate"``.
        build: the layer's constructor (a class or a function), called as the sort says.
        accepts: the run-config keys it takes, passed to ``build`` by name.
        title: how the report and the benchmarks name it (default: the name in capitals).
        source: where it was registered: ``"attnrepro"`` for the built-ins, else the plugin file or module.
    """

    name: str
    kind: str
    build: Callable[..., Any]
    accepts: tuple[str, ...] = ()
    title: str = ""
    source: str = ""

    @property
    def builtin(self) -> bool:
        return self.source == "attnrepro"


class _Lazy:
    """A built-in's constructor, imported on first call (this module imports no torch); ``rename`` maps run-config
    names to the class's keyword names."""

    def __init__(self, module: str, attr: str, rename: dict[str, str] | None = None):
        self.module, self.attr, self.rename = module, attr, dict(rename or {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cls = getattr(importlib.import_module(self.module), self.attr)
        return cls(*args, **{self.rename.get(k, k): v for k, v in kwargs.items()})

    def __repr__(self) -> str:
        return f"{self.module}.{self.attr}"


_KINDS: dict[str, Kind] = {}
_LOADED: dict[str, Any] = {}           # resolved plugin path -> its module
_LOADING: list[str] = []               # the plugin being imported (what register() records as the source)
_ENV_SEEN: list[str | None] = [None]   # the value of PLUGINS_ENV that was last loaded


def _valid_list(values: Iterable[str]) -> str:
    return ", ".join(values)


def register(name: str, *, kind: str, build: Callable[..., Any], accepts: Sequence[str] = (),
             title: str | None = None) -> Kind:
    """Register attention kind ``name`` (``attnrepro.register``); returns its :class:`Kind`.

    Args:
        name: lower-case letters, digits and ``_``, starting with a letter (it names run folders and variants);
            not ``none`` and not a name already registered.
        kind: ``"conv"`` (stands in for a block's ``k x k`` conv: ``build(in_channels, out_channels, kernel_size,
            stride, **kwargs)``) or ``"gate"`` (after the block's last batch norm: ``build(channels, **kwargs)``).
        build: the constructor; it returns an ``nn.Module`` that keeps the shape the sort says.
        accepts: the run-config keys it takes (among :data:`ATTENTION_KEYS`); ``()``: none (its own defaults).
        title: its name in tables and text (default ``name.upper()``).

    Raises:
        RegistryError: a bad or taken name, an unknown sort, a ``build`` that is not callable, or a key it may not
            accept; the message names the bad value and the valid ones.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name == "none":
        raise RegistryError(f"attention kind name {name!r} is not valid: use lower-case letters, digits and '_', "
                            "starting with a letter ('+' joins a conv kind and a gate kind; 'none' means no "
                            "attention)")
    if name in _KINDS:
        k = _KINDS[name]
        raise RegistryError(f"attention kind {name!r} is already registered (a {k.kind} kind, from {k.source}); "
                            f"registered kinds: {_valid_list(_KINDS)}. Choose another name, or "
                            f"attnrepro.registry.unregister({name!r}) first")
    if kind not in SORTS:
        raise RegistryError(f"kind={kind!r} is not valid for attention kind {name!r}; choose one of: "
                            f"{_valid_list(SORTS)} (conv: stands in for a block's kxk conv, like expatt, aa, aw; "
                            "gate: after a block's last batch norm, like se, cbam)")
    if not callable(build):
        raise RegistryError(f"build={build!r} for attention kind {name!r} is not callable; give the layer's class "
                            "or a function that returns the layer")
    if isinstance(accepts, str):
        accepts = (accepts,)
    accepts = tuple(accepts)
    bad = [a for a in accepts if a not in ATTENTION_KEYS]
    if bad:
        raise RegistryError(f"attention kind {name!r} cannot accept {', '.join(map(repr, bad))}; a kind accepts "
                            f"run-config keys among: {_valid_list(ATTENTION_KEYS)}")
    if "max_size" in accepts and kind != "conv":
        raise RegistryError(f"attention kind {name!r}: only a conv kind gets 'max_size' (the side it attends over)")
    source = _LOADING[-1] if _LOADING else _caller_module()
    entry = Kind(name, kind, build, tuple(dict.fromkeys(accepts)), title or name.upper(), source)
    _KINDS[name] = entry
    return entry


def _caller_module() -> str:
    f = sys._getframe(2)
    return str(f.f_globals.get("__file__") or f.f_globals.get("__name__") or "?")


def unregister(name: str) -> None:
    """Remove a kind registered by :func:`register` (for tests, and a notebook cell that registers again).

    Raises:
        RegistryError: ``name`` is a built-in kind or is not registered.
    """
    k = _KINDS.get(name)
    if k is None:
        raise RegistryError(f"attention kind {name!r} is not registered; registered kinds: {_valid_list(_KINDS)}")
    if k.builtin:
        raise RegistryError(f"attention kind {name!r} is built in and cannot be unregistered")
    del _KINDS[name]


def _builtin(name: str, kind: str, module: str, attr: str, accepts: Sequence[str], title: str,
             rename: dict[str, str] | None = None) -> None:
    _KINDS[name] = Kind(name, kind, _Lazy(f"attnrepro.modules.{module}", attr, rename), tuple(accepts), title,
                        "attnrepro")


# the suite's own kinds, in the order the run config and the tables list them (conv kinds, then gates)
_builtin("expatt", "conv", "explicit", "ExpAttConv2d",
         ("heads", "upsilon", "kernel", "radius_init", "learn_radius", "radius_per_head"), "ExpAtt")
_builtin("aa", "conv", "augmented", "AAConv2d", ("heads", "kappa", "upsilon", "min_key_dims", "relative", "max_size"),
         "AA")
_builtin("aw", "conv", "aw", "AWConv2d", ("reduction", "aw_maps"), "AW", rename={"aw_maps": "maps"})
_builtin("se", "gate", "gates", "SqueezeExcite", ("reduction",), "SE")
_builtin("cbam", "gate", "gates", "CBAM", ("reduction",), "CBAM")


# ---------------------------------------------------------------------------- reading the registry
def kinds() -> dict[str, Kind]:
    """Every registered kind by name (a copy), the built-ins first, after loading :data:`PLUGINS_ENV`."""
    load_env_plugins()
    return dict(_KINDS)


def names() -> tuple[str, ...]:
    """The registered (single-layer) kinds' names."""
    return tuple(kinds())


def get(name: str) -> Kind:
    """The registered kind ``name``. Raises ``KeyError`` when it is not one (callers name the valid kinds)."""
    load_env_plugins()
    return _KINDS[name]


def is_registered(name: Any) -> bool:
    load_env_plugins()
    return isinstance(name, str) and name in _KINDS


def conv_kinds() -> tuple[str, ...]:
    """The conv kinds, in registration order (``expatt``, ``aa``, ``aw``, then any registered)."""
    return tuple(n for n, k in kinds().items() if k.kind == "conv")


def gate_kinds() -> tuple[str, ...]:
    """The gate kinds, in registration order (``se``, ``cbam``, then any registered)."""
    return tuple(n for n, k in kinds().items() if k.kind == "gate")


def layer_kinds() -> tuple[str, ...]:
    """Every single-layer kind: the conv kinds, then the gates."""
    return conv_kinds() + gate_kinds()


def combined_kinds() -> tuple[str, ...]:
    """Every conv kind with every gate kind, ``"conv+gate"``."""
    return tuple(f"{c}+{g}" for c in conv_kinds() for g in gate_kinds())


def model_kinds() -> tuple[str, ...]:
    """Every kind a model can have (``"none"`` aside): :func:`layer_kinds`, then :func:`combined_kinds`."""
    return layer_kinds() + combined_kinds()


def accepted(kind: str) -> tuple[str, ...]:
    """The keys ``kind`` accepts; a combined kind accepts what any of its parts accepts. ``KeyError`` for a name
    that is no kind (see :func:`model_kinds`)."""
    reg = kinds()
    if kind in reg:
        return reg[kind].accepts
    parts = kind.split("+") if isinstance(kind, str) else []
    if len(parts) == 2 and parts[0] in reg and parts[1] in reg and reg[parts[0]].kind == "conv" \
            and reg[parts[1]].kind == "gate":
        return tuple(dict.fromkeys(k for p in parts for k in reg[p].accepts))
    raise KeyError(kind)


def title(kind: str) -> str:
    """How text names ``kind``: its registered title (``AW+SE`` for a combination), else the name itself."""
    reg = kinds()
    return "+".join(reg[p].title if p in reg else p for p in str(kind).split("+"))


# ---------------------------------------------------------------------------- plugins
def loaded_plugins() -> tuple[str, ...]:
    """The plugin files loaded in this process (resolved paths)."""
    return tuple(_LOADED)


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "plugin"
    name, i = f"attnrepro_plugin_{stem}", 1
    while name in sys.modules:
        i += 1
        name = f"attnrepro_plugin_{stem}_{i}"
    return name


def load_plugin(path: str | os.PathLike) -> Any:
    """Import the Python file ``path`` (once per process; again is a no-op) and return its module. The file
    registers its kinds with :func:`register`.

    Raises:
        PluginError: the file does not exist, is no ``.py`` file, or raises while it is imported (nothing it
            registered stays registered); the message names the file and the error.
    """
    p = Path(path).expanduser()
    key = str(p.resolve()) if p.exists() else str(p.absolute())
    if key in _LOADED:
        return _LOADED[key]
    if not p.is_file():
        raise PluginError(f"plugin {str(path)!r} is not a file (a plugin is a Python file that calls "
                          "attnrepro.register; see the README, 'Adding a module')")
    if p.suffix != ".py":
        raise PluginError(f"plugin {str(path)!r} is not a .py file")
    spec = importlib.util.spec_from_file_location(_module_name(p), key)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    before = set(_KINDS)
    sys.modules[spec.name] = module
    _LOADING.append(key)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(spec.name, None)
        for name in set(_KINDS) - before:
            del _KINDS[name]
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise PluginError(f"plugin {key}: {type(e).__name__}: {e}") from e
    finally:
        _LOADING.pop()
    _LOADED[key] = module
    return module


def _env_paths(value: str | None) -> list[str]:
    return [s for s in (value or "").split(os.pathsep) if s.strip()]


def load_env_plugins() -> None:
    """Load the files named in :data:`PLUGINS_ENV` that are not loaded yet (cheap when the variable has not
    changed). Every reader of the registry calls this first."""
    value = os.environ.get(PLUGINS_ENV)
    if value == _ENV_SEEN[0] or _LOADING:
        return
    _ENV_SEEN[0] = value
    try:
        for p in _env_paths(value):
            load_plugin(p)
    except PluginError as e:
        _ENV_SEEN[0] = None          # ask again next time (and fail again, with the same message)
        raise PluginError(f"{e} (named in ${PLUGINS_ENV})") from e


def use_plugins(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Load the plugin files ``paths`` now and add them (absolute) to :data:`PLUGINS_ENV`, so the processes this
    one starts load them too (what ``--plugin`` does); returns the resolved paths."""
    out = []
    for p in paths:
        load_plugin(p)
        out.append(str(Path(p).expanduser().resolve()))
    if out:
        have = _env_paths(os.environ.get(PLUGINS_ENV))
        value = os.pathsep.join(dict.fromkeys(have + out))
        os.environ[PLUGINS_ENV] = value
        load_env_plugins()
    return out
