"""Official detection / segmentation checkpoints (mmdet 2.x, mmseg 0.x) -> a zoo config's model, with a report.

``python -m downstream.convert CONFIG OFFICIAL.pth OUT.pth`` writes a checkpoint that ``load_from``,
``downstream.test`` and OpenMMLab's own ``tools/test.py`` load strictly; it prints what was mapped and exits 1 when
anything of the official checkpoint or of the model is left unmapped (``--allow-unmapped`` writes it anyway).

What the official checkpoints hold, read from each family's official downstream code:

* the backbone as ``backbone.<the classification model's names>`` (minus its classifier and, mostly, its final
  norm), which :meth:`AttnZooBackbone.convert_classification_state_dict` maps through the family's
  checkpoint layout (``backbones.checkpoint.fit``: NAT/DiNAT's ``levels``, Agent's Swin ``layers`` / PVT
  ``block{i}``, TransNeXt's ``block{i}`` / ``norm{i}``, Next-ViT's ``features``, ...);
* per-level output norms: ``norm{i}`` in NAT/DiNAT/DiNAT_s, LITv2 and Agent-Swin (already our names), but
  ``extra_norms.{i}`` in BiFormer (``object_detection/models_mm/biformer_mm.py``) and RAVLT (RALA's
  ``backbones/RALA.py``) and ``extra_norm_list.{i}`` in Next-ViT's segmentation backbone, renamed here
  (:data:`LEVEL_NORM_RENAMES`). Next-ViT's ``extra_norm_list.3`` exists but its forward normalises level 3 with the
  classification model's ``norm`` instead; it is dropped and listed as such;
* neck and heads: mmdet 3 / mmseg 1 kept the state-dict names of mmdet 2 / mmseg 0 for the heads the zoo configs
  use (FPN ``lateral_convs`` / ``fpn_convs``, RPN ``rpn_conv`` / ``rpn_cls`` / ``rpn_reg``, ``bbox_head``
  ``shared_fcs`` / ``fc_cls`` / ``fc_reg``, ``mask_head`` ``convs`` / ``upsample`` / ``conv_logits``, Cascade's
  ``bbox_head.{stage}``, RetinaNet ``retina_cls`` / ``retina_reg``, UPerHead / FPNHead / FCNHead module names and
  ``conv_seg``), so they pass through by name; each must exist in the model with the same shape, and a model key
  the checkpoint lacks is reported, as is any official key left over (a renamed head would show up there).
"""
import argparse
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from backbones.checkpoint import read_checkpoint

from .backbone import AttnZooBackbone
from .checkpoint import check_checkpoint_path, mmengine_safe_globals

# (model-name pattern, official backbone key pattern, our key): the official per-level norms under other names.
LEVEL_NORM_RENAMES: tuple[tuple[str, str, str], ...] = (
    (r'^biformer_', r'^extra_norms\.(\d+)\.', r'norm\1.'),
    (r'^ravlt_', r'^extra_norms\.(\d+)\.', r'norm\1.'),
    (r'^nextvit_', r'^extra_norm_list\.(\d+)\.', r'norm\1.'),
)
# (model-name pattern, official backbone key pattern, why): tensors the official model holds but never uses.
UNUSED_OFFICIAL: tuple[tuple[str, str, str], ...] = (
    (r'^nextvit_', r'^extra_norm_list\.3\.',
     'Next-ViT builds extra_norm_list.3 but normalises level 3 with its final norm'),
)


@dataclass
class ConversionReport:
    """What happened to each key: ``renamed`` official -> ours, ``dropped`` unused official keys (with the reason),
    ``unexpected`` official keys with no place in the model, ``missing`` model keys the checkpoint did not fill,
    ``shape_mismatch`` name -> (official shape, model shape)."""
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    num_backbone: int = 0
    num_other: int = 0

    @property
    def complete(self) -> bool:
        return not (self.unexpected or self.missing or self.shape_mismatch)

    def __str__(self) -> str:
        lines = [f'backbone: {self.num_backbone} tensors through the family layout; neck and heads: '
                 f'{self.num_other} tensors by name']
        lines += [f'renamed {k} -> {v}' for k, v in self.renamed.items()]
        lines += [f'dropped {k}: {why}' for k, why in self.dropped.items()]
        lines += [f'UNMAPPED official key {k}: not in the model' for k in self.unexpected]
        lines += [f'UNMAPPED model key {k}: not in the checkpoint' for k in self.missing]
        lines += [f'UNMAPPED {k}: official shape {a}, model shape {b}' for k, (a, b) in self.shape_mismatch.items()]
        lines.append('complete: every tensor mapped' if self.complete else 'INCOMPLETE: see UNMAPPED above')
        return '\n'.join(lines)


