"""``torch.library`` registration of the neighborhood-attention op, so ``torch.compile`` sees one opaque node.

``attnzoo::na_forward`` and ``attnzoo::na_backward`` call the named backend; fake (meta) implementations give
``torch.compile(fullgraph=True)`` the output shapes without running it, and :func:`torch.library.register_autograd`
wires the backward; the rpb and extra-token gradients are computed only when autograd needs them. Attention
dropout (backends that fuse it) takes ``dropout_p`` and ``dropout_seed``, an int64 tensor ``(seed, offset)`` of the
backend's Philox stream, saved for the backward so that it regenerates the forward's mask. Absent optional
gradients travel as empty tensors (custom ops cannot return ``None``). The autocast rule of :mod:`ops._checks`
is registered on the forward's Autocast keys.

Eager calls (no compile, trace, export, dispatch or function mode, functorch transform or tensor subclass: see
:func:`eager_ok`) skip the op's dispatch round trip and run the same backend functions through one
:class:`torch.autograd.Function` (:func:`na_eager`): the custom op's Python dispatch costs ~0.1 ms a call, which
at DiNAT's 7x7 stage is a fifth of the attention itself. Everything that inspects or transforms the graph still
sees the one custom op.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import autocast_off, register_autocast
from .._registry import get_backend
from .pattern import NASpec

__all__ = ['na_forward', 'na_backward', 'spec_args', 'eager_ok', 'na_eager']


def spec_args(spec: NASpec) -> tuple[list[int], list[int], list[int], list[int], list[int] | None]:
    """The NASpec as op arguments (int lists; is_causal as 0/1 because jit tracing cannot hold bool lists)."""
    return (list(spec.kernel_size), list(spec.stride), list(spec.dilation), [int(c) for c in spec.is_causal],
            None if spec.valid_shape is None else list(spec.valid_shape))


def _spec(kernel_size, stride, dilation, is_causal, valid_shape, border='clamp') -> NASpec:
    return NASpec(tuple(kernel_size), tuple(stride), tuple(dilation), tuple(bool(c) for c in is_causal),
                  None if valid_shape is None else tuple(valid_shape), border)


def _dropout(dropout_p: float, dropout_seed: Tensor | None) -> dict:
    """Dropout keywords for the backend (none without dropout: backends without it keep their signatures)."""
    return {} if dropout_p == 0 else {'dropout_p': dropout_p, 'dropout_seed': dropout_seed}


def _lse_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.custom_op('attnzoo::na_forward', mutates_args=())
def na_forward(query: Tensor, key: Tensor, value: Tensor, kernel_size: list[int], stride: list[int],
               dilation: list[int], is_causal: list[int], valid_shape: list[int] | None, scale: float,
               rpb: Tensor | None, additional_keys: Tensor | None, additional_values: Tensor | None,
               backend: str, dropout_p: float = 0.0, dropout_seed: Tensor | None = None,
               border: str = 'clamp') -> tuple[Tensor, Tensor]:
    """Neighborhood attention forward on backend ``backend``: ``(out, lse)`` (``lse`` of the undropped weights)."""
    spec = _spec(kernel_size, stride, dilation, is_causal, valid_shape, border)
    with autocast_off(query.device.type):  # backends compute in the inputs' dtype, fwd and bwd alike
        out, lse = get_backend('na', backend).forward(query, key, value, spec, scale, rpb, additional_keys,
                                                      additional_values, **_dropout(dropout_p, dropout_seed))
    return out.contiguous(), lse.to(_lse_dtype(query)).contiguous()


@na_forward.register_fake
def _(query, key, value, kernel_size, stride, dilation, is_causal, valid_shape, scale, rpb, additional_keys,
      additional_values, backend, dropout_p=0.0, dropout_seed=None, border='clamp'):
    return query.new_empty(query.shape), query.new_empty(query.shape[:-1], dtype=_lse_dtype(query))


@torch.library.custom_op('attnzoo::na_backward', mutates_args=())
def na_backward(grad_out: Tensor, grad_lse: Tensor | None, query: Tensor, key: Tensor, value: Tensor, out: Tensor,
                lse: Tensor, kernel_size: list[int], stride: list[int], dilation: list[int], is_causal: list[int],
                valid_shape: list[int] | None, scale: float, rpb: Tensor | None,
                additional_keys: Tensor | None, additional_values: Tensor | None, backend: str, need_rpb: bool,
                need_extra: bool, dropout_p: float = 0.0, dropout_seed: Tensor | None = None,
                border: str = 'clamp') -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv, drpb, dadd_k, dadd_v)``; absent or unneeded ones are empty tensors."""
    spec = _spec(kernel_size, stride, dilation, is_causal, valid_shape, border)
    with autocast_off(query.device.type):
        grads = get_backend('na', backend).backward(grad_out, query, key, value, out, lse, spec, scale, rpb,
                                                    additional_keys, additional_values, grad_lse=grad_lse,
                                                    need_rpb=need_rpb and rpb is not None,
                                                    need_extra=need_extra and additional_keys is not None,
                                                    **_dropout(dropout_p, dropout_seed))
    # custom ops may not return aliases of inputs or of each other (a backend may return views of one buffer)
    seen = {t.untyped_storage().data_ptr() for t in (grad_out, query, key, value, out, lse) if t.numel()}
    result = []
    for g in grads:
        if g is None:
            g = query.new_empty(0)
        else:
            g = g.contiguous()
            ptr = g.untyped_storage().data_ptr()
            if ptr in seen:
                g = g.clone()
            seen.add(g.untyped_storage().data_ptr())
        result.append(g)
    return tuple(result)


