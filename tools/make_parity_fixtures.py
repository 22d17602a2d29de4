#!/usr/bin/env python3
"""Write the official-parity fixtures ``tests/data/parity/<model>.pt`` by running the authors' own model code.

    git clone https://github.com/SHI-Labs/Neighborhood-Attention-Transformer ../nat-official
    python tools/make_parity_fixtures.py ../nat-official

For each ported NAT-family variant this builds the OFFICIAL classification model (``classification/nat.py``,
``dinat.py``, ``dinats.py``) at reduced depth and width, runs it in float64 on a fixed random input, and stores its
state dict (official layout, float32), the input and the logits. ``tests/test_parity.py`` loads each fixture through
our ``backbones.checkpoint.fit`` and compares logits, so parity with the official code is pinned in CI.

The official code needs NATTEN; this script installs a stand-in ``natten`` module (below, in this script only): a
re-implementation of NATTEN 0.14's ``NeighborhoodAttention2D`` module (qkv, rpb, proj; inputs smaller than
kernel * dilation padded at the end and cropped after) whose attention core is ``ops.na2d`` on the ``reference``
backend (brute force, exact). The official ``@register_model`` functions are kept out of timm's registry.
A later family adds its variants to ``FIXTURES`` (or its own script) the same way.
"""
import argparse
import importlib
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _parity import official_code  # noqa: E402

import ops  # noqa: E402

# (our model name, official module, official class, official constructor kwargs, our create_model kwargs)
_DIL = [[1, 2], [1, 2], [1, 2], [1]]
FIXTURES = [
    ('nat_mini', 'nat', 'NAT', dict(embed_dim=8, mlp_ratio=3., depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                                    kernel_size=7, num_classes=10),
     dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), num_classes=10)),
    ('nat_small', 'nat', 'NAT', dict(embed_dim=8, mlp_ratio=2., depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2],
                                     kernel_size=7, num_classes=10, layer_scale=1e-1),
     dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), num_classes=10, layer_scale=1e-1)),
    ('dinat_mini', 'dinat', 'DiNAT', dict(embed_dim=8, mlp_ratio=3., depths=[2, 2, 2, 1], num_heads=[1, 1, 2, 2],
                                          kernel_size=7, dilations=_DIL, num_classes=10),
     dict(embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 1, 2, 2), dilations=_DIL, num_classes=10)),
    ('dinat_s_tiny', 'dinats', 'DiNAT_s', dict(embed_dim=8, depths=[2, 2, 2, 1], num_heads=[1, 1, 2, 2],
                                               kernel_size=7, dilations=_DIL, num_classes=10),
     dict(embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 1, 2, 2), dilations=_DIL, num_classes=10)),
]
INPUT_SHAPE = (2, 3, 72, 60)  # not a multiple of 32; stage 4 (3x2 tokens) is smaller than the kernel: padded


class NeighborhoodAttention2D(nn.Module):
    """NATTEN 0.14's module, re-implemented; the attention itself is ``ops.na2d(backend='reference')``."""

    def __init__(self, dim, kernel_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.,
                 dilation=None, bias=True, rel_pos_bias=None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation or 1
        self.window_size = self.kernel_size * self.dilation
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if bias if rel_pos_bias is None else rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=.02, mean=0., a=-2., b=2.)
        else:
            self.register_parameter('rpb', None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, Hp, Wp, C = x.shape
        H, W = Hp, Wp
        pad_r, pad_b = max(0, self.window_size - W), max(0, self.window_size - H)
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            _, H, W, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        x = ops.na2d(q, k, v, self.kernel_size, dilation=self.dilation, rpb=self.rpb, scale=self.scale,
                     backend='reference')
        x = x.reshape(B, H, W, C)
        if pad_r or pad_b:
            x = x[:, :Hp, :Wp, :]
        return self.proj_drop(self.proj(x))


def _install_shims() -> None:
    natten = types.ModuleType('natten')
    natten.NeighborhoodAttention2D = NeighborhoodAttention2D  # no ``natten.context``: the official pre-0.17 path
    sys.modules['natten'] = natten


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('official_repo', help='checkout of SHI-Labs/Neighborhood-Attention-Transformer')
    parser.add_argument('--out', default=str(ROOT / 'tests' / 'data' / 'parity'), help='fixture folder')
    args = parser.parse_args(argv)
    classification = Path(args.official_repo) / 'classification'
    if not (classification / 'nat.py').is_file():
        parser.error(f'{args.official_repo}: no classification/nat.py (not the official NAT repository)')
    _install_shims()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, module, cls, official_kwargs, our_kwargs in FIXTURES:
        torch.manual_seed(0)
        with official_code(classification):  # the official files register nat_mini etc.: timm's names stay ours
            official = importlib.import_module(module)
        model = getattr(official, cls)(**official_kwargs).eval()
        with torch.no_grad():  # random, non-trivial weights (the official init leaves biases / norms at 0 / 1)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = model.double()(x.double()).float()
        state_dict = {k: v.float().clone() for k, v in model.state_dict().items()}
        torch.save({'model_name': name, 'model_kwargs': our_kwargs, 'official_state_dict': state_dict,
                    'input': x, 'logits': logits,
                    'source': f'SHI-Labs/Neighborhood-Attention-Transformer classification/{module}.py {cls}'},
                   out / f'{name}.pt')
        print(f'{name}: {sum(v.numel() for v in state_dict.values())} parameters, logits {tuple(logits.shape)}')


if __name__ == '__main__':
    main()
