"""Run the official LITv2 code next to ours: write the CI parity fixture, or check a full-size model.

The official code (https://github.com/ziplab/LITv2) is run outside the package, from a checkout given by
``--official``. It needs a compiled DCN extension and apex; this script stands in for them, here only:

* ``DCN.deform_conv2d_forward`` -> mmcv's ``deform_conv2d`` (mmcv 2.x CPU ops) plus the bias, so the official model
  is computed with a deformable conv that is not the torchvision one our model uses;
* ``apex.amp.float_function`` -> identity (it only casts under apex's amp);
* the detection backbone's ``mmdet.registry.MODELS`` registration runs against the installed mmdet 3.x.

Usage (from the attnzoo root, mmcv and mmdet installed, e.g. ``make install-det``)::

    git clone https://github.com/ziplab/LITv2 /tmp/LITv2
    PYTHONPATH=. python tools/litv2_official_parity.py --official /tmp/LITv2 --write tests/data/litv2_official.pt
    PYTHONPATH=. python tools/litv2_official_parity.py --official /tmp/LITv2 --check litv2_small

``--write`` builds a reduced official model (``FIXTURE_CFG``) with perturbed random weights (every parameter and
BatchNorm statistic moved off its init, offsets of about a pixel), runs the classification model at 64 and 96 and
the detection backbone at 80x88 (stage-3 map 5x5: Hi-Fi padding), and saves its official-layout state dict (fp16
values, run in fp32) with the outputs. ``tests/test_litv2.py`` loads it through ``backbones.checkpoint.fit`` and
compares. ``--check`` does the same for a real variant at 224 and 256 (the official model rebuilt per size) and
prints the largest differences.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import _parity
import torch
import torch.nn.functional as F
from _parity import SEED, fixture_input, perturb_running_stats_

FIXTURE_CFG = dict(embed_dim=4, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), mlp_ratio=2., num_classes=10)
FIXTURE_SIZES = (64, 96)
DET_SIZE = (80, 88)  # stage maps 20x22, 10x11, 5x5 (Hi-Fi pads to 6x6), 2x2

def _shim_dcn_and_apex() -> None:
    from mmcv.ops import deform_conv2d as mmcv_deform_conv2d

    def forward(input, weight, bias, offset, kh, kw, sh, sw, ph, pw, dh, dw, group, deformable_groups, im2col_step):
        out = mmcv_deform_conv2d(input, offset, weight, (sh, sw), (ph, pw), (dh, dw), group, deformable_groups,
                                 False, input.shape[0])
        return out + bias.view(1, -1, 1, 1)

    dcn = types.ModuleType('DCN')
    dcn.deform_conv2d_forward = forward
    apex = types.ModuleType('apex')
    apex.amp = types.SimpleNamespace(float_function=lambda f: f)
    sys.modules.update(DCN=dcn, apex=apex)


def official_modules(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The official classification ``models.litv2`` module and detection backbone module."""
    _shim_dcn_and_apex()
    torch.manual_seed(SEED)  # the official inits draw from the global generator: reproducible fixtures
    with _parity.official_code(root / 'classification'):  # the official code imports `models.*`, `mm_modules.*`
        cls_module = importlib.import_module('models.litv2')
    det_module = _parity.load_module('official_litv2_det', root / 'detection/mmdet/models/backbones/litv2.py')
    return cls_module, det_module


def _official_kwargs(cfg: dict) -> dict:
    return dict(embed_dim=cfg['embed_dim'], depths=list(cfg['depths']), num_heads=list(cfg['num_heads']),
                mlp_ratio=cfg.get('mlp_ratio', 4.), qkv_bias=True, drop_path_rate=0., has_msa=[0, 0, 1, 1],
                alpha=0.9, local_ws=[0, 0, 2, 1])


def perturb_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move every parameter and BatchNorm statistic off its init so each path of the model shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'conv_offset' in name:  # offsets of about a pixel: real bilinear sampling, some off the map
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if name.endswith('bias') else 0.2))
            elif name.endswith('weight') and p.ndim == 1:  # norms
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    perturb_running_stats_(model, gen)


def write_fixture(root: Path, out: Path) -> None:
    cls_module, det_module = official_modules(root)
    kwargs = _official_kwargs(FIXTURE_CFG)
    official = cls_module.LITv2(img_size=FIXTURE_SIZES[0], num_classes=FIXTURE_CFG['num_classes'], **kwargs).eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    state = _parity.fp16_state_(official)
    logits = {}
    for size in FIXTURE_SIZES:
        model = cls_module.LITv2(img_size=size, num_classes=FIXTURE_CFG['num_classes'], **kwargs).eval()
        model.load_state_dict(official.state_dict())
        with torch.no_grad():
            logits[size] = model(fixture_input(size, size))
    det = det_module.LITv2(**kwargs)
    missing, unexpected = det.load_state_dict(official.state_dict(), strict=False)
    assert all(k.startswith('norm') for k in missing), missing  # the per-level output norms (identity at init)
    det.eval()
    with torch.no_grad():
        det_out = det(fixture_input(*DET_SIZE))
    torch.save(dict(cfg=FIXTURE_CFG, state_dict=state, logits=logits, det_size=DET_SIZE,
                    det_features={i: det_out[i] for i in (2, 3)}), out)
    print(f'wrote {out} ({out.stat().st_size / 1024:.1f} KiB); det stage maps {[tuple(f.shape) for f in det_out]}')


def check_variant(root: Path, variant: str, sizes=(224, 256)) -> None:
    ours = _parity.ours(variant)
    cls_module, det_module = official_modules(root)
    kwargs = _official_kwargs(_parity.variant_args(variant))
    official = cls_module.LITv2(img_size=sizes[0], **kwargs).eval()
    perturb_(official, torch.Generator().manual_seed(SEED))
    _parity.load_official_(ours, official.state_dict())

    def official_at(size: tuple[int, int]) -> torch.nn.Module:  # the official classifier is built for one size
        ref = cls_module.LITv2(img_size=size[0], **kwargs).eval()
        ref.load_state_dict(official.state_dict())
        return ref

    _parity.compare(variant, official_at, ours, sizes)
    det = det_module.LITv2(**kwargs)
    det.load_state_dict(official.state_dict(), strict=False)  # + the per-level output norms, identity at init
    det.eval()
    for dtype in (torch.float32, torch.float64):  # float64: differences beyond rounding would remain
        det.to(dtype)
        ours.to(dtype)
        for size in ((208, 237), (224, 224)):  # stage-3 maps 13x15 (Hi-Fi padded) and 14x14
            x = fixture_input(*size).to(dtype)
            with torch.no_grad():
                ref = det(x)
                got = ours.forward_intermediates(x, intermediates_only=True)
            diffs = [(r - (F.layer_norm(g.permute(0, 2, 3, 1), g.shape[1:2]).permute(0, 3, 1, 2) if i else g)).abs()
                     .max() for i, (r, g) in enumerate(zip(ref, got))]
            print(f'{variant} {dtype} detection backbone @ {size} (maps {[tuple(r.shape[2:]) for r in ref]}): '
                  f'max diffs per level {[f"{d:.2e}" for d in diffs]}')


if __name__ == '__main__':
    _parity.main(_parity.parser(__doc__, dict(official='github.com/ziplab/LITv2'),
                                'compare a full-size variant (e.g. litv2_small) at 224 and 256'),
                 ['official'], write_fixture, check_variant)
