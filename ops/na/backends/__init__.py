"""The neighborhood-attention backends, registered as op ``'na'`` in :mod:`ops._registry`.

A backend is a module ending with its :class:`ops._registry.Backend` record ``BACKEND``, whose entry points are
(``spec`` an :class:`ops.na.pattern.NASpec`; tensors ``[B, *S, H, D]``; ``add_k`` /
``add_v`` ``[B or 1, n_extra, H, D]`` or ``None``)::

    forward(q, k, v, spec, scale, rpb, add_k, add_v) -> (out [B, *S, H, D] in q.dtype, lse [B, *S, H])
    backward(grad_out, q, k, v, out, lse, spec, scale, rpb, add_k, add_v, grad_lse=None, need_rpb=True,
             need_extra=True) -> (dq, dk, dv, drpb, dadd_k, dadd_v)      # None for absent or unneeded ones

and optionally ``check_inputs(q, k, v, spec, rpb, add_k, add_v)`` raising for a request it cannot serve. A backend
declaring ``dropout=True`` either fuses it (``forward`` / ``backward`` take ``dropout_p=`` and ``dropout_seed=``, an
int64 tensor ``(seed, offset)`` of its random stream; the call stays in the custom op) or provides
``forward_with_dropout(q, k, v, spec, scale, rpb, add_k, add_v, dropout_p)``, differentiable through autograd.
``lse`` is float32 (float64 for float64 inputs); a query that sees no key gets output 0 and lse
``-inf``. ``grad_lse`` (``[B, *S, H]`` or ``None``) is the gradient reaching ``lse`` (e.g. through
:func:`ops.merge_attentions`); it enters FlashAttention's backward as ``delta = rowsum(dO * O) - grad_lse``.

Adding a backend: write the module with its ``BACKEND = Backend('na', name, forward, backward, ...capabilities)``,
add one ``register_backend(module.BACKEND)`` line below, and run the conformance tests (``tests/_na_cases.py``)
against it.
"""
from __future__ import annotations

from ..._registry import register_backend
from . import av_reference, av_torch, reference, torch_na, triton_na

register_backend(reference.BACKEND)
register_backend(torch_na.BACKEND)
register_backend(triton_na.BACKEND)  # imports no Triton until Triton can run (ops._registry)
# the neighbourhood weighted sum (ops.na.na_av): reference oracle and the slot-loop torch path
register_backend(av_reference.BACKEND)
register_backend(av_torch.BACKEND)