def official_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of an mmdet/mmseg checkpoint (``state_dict`` wrapper or bare, ``module.`` prefix stripped)."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError('not an mmdet/mmseg checkpoint: expected a dict of tensors, or one under "state_dict"')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def convert_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an official detector's / segmentor's weights onto ``model`` (built from a zoo config; the meta device
    will do: only names and shapes are read). Returns our state dict (only mapped keys) and the report; a backbone
    that does not match the family's layout raises the family filter's error."""
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, AttnZooBackbone):
        raise ValueError(f'the model\'s backbone must be an AttnZooBackbone, got {type(backbone).__name__}')
    report = ConversionReport()
    name = backbone.model_name
    renames = [(re.compile(k), v) for p, k, v in LEVEL_NORM_RENAMES if re.match(p, name)]
    unused = [(re.compile(k), why) for p, k, why in UNUSED_OFFICIAL if re.match(p, name)]
    own_backbone = backbone.state_dict()
    norms, foreign = {}, {}
    for key, value in state_dict.items():
        if not key.startswith('backbone.'):
            continue
        sub = key[len('backbone.'):]
        why = next((w for pattern, w in unused if pattern.match(sub)), None)
        if why:
            report.dropped[key] = why
            continue
        for pattern, ours in renames:
            if pattern.match(sub):
                new = pattern.sub(ours, sub, count=1)
                report.renamed[key] = f'backbone.{new}'
                sub = new
                break
        (norms if sub in own_backbone else foreign)[sub] = value
    out = {f'backbone.{k}': v for k, v in norms.items()}
    if foreign:
        converted = backbone.convert_classification_state_dict(foreign, source='the official backbone weights')
        out.update({f'backbone.model.{k}': v for k, v in converted.items()})
    report.num_backbone = len(out)
    expected = model.state_dict()
    for key, value in state_dict.items():
        if key.startswith('backbone.'):
            continue
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            report.shape_mismatch[key] = (tuple(value.shape), tuple(expected[key].shape))
        else:
            out[key] = value
            report.num_other += 1
    for key, value in out.items():
        if key.startswith('backbone.') and tuple(value.shape) != tuple(expected[key].shape):
            report.shape_mismatch[key] = (tuple(value.shape), tuple(expected[key].shape))
    report.missing = [k for k in expected if k not in out]
    return out, report


def build_model(config: str, cfg_options: dict | None = None) -> nn.Module:
    """The config's detector / segmentor on the meta device (no pretrained loading), for names and shapes."""
    from mmengine.registry import MODELS, init_default_scope

    from ._runner import read_config

    cfg = read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def main(argv: list[str] | None = None) -> int:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the zoo mmdet/mmseg config the checkpoint is for')
    parser.add_argument('checkpoint', help='official mmdet 2.x / mmseg 0.x checkpoint file')
    parser.add_argument('out', help='converted checkpoint to write')
    parser.add_argument('--allow-unmapped', action='store_true', help='write the checkpoint even if keys are left')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, help='override config entries')
    args = parser.parse_args(argv)
    check_checkpoint_path(args.checkpoint)
    with mmengine_safe_globals():  # the zoo's one reader, with what mmengine checkpoints hold allow-listed too
        checkpoint = read_checkpoint(args.checkpoint)
    model = build_model(args.config, args.cfg_options)
    state_dict, report = convert_state_dict(model, official_state_dict(checkpoint))
    print(report)
    if not report.complete and not args.allow_unmapped:
        print(f'not written: {args.out} (pass --allow-unmapped to write the mapped part)', file=sys.stderr)
        return 1
    meta = dict(checkpoint.get('meta') or {}) if isinstance(checkpoint, dict) else {}
    meta['converted_from'] = args.checkpoint
    torch.save({'meta': meta, 'state_dict': state_dict}, args.out)
    print(f'written: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
