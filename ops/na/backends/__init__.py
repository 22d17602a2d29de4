"""The neighborhood-attention backends, registered as op ``'na'`` in :mod:`ops._registry`.

A backend is a module with (``spec`` an :class:`ops.na.pattern.NASpec`; tensors ``[B, *S, H, D]``; ``add_k`` /
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

Adding a backend: write the module, add one ``register_backend('na', ...)`` line below with its capabilities,
and run the conformance tests (``tests/_na_cases.py``) against it.
"""
from __future__ import annotations

import torch

from ... import _triton
from ..._registry import register_backend

register_backend('na', 'reference', 'ops.na.backends.reference', auto=False, preload=True)
register_backend('na', 'torch', 'ops.na.backends.torch_na', dropout=True, priority=10, preload=True)
# the neighbourhood weighted sum (ops.na.na_av): reference oracle and the slot-loop torch path
register_backend('na_av', 'reference', 'ops.na.backends.av_reference', auto=False, preload=True)
register_backend('na_av', 'torch', 'ops.na.backends.av_torch', priority=10, preload=True)
register_backend('na', 'triton', 'ops.na.backends.triton_na', devices=('cuda',),
                 dtypes=(torch.float16, torch.bfloat16, torch.float32), dropout=True, priority=20,
                 probe=_triton.unavailable_reason,
                 preload=_triton.unavailable_reason(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
                 is None)