@na_backward.register_fake
def _(grad_out, grad_lse, query, key, value, out, lse, kernel_size, stride, dilation, is_causal, valid_shape, scale,
      rpb, additional_keys, additional_values, backend, need_rpb, need_extra, dropout_p=0.0, dropout_seed=None,
      border='clamp'):
    needed = (True, True, True, need_rpb, need_extra, need_extra)
    return tuple(t.new_empty(t.shape) if t is not None and need else query.new_empty(0)
                 for t, need in zip((query, key, value, rpb, additional_keys, additional_values), needed))


def _setup_context(ctx, inputs, output):
    (q, k, v, kernel_size, stride, dilation, is_causal, valid_shape, scale, rpb, add_k, add_v, backend, dropout_p,
     dropout_seed, border) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, rpb, add_k, add_v, dropout_seed)
    ctx.args = (kernel_size, stride, dilation, is_causal, valid_shape, scale)
    ctx.backend, ctx.dropout_p, ctx.border = backend, dropout_p, border
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, rpb, add_k, add_v, dropout_seed = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    need = ctx.needs_input_grad
    need_rpb, need_extra = rpb is not None and need[9], add_k is not None and (need[10] or need[11])
    grads = na_backward(grad_out, grad_lse, q, k, v, out, lse, *ctx.args, rpb, add_k, add_v, ctx.backend, need_rpb,
                        need_extra, ctx.dropout_p, dropout_seed, ctx.border)
    dq, dk, dv, drpb, dak, dav = grads
    return (dq, dk, dv, None, None, None, None, None, None, drpb if need_rpb else None,
            dak if need_extra else None, dav if need_extra else None, None, None, None, None)


torch.library.register_autograd('attnzoo::na_forward', _backward, setup_context=_setup_context)
register_autocast('attnzoo::na_forward')

_PLAIN = (Tensor, torch.nn.Parameter)


def eager_ok(*tensors: Tensor | None) -> bool:
    """Whether a call on ``tensors`` is plain eager PyTorch, so that it may bypass the custom op: nothing compiles,
    traces (jit, fvcore), exports or intercepts it (dispatch modes: FlopCounterMode, FakeTensorMode, make_fx;
    function modes), no functorch transform is active and every tensor is a plain Tensor or Parameter off the meta
    device (meta tensors take the op's fake implementation)."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack()
                or torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active()
                or any(type(t) not in _PLAIN or t.is_meta for t in tensors if t is not None))


class _Eager(torch.autograd.Function):
    """``na_forward`` / ``na_backward`` without the custom op (no dropout): the same backend calls."""

    @staticmethod
    def forward(ctx, query, key, value, spec, scale, rpb, additional_keys, additional_values, backend):
        with autocast_off(query.device.type):
            out, lse = get_backend('na', backend).forward(query, key, value, spec, scale, rpb, additional_keys,
                                                          additional_values)
        out, lse = out.contiguous(), lse.to(_lse_dtype(query)).contiguous()
        ctx.save_for_backward(query, key, value, out, lse, rpb, additional_keys, additional_values)
        ctx.spec, ctx.scale, ctx.backend = spec, scale, backend
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse, rpb, add_k, add_v = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        need = ctx.needs_input_grad
        need_rpb, need_extra = rpb is not None and need[5], add_k is not None and (need[6] or need[7])
        with autocast_off(q.device.type):
            dq, dk, dv, drpb, dak, dav = get_backend('na', ctx.backend).backward(
                grad_out, q, k, v, out, lse, ctx.spec, ctx.scale, rpb, add_k, add_v, grad_lse=grad_lse,
                need_rpb=need_rpb, need_extra=need_extra)
        return dq, dk, dv, None, None, drpb, dak, dav, None


def na_eager(query: Tensor, key: Tensor, value: Tensor, spec: NASpec, scale: float, rpb: Tensor | None,
             additional_keys: Tensor | None, additional_values: Tensor | None,
             backend: str) -> tuple[Tensor, Tensor]:
    """What ``na_forward`` computes (without dropout), for calls where :func:`eager_ok` holds; autograd through
    the backend's explicit backward only when an input needs a gradient."""
    tensors = (query, key, value, rpb, additional_keys, additional_values)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _Eager.apply(query, key, value, spec, scale, rpb, additional_keys, additional_values, backend)
    with autocast_off(query.device.type):
        out, lse = get_backend('na', backend).forward(query, key, value, spec, scale, rpb, additional_keys,
                                                      additional_values)
    return out.contiguous(), lse.to(_lse_dtype(query)).contiguous()
