"""Parameters and multiply-accumulates (MACs) of a model, counted with fvcore's ``FlopCountAnalysis``.

Conventions (say them wherever a number is shown):
    - **MACs**: fvcore's unit, "one fused multiply-add counts as one flop". ResNet-50 at 224x224 is about 4.1 G.
      :func:`count_macs` returns MACs; the ``gmacs`` column is MACs / 1e9.
    - **GFLOPs in AA's convention** (``gflops_aa``): 2 x MACs / 1e9, the way the AA paper's tables count
      (ResNet-50: 8.2 GFLOPs).
    - Counted in eval mode (batch norm with running statistics), for the given input (batch 1 by default: per image),
      after one untraced warm-up forward, so what a layer caches in eval (ExpAtt's dense maps for the non-Gaussian
      kernels, built once per feature size) is not counted, and the count does not depend on what ran before.

What is counted, beyond fvcore's defaults (conv, linear/addmm, batch norm, adaptive average pooling, norms):
    - ``aten::matmul`` / ``mm`` / ``bmm``: replaced by a broadcast-aware handle, ``prod(batch) * n * k * m``.
      fvcore's own matmul handle multiplies the *first* operand's size by the last dim of the second, which
      undercounts ``(H, H) @ (B, heads, d, H, W)``-style products (the factorised Gaussian of ExpAtt).
    - ``aten::einsum``: replaced; two operands: the product of the sizes of all indices (exact MACs, ellipsis
      included); three or more: half of numpy's optimal-path flop count (fvcore's rule); one operand: 0.
    - ``aten::scaled_dot_product_attention`` (added): ``Q K^T`` and ``A V``, ``prod(batch) * L * S * (E + E_v)``;
      an additive mask is an addition (not counted); a causal mask is counted as dense.
    - Element-wise products ``aten::mul`` / ``div`` / ``pow`` (added): one per floating-point output element
      (SE/CBAM gating, AW's kernel modulation, query scaling, squared distances); integer index arithmetic counts 0.
      fvcore's default counts them as nothing.
    - Grouped convolutions (AW's per-sample kernels, batch folded into the groups): fvcore's conv handle already
      counts ``batch * prod(weight.shape) * prod(out spatial)``, and the weight's second dim is ``C_in / groups``,
      so groups are handled; the tests check it against a hand count.
    - Ops that do no multiply-adds are explicitly *ignored* (listed in :data:`NO_MAC_OPS`: additions,
      reductions, max/avg pooling, softmax and other pointwise non-linearities, indexing and copies). Any other op
      fvcore has no handle for still produces fvcore's "unsupported operator" warning, on purpose.

Breakdowns: :func:`mac_breakdown` gives the MACs per module and per op (fvcore's op names, without ``aten::``) from
one trace; :data:`ATTENTION_MATMUL_OPS` names the ops that multiply activations with attention maps (SDPA, matmul,
einsum), which a counter that only sees layers (conv, linear) would not count. :mod:`attnrepro.analysis.tables` builds its
counting conventions on these.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ["count_params", "count_macs", "mac_breakdown", "complexity", "complexity_table", "flop_analysis",
           "NO_MAC_OPS", "ATTENTION_MATMUL_OPS", "matmul_macs", "einsum_macs", "sdpa_macs"]

# Ops that do no multiply-accumulate (sums, maxima, pointwise non-linearities, data movement). fvcore would warn
# "unsupported operator" for them; they are ignored by name, never by switching the warnings off.
NO_MAC_OPS: tuple[str, ...] = (
    # additions, subtractions, comparisons
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::neg", "aten::abs",
    "aten::lt", "aten::le", "aten::ne", "aten::where", "aten::minimum", "aten::maximum", "aten::min",
    # reductions and pooling (sums and maxima)
    "aten::sum", "aten::mean", "aten::amax", "aten::amin", "aten::max_pool2d", "aten::avg_pool2d",
    "aten::adaptive_max_pool2d", "aten::cumsum",
    # pointwise non-linearities (exp, logistic, ...): not multiply-adds by fvcore's convention
    "aten::softmax", "aten::log_softmax", "aten::sigmoid", "aten::sigmoid_", "aten::exp", "aten::log",
    "aten::log1p", "aten::tanh", "aten::hardtanh", "aten::hardtanh_", "aten::gelu", "aten::silu", "aten::silu_",
    "aten::softplus", "aten::sqrt", "aten::rsqrt", "aten::reciprocal", "aten::relu6",
    # data movement and construction
    "aten::pad", "aten::repeat", "aten::expand_as", "aten::index_select", "aten::clone", "aten::flip",
    "aten::unflatten", "aten::view_as", "aten::reshape_as", "aten::movedim", "aten::linspace", "aten::ones_like",
    "aten::empty_like", "aten::tensor", "aten::scalar_tensor", "aten::lift_fresh", "aten::alias",
    "aten::masked_fill_", "aten::fill_", "aten::zero_", "aten::tril", "aten::triu", "aten::meshgrid",
    "aten::repeat_interleave", "aten::contiguous", "aten::unfold", "aten::as_strided",
)


# Ops, as fvcore names them in its breakdowns, that multiply activations by activations or by an attention map: the
# attention matmuls of AA (SDPA: Q K^T and A V; the relative logits) and of ExpAtt (the map applied to V). Plain and
# gated ResNets have none of them (the classifier is ``linear``/``addmm``).
ATTENTION_MATMUL_OPS: tuple[str, ...] = ("scaled_dot_product_attention", "matmul", "mm", "bmm", "einsum",
                                         "PythonOp._RelativeAttention")


def _shape(v: Any) -> list[int] | None:
    return v.type().sizes() if v.isCompleteTensor() else None


def matmul_macs(a: Sequence[int], b: Sequence[int]) -> int:
    """MACs of ``torch.matmul`` for operand shapes ``a`` and ``b`` (numpy broadcasting rules, 1-D operands)."""
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    n, k = a[-2], a[-1]
    m = b[-1]
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return int(math.prod(batch) * n * k * m)


def _matmul_handle(inputs: list, outputs: list) -> int:
    return matmul_macs(_shape(inputs[0]), _shape(inputs[1]))


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> float:
    """MACs of ``torch.einsum(equation, *operands)`` for operand ``shapes`` (see the module docstring)."""
    eq = equation.replace(" ", "")
    lhs = eq.split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} has {len(terms)} operands but {len(shapes)} shapes were given")
    if len(terms) == 1:
        return 0
    if len(terms) > 2:
        views = [np.broadcast_to(np.zeros((), dtype=np.float32), tuple(s)) for s in shapes]
        info = np.einsum_path(eq, *views, optimize="optimal")[1]
        for line in info.split("\n"):
            if "optimized flop" in line.lower():
                return float(np.floor(float(line.split(":")[-1]) / 2))
        raise NotImplementedError(f"cannot count einsum {equation!r}")
    sizes: dict[str, int] = {}
    ellipsis_shapes = []
    for term, shape in zip(terms, shapes):
        letters = term.replace("...", "")
        if "..." in term:
            n_ell = len(shape) - len(letters)
            start = term.index("...")
            ellipsis_shapes.append(tuple(shape[start:start + n_ell]))
            shape = list(shape[:start]) + list(shape[start + n_ell:])
        for letter, size in zip(letters, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(size))
    ell = math.prod(np.broadcast_shapes(*ellipsis_shapes)) if ellipsis_shapes else 1
    return int(math.prod(sizes.values()) * ell)


def _einsum_handle(inputs: list, outputs: list) -> float:
    equation = inputs[0].toIValue()
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    return einsum_macs(equation, shapes)


def sdpa_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """MACs of scaled dot-product attention: ``Q K^T`` plus ``A V`` for q (..., L, E), k (..., S, E),
    v (..., S, Ev)."""
    batch = np.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2]))
    L, E = q[-2], q[-1]
    S, Ev = k[-2], v[-1]
    return int(math.prod(batch) * L * S * (E + Ev))


def _sdpa_handle(inputs: list, outputs: list) -> int:
    return sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


_FLOAT_TYPES = {"Float", "Double", "Half", "BFloat16", "ComplexFloat", "ComplexDouble"}


def _elementwise_product_handle(inputs: list, outputs: list) -> int:
    out = outputs[0]
    if out.type().scalarType() not in _FLOAT_TYPES:  # integer index arithmetic is not model compute
        return 0
    return int(math.prod(_shape(out)))


HANDLES = {
    "aten::matmul": _matmul_handle,
    "aten::mm": _matmul_handle,
    "aten::bmm": _matmul_handle,
    "aten::einsum": _einsum_handle,
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "aten::mul": _elementwise_product_handle,
    "aten::mul_": _elementwise_product_handle,
    "aten::div": _elementwise_product_handle,
    "aten::div_": _elementwise_product_handle,
    "aten::pow": _elementwise_product_handle,
    # AA's CPU training path wraps SDPA in an autograd function (traced only when gradients are on)
    "prim::PythonOp._RelativeAttention": _sdpa_handle,
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or frozen; buffers such as BN statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def _input_shape(input_size: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (1, 3, input_size, input_size)
    try:
        shape = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size={input_size!r} must be an int side or a (C, H, W) / (B, C, H, W) shape") \
            from None
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_size={input_size!r} must be an int side or a (C, H, W) / (B, C, H, W) shape")
    return shape


def flop_analysis(model: nn.Module, inputs: torch.Tensor | tuple) -> Any:
    """An fvcore ``FlopCountAnalysis`` with this module's handles and ignored ops (the model is not switched to
    eval here; :func:`count_macs` does that)."""
    from fvcore.nn import FlopCountAnalysis
    fa = FlopCountAnalysis(model, inputs)
    fa.set_op_handle(**HANDLES)
    fa.set_op_handle(**{op: None for op in NO_MAC_OPS})
    return fa


def _analysed(model: nn.Module, input_size: int | Sequence[int], read: Any, warmup: bool = True) -> Any:
    """``read(FlopCountAnalysis)`` for one forward of ``model`` in eval mode on zeros of ``input_size``, after one
    untraced warm-up forward (unless ``warmup`` is False: the caller has just run the model in eval mode on this
    shape); the model's train/eval mode is restored."""
    shape = _input_shape(input_size)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        if warmup:
            with torch.no_grad():
                model(x)  # warm-up: layers that cache constants in eval (ExpAtt's dense maps) are counted as they run
        with torch.no_grad(), warnings.catch_warnings():
            # fvcore traces with torch.jit, which torch now marks deprecated; that notice is not about the count.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
            return read(flop_analysis(model, x))
    finally:
        model.train(was_training)


