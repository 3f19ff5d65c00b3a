"""The papers' models built and counted under named counting conventions: what the paper tables
(:mod:`.tables`) and the cost claims (:mod:`.claims`) measure.

:class:`ModelSpec` is the ``build_model`` call for a paper's row or a claim's model; :func:`measure` builds it once
and counts its params and MACs under every convention of :data:`CONVENTIONS` (see :mod:`.tables` for what the
conventions are and why there are eight).

How the variants are built: the model is built once with ``build_model``; a variant differs only in the blocks whose
3x3 (or its replacement) strides, so only those blocks are copied, modified (strides set on the copies; a strided
attention layer replaced by a plain 3x3 conv with the same channels and stride) and counted alone at their input
size; the model's count is the default count minus those blocks' counts plus their variants'. The tests check this
against counting a whole modified model. Params change only with ``strided-blocks-plain``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Convention", "CONVENTIONS", "DEFAULT_CONVENTION", "check_convention", "ModelSpec", "measure",
           "cache_dir", "claim_specs", "relative_difference"]


DEFAULT_CONVENTION = "fvcore-default"


@dataclass(frozen=True)
class Convention:
    """One way to build and count: ``strides`` ``"v1.5"`` or ``"v1"``; ``strided_blocks`` ``"attention"`` or
    ``"plain"``; ``attention_matmuls`` counted or not (see the module docstring)."""

    strides: str = "v1.5"
    strided_blocks: str = "attention"
    attention_matmuls: bool = True

    @property
    def name(self) -> str:
        parts = (["resnet-v1-strides"] if self.strides == "v1" else []) + \
                (["strided-blocks-plain"] if self.strided_blocks == "plain" else []) + \
                ([] if self.attention_matmuls else ["no-attention-matmuls"])
        return "+".join(parts) or DEFAULT_CONVENTION

    @property
    def construction(self) -> tuple[str, str]:
        """What a variant block depends on (the matmul choice only changes what is summed)."""
        return self.strides, self.strided_blocks

    def describe(self) -> str:
        return ("stride on the bottleneck's " + ("first 1x1 (ResNet v1)" if self.strides == "v1" else
                                                 "3x3 (torchvision v1.5)")
                + "; strided blocks " + ("plain" if self.strided_blocks == "plain" else "augmented")
                + "; attention matmuls " + ("counted" if self.attention_matmuls else "not counted"))


CONVENTIONS: dict[str, Convention] = {
    c.name: c for c in (Convention(s, b, m) for s, b, m in
                        itertools.product(("v1.5", "v1"), ("attention", "plain"), (True, False)))}


def check_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ValueError(f"unknown counting convention {name!r}; choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


@dataclass(frozen=True)
class ModelSpec:
    """The ``build_model`` call for a paper's row: backbone, classes, image side, attention and its keywords."""

    model: str
    num_classes: int = 1000
    input_size: int = 224
    attention: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "build") -> "ModelSpec":
        if not isinstance(d, Mapping) or "model" not in d:
            raise ValueError(f"{where}: {d!r} must be a mapping with at least 'model' (and num_classes, input_size, "
                             "attention, attention keywords)")
        rest = {k: v for k, v in d.items() if k not in ("model", "num_classes", "input_size", "attention")}
        att = d.get("attention")
        return cls(str(d["model"]), int(d.get("num_classes", 1000)), int(d.get("input_size", 224)),
                   None if att in (None, "none") else str(att),
                   tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rest.items())))

    def build(self):
        from ..models import build_model
        return build_model(self.model, self.num_classes, 3, self.attention, input_size=self.input_size,
                           **dict(self.kwargs))

    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.kwargs)
        return f"{self.model} @{self.input_size}px, {self.num_classes} classes, attention={self.attention or 'none'}" \
               f"{extra}"


def _stride(layer) -> int:
    s = getattr(layer, "stride", 1)
    return int(s[0] if isinstance(s, (tuple, list)) else s)


