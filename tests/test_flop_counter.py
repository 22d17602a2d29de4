"""``torch.utils.flop_counter.FlopCounterMode`` counts every attnzoo custom op: exactly twice the fvcore count
(FlopCounterMode counts a multiply-add as two flops, fvcore as one, as on a plain matmul),
backward twice forward, and a zoo model's attention ops all counted."""
from __future__ import annotations

from collections import Counter

import pytest
import timm
import torch
from _op_module import Call
from torch.utils.flop_counter import FlopCounterMode

import backbones  # noqa: F401
import ops

fvcore = pytest.importorskip('fvcore.nn')


def _counts(fn, *args, backward=False):
    """(fvcore flops, FlopCounterMode forward flops, FlopCounterMode backward flops)."""
    fv = fvcore.FlopCountAnalysis(Call(fn), args)
    fv.unsupported_ops_warnings(False)
    fv.uncalled_modules_warnings(False)
    leaves = [a.detach().requires_grad_() if a.is_floating_point() else a for a in args]
    with FlopCounterMode(display=False) as counter:
        out = fn(*leaves)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    return fv.total(), forward, counter.get_total_flops()


def _qkv(*shape):
    return tuple(torch.randn(*shape) for _ in range(3))


CASES = {
    'na2d-dilated-extra': (lambda q, k, v, ak, av: ops.na2d(q, k, v, 3, dilation=2, additional_keys=ak,
                                                           additional_values=av),
                           (*_qkv(2, 9, 10, 2, 8), torch.randn(2, 3, 2, 8), torch.randn(2, 3, 2, 8))),
    'na2d-mask-causal': (lambda q, k, v: ops.na2d(q, k, v, (3, 5), is_causal=(True, False), border='mask'),
                         _qkv(1, 7, 8, 2, 4)),
    'na1d': (lambda q, k, v: ops.na1d(q, k, v, 5, stride=2), _qkv(2, 17, 1, 8)),
    'window-padded': (lambda q, k, v: ops.window_attention(q, k, v, 4), _qkv(1, 6, 7, 2, 8)),
    'na_av': (lambda w, v: ops.na_av(w, v, 3, border='mask'), (torch.randn(1, 6, 7, 2, 9), torch.randn(1, 6, 7, 2, 8))),
    'routed': (lambda q, k, v, idx: ops.routed_attention(q, k, v, idx, 3),
               (*_qkv(2, 6, 9, 2, 8), torch.randint(0, 9, (2, 9, 4)))),
}


@pytest.mark.parametrize('name', list(CASES))
def test_flop_counter_is_twice_fvcore(name):
    fn, args = CASES[name]
    fv, forward, backward = _counts(fn, *args)
    assert fv > 0 and forward == 2 * fv
    assert backward == 2 * forward


def test_matmul_yardstick():
    """The two counters' conventions, on the product attention is made of: FlopCounterMode counts twice fvcore."""
    fv, forward, _ = _counts(torch.matmul, torch.randn(2, 7, 8), torch.randn(2, 8, 5))
    assert fv == 2 * 7 * 8 * 5 and forward == 2 * fv


@pytest.mark.parametrize('name,kwargs', [('nat_mini', dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 1, 2, 2))),
                                         ('biformer_tiny', dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64),
                                                                head_dim=8))])
def test_model_attention_counted(name, kwargs):
    """Every attention call of a model is in FlopCounterMode's per-op table, at twice fvcore's per-op count."""
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, 96, 96)
    fv = fvcore.FlopCountAnalysis(model, (x,))
    fv.unsupported_ops_warnings(False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    per_op = {str(k).split('.')[-1]: v for k, v in counter.get_flop_counts()['Global'].items()}
    fv_ops = fv.by_operator()
    key, counter_key = (('neighborhood_attention', 'na_forward') if name.startswith('nat') else
                        ('routed_attention', 'routed_forward'))
    assert fv_ops[key] > 0 and per_op[counter_key] == 2 * fv_ops[key]


# fvcore's handles for elementwise work (norms, pooling, resizing): FlopCounterMode counts products only
FVCORE_ELEMENTWISE = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm', 'aten::instance_norm',
                      'aten::upsample_nearest2d', 'aten::upsample_bilinear2d', 'aten::adaptive_avg_pool2d',
                      'aten::grid_sampler')
ONE = (1, 1, 1, 1)


@pytest.mark.parametrize('name,kwargs', [
    ('nat_mini', dict(depths=ONE, embed_dim=16, num_heads=(1, 1, 2, 2))),
    ('biformer_tiny', dict(depths=ONE, embed_dims=(16, 32, 48, 64), head_dim=8)),  # routed + SDPA + matmul
    ('maxvit_na_tiny_tf_224', dict(depths=ONE, embed_dim=(32, 64, 96, 128), stem_width=16)),
    ('tiny_moat_0_no_pe', {}),  # SDPA with a bias (the CPU flash kernel)
    ('agent_pvt_tiny', dict(depths=ONE))])  # agent attention, spatial-reduction SDPA, bilinear resizes
def test_model_total_is_twice_fvcore(name, kwargs):
    """A whole model: FlopCounterMode's total is exactly twice fvcore's over the products both count (fvcore's
    elementwise handles off), so the two conventions differ by that factor alone."""
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, 96, 96)
    fv = fvcore.FlopCountAnalysis(model, (x,))
    fv.unsupported_ops_warnings(False)
    fv.uncalled_modules_warnings(False)
    fv.set_op_handle(**{op: lambda inputs, outputs: Counter() for op in FVCORE_ELEMENTWISE})  # counted as zero
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert fv.total() > 0 and counter.get_total_flops() == 2 * fv.total()