def count_macs(model: nn.Module, input_size: int | Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass in eval mode for an input of shape ``input_size``
    (``(B, C, H, W)``, ``(C, H, W)`` or an int side with 3 channels); MACs for the whole batch, so the default
    batch of 1 gives MACs per image. GFLOPs in AA's convention are ``2 * macs / 1e9``."""
    return int(_analysed(model, input_size, lambda fa: fa.total()))


def mac_breakdown(model: nn.Module, input_size: int | Sequence[int] = (1, 3, 224, 224), *, warmup: bool = True
                  ) -> dict[str, dict[str, int]]:
    """MACs per module and op from one trace (counted as :func:`count_macs` counts): ``{module name: {op: MACs}}``,
    with ``""`` the whole model and op names as fvcore gives them (``conv``, ``scaled_dot_product_attention``...).
    ``sum(mac_breakdown(m, s)[""].values()) == count_macs(m, s)``. ``warmup=False`` skips the untraced warm-up
    forward, for a caller that has just run the model in eval mode on this input shape."""
    def read(fa):
        return {name: {op: int(v) for op, v in ops.items() if v}
                for name, ops in fa.by_module_and_operator().items()}
    return _analysed(model, input_size, read, warmup)


def complexity(model: nn.Module, input_shape: int | Sequence[int] = (1, 3, 224, 224)) -> dict[str, float]:
    """``{"params", "macs", "gmacs", "gflops_aa"}`` for ``model`` at ``input_shape``
    (gflops_aa = 2 x MACs / 1e9, the AA paper's convention)."""
    macs = count_macs(model, input_shape)
    return {"params": count_params(model), "macs": macs, "gmacs": macs / 1e9, "gflops_aa": 2 * macs / 1e9}


def complexity_table(names: Iterable[str] = ("resnet50",),
                     attentions: Iterable[str] | None = None,
                     input_size: int | None = None, *, num_classes: int = 1000, in_chans: int = 3,
                     stages: Sequence[int] | None = None, **attention_kwargs: Any):
    """A ``pandas.DataFrame``, one row per (model, attention): model, attention, stages, input_size, params,
    macs, gmacs (MACs / 1e9, fvcore's convention) and gflops_aa (2 x MACs / 1e9, the AA paper's convention).

    ``attentions`` None: ``"none"`` and every single-layer kind of the registry (:mod:`attnrepro.registry`: the
    suite's five, then any registered); ``input_size`` None: each model's default (224 for ImageNet ResNets, 32 for
    CIFAR nets); ``stages`` None: each attention's default placement; ``attention_kwargs`` go to the kinds that
    accept them (:func:`attnrepro.registry.accepted`), the other kinds ignore them.
    """
    import pandas as pd
    from . import registry
    from .models import build_model, default_input_size
    attentions = ("none",) + registry.layer_kinds() if attentions is None else tuple(attentions)
    rows = []
    for name in names:
        side = input_size if input_size is not None else default_input_size(name)
        for kind in attentions:
            try:
                accepts = () if kind in (None, "none") else registry.accepted(kind)
            except KeyError:     # build_model names the valid kinds
                accepts = ()
            kw = {k: v for k, v in attention_kwargs.items() if k in accepts}
            model = build_model(name, num_classes, in_chans, kind, stages, input_size=side, **kw)
            c = complexity(model, (1, in_chans, side, side))
            chosen = model.attnrepro_spec["stages"]
            rows.append({"model": name, "attention": kind, "stages": ",".join(map(str, chosen)) or "-",
                         "input_size": side, **c})
            del model
    return pd.DataFrame(rows, columns=["model", "attention", "stages", "input_size", "params", "macs", "gmacs",
                                       "gflops_aa"])