def _unstride(layer) -> None:
    """Stride 1 for a 3x3 conv or an attention layer that replaced it (its own ``stride`` and its convs')."""
    import torch.nn as nn
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
        elif isinstance(getattr(m, "stride", None), int):
            m.stride = 1


def _applies(block, conv: Convention) -> tuple[bool, bool]:
    """``(plain, v1)``: whether ``conv`` changes ``block`` by a plain strided 3x3, by ResNet v1's strides."""
    import torch.nn as nn
    from torchvision.models.resnet import Bottleneck

    from ..models.placement import block_slots

    layer = getattr(block, block_slots(block)[0])
    if _stride(layer) == 1:
        return False, False
    return (conv.strided_blocks == "plain" and type(layer) is not nn.Conv2d,
            conv.strides == "v1" and isinstance(block, Bottleneck))


def _variant_block(block, plain: bool, v1: bool):
    """A copy of ``block`` with its strided 3x3 slot made a plain conv (``plain``) and/or its stride moved to the
    first 1x1 conv (``v1``)."""
    import torch.nn as nn

    from ..models.placement import block_slots

    slot, _ = block_slots(block)
    layer = getattr(block, slot)
    s = _stride(layer)
    new = copy.deepcopy(block)
    if plain:
        k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
        setattr(new, slot, nn.Conv2d(layer.in_channels, layer.out_channels, k, s, k // 2, bias=False))
    if v1:
        new.conv1.stride = (s, s)
        _unstride(getattr(new, slot))
    return new


def _block_in_channels(block) -> int:
    c = getattr(block, "in_channels", None)
    return int(c) if c is not None else int(block.conv1.in_channels)


def _count_block(block, variant, side: int) -> dict[str, int]:
    """MACs by op of ``variant`` at the input of ``block`` (checked to give the block's output shape)."""
    import torch

    from ..flops import mac_breakdown

    x = torch.zeros(1, _block_in_channels(block), side, side)
    with torch.no_grad():
        want, got = block.eval()(x).shape, variant.eval()(x).shape   # the variant's run is its warm-up
    if want != got:
        raise RuntimeError(f"a variant of {type(block).__name__} gives {tuple(got)} instead of {tuple(want)}; "
                           "its layers do not follow the stride set on them")
    return mac_breakdown(variant, tuple(x.shape), warmup=False)[""]


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads set to ``n`` for the block, then restored. Counting is dominated by tracing, not
    arithmetic: one thread is about as fast, and on a shared machine it does not spin against other processes."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=None)
def measure(spec: ModelSpec) -> dict[str, dict[str, int]]:
    """``{convention name: {"params": int, "macs": int}}`` for ``spec`` under every :data:`CONVENTIONS`.

    The model is built and traced once (eval mode, one image of ``spec.input_size``, one torch thread); each
    variant's strided blocks are counted alone (see the module docstring), each distinct variant of a block once.
    Cached for the process, so the report's claims and its tables share one count per model, and on disk
    (:func:`cache_dir`) under a key of the spec and the code that counts it (:func:`_code_key`), so a report over
    unchanged code counts nothing again.
    """
    path = _cache_path(spec)
    if path is not None:
        hit = _read_cached(path)
        if hit is not None:
            return hit
    with _threads(1):
        out = _measure(spec)
    if path is not None:
        with contextlib.suppress(OSError):
            from .._io import atomic_write_text
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(out, sort_keys=True))
    return out


def cache_dir() -> "Path | None":
    """Where counts are cached: ``$ATTNREPRO_CACHE`` (``off`` turns the disk cache off), else
    ``$XDG_CACHE_HOME/attnrepro`` or ``~/.cache/attnrepro``."""
    env = os.environ.get("ATTNREPRO_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnrepro"


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    """What a count depends on besides the spec: the code of config, models and modules (as the run records hash
    it), of the FLOP counting and this module, any plugin files, and the torch and fvcore versions."""
    import hashlib

    import torch

    from ..train.metrics import code_hashes
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    code = code_hashes()
    for g in ("config", "models", "modules"):
        h.update(f"{g}={code[g]};".encode())
    for f in (root / "flops.py", Path(__file__).resolve()):
        h.update(f.read_bytes())
    for f in filter(None, os.environ.get("ATTNREPRO_PLUGINS", "").split(os.pathsep)):
        with contextlib.suppress(OSError):
            h.update(Path(f).read_bytes())
    try:
        from importlib.metadata import version
        fv = version("fvcore")
    except Exception:  # noqa: BLE001
        fv = "?"
    h.update(f"torch={torch.__version__};fvcore={fv}".encode())
    return h.hexdigest()[:20]


def _cache_path(spec: ModelSpec) -> "Path | None":
    d = cache_dir()
    if d is None:
        return None
    import hashlib
    key = hashlib.sha256(f"{spec!r}|{_code_key()}".encode()).hexdigest()[:24]
    return d / "counts" / f"{key}.json"


def _read_cached(path: Path) -> dict[str, dict[str, int]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and set(data) == {c.name for c in CONVENTIONS.values()} and all(
        isinstance(v, dict) and set(v) == {"params", "macs"} and all(isinstance(x, int) for x in v.values())
        for v in data.values())
    return data if ok else None


def _measure(spec: ModelSpec) -> dict[str, dict[str, int]]:
    from ..flops import ATTENTION_MATMUL_OPS, count_params, mac_breakdown
    from ..models.placement import iter_blocks

    model = spec.build()
    side = spec.input_size
    base = mac_breakdown(model, (1, 3, side, side))
    params = count_params(model)
    names = {id(m): n for n, m in model.named_modules()}
    blocks = list(iter_blocks(model, side, spec.model))
    counted: dict[tuple[int, bool, bool], tuple[int, dict[str, int]]] = {}   # (block, plain, v1) -> delta
    out = {}
    for conv in CONVENTIONS.values():
        p, ops = params, dict(base[""])
        for _, block, block_side in blocks:
            plain, v1 = _applies(block, conv)
            if not (plain or v1):
                continue
            key = (id(block), plain, v1)
            if key not in counted:
                new = _variant_block(block, plain, v1)
                delta = {op: -v for op, v in base.get(names[id(block)], {}).items()}
                for op, v in _count_block(block, new, block_side).items():
                    delta[op] = delta.get(op, 0) + v
                counted[key] = (count_params(new) - count_params(block), delta)
            dp, delta = counted[key]
            p += dp
            for op, v in delta.items():
                ops[op] = ops.get(op, 0) + v
        macs = sum(v for op, v in ops.items() if conv.attention_matmuls or op not in ATTENTION_MATMUL_OPS)
        out[conv.name] = {"params": int(p), "macs": int(macs)}
    return out


def claim_specs(claim: Mapping[str, Any]) -> tuple[ModelSpec, ModelSpec]:
    """The (variant, reference) models of a cost claim's ``build``."""
    b = claim.get("build")
    where = f"claim {claim.get('id', '?')!r}: build"
    if not isinstance(b, Mapping) or not isinstance(b.get("variant"), Mapping) or \
            not isinstance(b.get("reference"), Mapping):
        raise ValueError(f"{where} must be a mapping with model, input_size, num_classes, and variant and reference "
                         f"mappings of build_model keywords; got {b!r}")
    common = {k: v for k, v in b.items() if k not in ("variant", "reference")}
    return (ModelSpec.from_dict({**common, **b["variant"]}, where),
            ModelSpec.from_dict({**common, **b["reference"]}, where))


def relative_difference(variant: float, reference: float) -> float:
    """``100 * (variant - reference) / reference``, in percent."""
    return 100.0 * (variant - reference) / reference
