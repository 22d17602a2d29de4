"""downstream.convert: official mmdet 2.x / mmseg 0.x checkpoints onto the zoo configs, key for key.

The synthetic official checkpoints are built in the official layout: the backbone from the recorded official key
layouts (NAT/DiNAT detection backbones, the official classification fixtures of the other families, minus what the
official downstream backbones delete) plus each family's official level-norm names, and the neck and heads from the
mmdet 2 / mmseg 0 module names written out below (not taken from our model). Models are built on the meta device.
"""
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
pytest.importorskip('mmcv.ops')

import timm  # noqa: E402

from downstream import convert  # noqa: E402

DATA = Path(__file__).parent / 'data'
CONFIGS = Path(__file__).parents[1] / 'configs'

pytestmark = pytest.mark.usefixtures('one_thread')


def _conv(prefix: str, out_ch: int, in_ch: int, k: int, bias: bool = True, bn: bool = False) -> dict:
    shapes = {f'{prefix}.conv.weight' if bias or bn else f'{prefix}.weight': (out_ch, in_ch, k, k)}
    if bias and not bn:
        shapes[f'{prefix}.conv.bias'] = (out_ch,)
    if bn:
        shapes.update({f'{prefix}.bn.{n}': (out_ch,) for n in ('weight', 'bias', 'running_mean', 'running_var')})
        shapes[f'{prefix}.bn.num_batches_tracked'] = ()
    return shapes


def mmdet2_mask_rcnn(channels: list[int], num_classes: int = 80) -> dict:
    """Mask R-CNN + FPN key shapes of mmdet 2.x (necks/fpn.py, rpn_head.py, convfc_bbox_head.py, fcn_mask_head.py)."""
    s = {}
    for i, ch in enumerate(channels):
        s.update(_conv(f'neck.lateral_convs.{i}', 256, ch, 1))
        s.update(_conv(f'neck.fpn_convs.{i}', 256, 256, 3))
    s.update({'rpn_head.rpn_conv.weight': (256, 256, 3, 3), 'rpn_head.rpn_conv.bias': (256,),
              'rpn_head.rpn_cls.weight': (3, 256, 1, 1), 'rpn_head.rpn_cls.bias': (3,),
              'rpn_head.rpn_reg.weight': (12, 256, 1, 1), 'rpn_head.rpn_reg.bias': (12,)})
    bbox = 'roi_head.bbox_head'
    s.update({f'{bbox}.fc_cls.weight': (num_classes + 1, 1024), f'{bbox}.fc_cls.bias': (num_classes + 1,),
              f'{bbox}.fc_reg.weight': (4 * num_classes, 1024), f'{bbox}.fc_reg.bias': (4 * num_classes,),
              f'{bbox}.shared_fcs.0.weight': (1024, 256 * 7 * 7), f'{bbox}.shared_fcs.0.bias': (1024,),
              f'{bbox}.shared_fcs.1.weight': (1024, 1024), f'{bbox}.shared_fcs.1.bias': (1024,)})
    for i in range(4):
        s.update(_conv(f'roi_head.mask_head.convs.{i}', 256, 256, 3))
    s.update({'roi_head.mask_head.upsample.weight': (256, 256, 2, 2), 'roi_head.mask_head.upsample.bias': (256,),
              'roi_head.mask_head.conv_logits.weight': (num_classes, 256, 1, 1),
              'roi_head.mask_head.conv_logits.bias': (num_classes,)})
    return s


def mmdet2_cascade_mask_rcnn(channels: list[int], num_classes: int = 80) -> dict:
    """Cascade Mask R-CNN + FPN of the official Swin-style 3x configs (mmdet 2.x): three ConvFCBBoxHeads with four
    SyncBN shared convs and one fc, class-specific regression, and three FCN mask heads."""
    s = {k: v for k, v in mmdet2_mask_rcnn(channels, num_classes).items() if not k.startswith('roi_head.')}
    for i in range(3):
        bbox = f'roi_head.bbox_head.{i}'
        for j in range(4):
            s.update(_conv(f'{bbox}.shared_convs.{j}', 256, 256, 3, bn=True))
        s.update({f'{bbox}.shared_fcs.0.weight': (1024, 256 * 7 * 7), f'{bbox}.shared_fcs.0.bias': (1024,),
                  f'{bbox}.fc_cls.weight': (num_classes + 1, 1024), f'{bbox}.fc_cls.bias': (num_classes + 1,),
                  f'{bbox}.fc_reg.weight': (4 * num_classes, 1024), f'{bbox}.fc_reg.bias': (4 * num_classes,)})
        mask = f'roi_head.mask_head.{i}'
        for j in range(4):
            s.update(_conv(f'{mask}.convs.{j}', 256, 256, 3))
        s.update({f'{mask}.upsample.weight': (256, 256, 2, 2), f'{mask}.upsample.bias': (256,),
                  f'{mask}.conv_logits.weight': (num_classes, 256, 1, 1), f'{mask}.conv_logits.bias': (num_classes,)})
    return s


def mmseg0_upernet(channels: list[int], width: int = 512, num_classes: int = 150) -> dict:
    """UPerNet + auxiliary FCN head key shapes of mmseg 0.x (decode_heads/uper_head.py, fcn_head.py)."""
    s = {}
    for i in range(4):  # pool scales (1, 2, 3, 6)
        s.update(_conv(f'decode_head.psp_modules.{i}.1', width, channels[-1], 1, bn=True))
    s.update(_conv('decode_head.bottleneck', width, channels[-1] + 4 * width, 3, bn=True))
    for i, ch in enumerate(channels[:-1]):
        s.update(_conv(f'decode_head.lateral_convs.{i}', width, ch, 1, bn=True))
        s.update(_conv(f'decode_head.fpn_convs.{i}', width, width, 3, bn=True))
    s.update(_conv('decode_head.fpn_bottleneck', width, 4 * width, 3, bn=True))
    s.update({'decode_head.conv_seg.weight': (num_classes, width, 1, 1), 'decode_head.conv_seg.bias': (num_classes,)})
    s.update(_conv('auxiliary_head.convs.0', 256, channels[2], 3, bn=True))
    s.update({'auxiliary_head.conv_seg.weight': (num_classes, 256, 1, 1),
              'auxiliary_head.conv_seg.bias': (num_classes,)})
    return s


def _tensors(shapes: dict, prefix: str = '') -> dict:
    return {prefix + k: torch.zeros((), dtype=torch.long) if s == () else torch.randn(s) for k, s in shapes.items()}


def _fixture_backbone(name: str, key: str | None, level_norm: str | None, levels=range(4),
                      dropped=('head.', 'norm.')) -> tuple[dict, dict]:
    """(model kwargs, official downstream backbone state) from an official classification fixture: the ``dropped``
    classification-only modules deleted (as the official downstream backbones do), ``level_norm.format(i)`` norms
    added."""
    fixture = torch.load(DATA / f'{name}_official.pt', weights_only=True)
    fixture = fixture[key] if key else fixture
    cfg = {k: v for k, v in fixture['cfg'].items() if k != 'num_classes'}
    state = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()
             if not k.startswith(dropped)}
    dims = cfg.get('embed_dims') or [cfg['embed_dim'] * 2 ** i for i in range(4)]
    for i in levels if level_norm else ():
        state.update({f'{level_norm.format(i)}.{n}': torch.randn(dims[i]) for n in ('weight', 'bias')})
    return cfg, state


def _check(config: str, model_kwargs: dict, backbone: dict, heads, renamed: int = 0, **cfg_options):
    options = {'model.backbone.model_kwargs': model_kwargs, **cfg_options}
    model = convert.build_model(str(CONFIGS / config), options)
    official = {f'backbone.{k}': v for k, v in backbone.items()}
    official.update(_tensors(heads(model.backbone.channels)))
    state, report = convert.convert_state_dict(model, official)
    assert report.complete, str(report)
    assert len(report.renamed) == renamed
    expected = model.state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in state)
    for key, value in official.items():  # the neck, heads and level norms land where the names say
        ours = report.renamed.get(key, key)
        if ours in expected:
            assert state[ours] is value, key
    return model, state, report


@pytest.mark.parametrize('config,heads', [('mask_rcnn_nat_mini_3x_coco.py', mmdet2_mask_rcnn),
                                          ('cascade_mask_rcnn_nat_mini_3x_coco.py', mmdet2_cascade_mask_rcnn)])
def test_nat_official_layouts(config, heads):
    spec = json.loads((DATA / 'downstream_official_backbone_keys.json').read_text())['nat_mini']['keys']
    _check(f'mmdet/nat/{config}', {}, _tensors(spec), heads)


@pytest.mark.parametrize('family,key,norm,config', [
    ('biformer', 'biformer', 'extra_norms.{}', 'mmdet/biformer/mask_rcnn_biformer_small_fpn_1x_coco.py'),
    ('ravlt', None, 'extra_norms.{}', 'mmdet/ravlt/mask_rcnn_ravlt_tiny_fpn_1x_coco.py'),
    ('transnext', 'micro', None, 'mmdet/transnext/mask_rcnn_transnext_tiny_fpn_1x_coco.py'),
])
def test_mask_rcnn_official_layouts(family, key, norm, config):
    # The official downstream backbones have no classifier or final norm; RALA's (backbones/RALA.py) no pre-logits
    # projection either (only RAVLT has a top-level proj).
    cfg, backbone = _fixture_backbone(family, key, norm, dropped=('head.', 'norm.', 'proj.'))
    name = {'biformer': 'biformer_tiny', 'ravlt': 'ravlt_tiny', 'transnext': 'transnext_micro'}[family]
    dims = list(cfg['embed_dims'])
    _check(config, cfg, backbone, mmdet2_mask_rcnn, renamed=8 if norm else 0,
           **{'model.backbone.model_name': name, 'model.neck.in_channels': dims})


def test_agent_swin_mask_rcnn_official_layout():
    """Agent-Swin's mmdet 2.25 backbone: Swin ``layers`` with the persistent ``relative_position_index`` buffers of
    its window blocks and ``norm{i}`` level norms (downstream/detection/mmdet/models/backbones/agent_swin.py)."""
    fixture = torch.load(DATA / 'agent_swin_official.pt', weights_only=True)
    args = {k: v for k, v in fixture['args'].items() if k != 'num_classes'}
    backbone = {k: v.float() if v.is_floating_point() else v for k, v in fixture['state_dict'].items()
                if not k.startswith(('head.', 'norm.'))}
    for key in [k for k in backbone if k.endswith('.relative_position_bias_table')]:
        w = (int(backbone[key].shape[0] ** 0.5) + 1) // 2
        backbone[key.replace('bias_table', 'index')] = torch.zeros(w * w, w * w, dtype=torch.long)
    dims = [args['embed_dim'] * 2 ** i for i in range(4)]
    for i, ch in enumerate(dims):
        backbone.update({f'norm{i}.{n}': torch.randn(ch) for n in ('weight', 'bias')})
    _check('mmdet/agent/mask_rcnn_agent_swin_tiny_fpn_1x_coco.py', args, backbone, mmdet2_mask_rcnn,
           **{'model.neck.in_channels': dims})


def test_litv2_detection_and_segmentation_official_layouts():
    """The detection backbone has no norm0, the segmentation one (mmseg 0.13 backbones/litv2.py) normalises all
    four levels."""
    cfg, det = _fixture_backbone('litv2', None, 'norm{}', levels=(1, 2, 3))
    dims = [cfg['embed_dim'] * 2 ** i for i in range(4)]
    _check('mmdet/litv2/mask_rcnn_litv2_s_fpn_1x_coco.py', cfg, det, mmdet2_mask_rcnn,
           **{'model.neck.in_channels': dims})
    _, seg = _fixture_backbone('litv2', None, 'norm{}')
    _check('mmseg/litv2/fpn_litv2_s_512x512_80k_ade20k.py', cfg, seg, _semantic_fpn,
           **{'model.neck.in_channels': dims})


def _semantic_fpn(channels: list[int]) -> dict:
    """Semantic FPN of mmseg 0.x (FPN neck + decode_heads/fpn_head.py: scale_heads of 3x3 ConvModules)."""
    s = {}
    for i, ch in enumerate(channels):
        s.update(_conv(f'neck.lateral_convs.{i}', 256, ch, 1))
        s.update(_conv(f'neck.fpn_convs.{i}', 256, 256, 3))
    for i in range(4):
        for j in range(max(1, i)):
            s.update(_conv(f'decode_head.scale_heads.{i}.{2 * j}', 128, 256 if j == 0 else 128, 3, bn=True))
    s.update({'decode_head.conv_seg.weight': (150, 128, 1, 1), 'decode_head.conv_seg.bias': (150,)})
    return s


def test_nextvit_segmentation_extra_norms_and_unused_level3():
    """Next-ViT's segmentation backbone: extra_norm_list.{0..2} are our norm{i}; extra_norm_list.3 is built but
    never used (level 3 takes the final norm), so it is dropped with that reason. The rest of the backbone is in
    timm's layout here (timm's own checkpoint_filter_fn maps the original names)."""
    depths = (1, 1, 5, 1)
    model = timm.create_model('nextvit_small', depths=depths)
    backbone = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in model.state_dict().items()
                if not k.startswith('head.')}
    for i, ch in enumerate((96, 256, 512, 1024)):
        backbone.update({f'extra_norm_list.{i}.{n}': torch.randn(ch) for n in ('weight', 'bias', 'running_mean',
                                                                               'running_var')})
        backbone[f'extra_norm_list.{i}.num_batches_tracked'] = torch.zeros((), dtype=torch.long)
    _, state, report = _check('mmseg/nextvit/upernet_nextvit_small_512x512_160k_ade20k.py', dict(depths=depths),
                              backbone, mmseg0_upernet, renamed=15)
    assert sorted(report.dropped) == sorted(f'backbone.extra_norm_list.3.{n}' for n in (
        'weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'))
    assert state['backbone.norm2.running_var'] is backbone['extra_norm_list.2.running_var']


def test_unmapped_keys_are_reported_and_the_cli_refuses(tmp_path, capsys):
    spec = json.loads((DATA / 'downstream_official_backbone_keys.json').read_text())['nat_mini']['keys']
    official = _tensors(spec, 'backbone.')
    heads = mmdet2_mask_rcnn([64, 128, 256, 512])
    heads['roi_head.bbox_head.fc_cls.weight'] = (11, 1024)  # a 10-class detector
    official.update(_tensors(heads))
    official['roi_head.bbox_head.fc_extra.weight'] = torch.randn(4)
    del official['rpn_head.rpn_cls.bias']
    torch.save({'state_dict': official, 'meta': {'CLASSES': ('a',) * 10}}, tmp_path / 'official.pth')
    config = str(CONFIGS / 'mmdet/nat/mask_rcnn_nat_mini_3x_coco.py')
    assert convert.main([config, str(tmp_path / 'official.pth'), str(tmp_path / 'out.pth')]) == 1
    out = capsys.readouterr().out
    assert 'UNMAPPED official key roi_head.bbox_head.fc_extra.weight' in out
    assert 'UNMAPPED model key rpn_head.rpn_cls.bias' in out
    assert 'UNMAPPED roi_head.bbox_head.fc_cls.weight: official shape (11, 1024), model shape (81, 1024)' in out
    assert not (tmp_path / 'out.pth').exists()
    assert convert.main([config, str(tmp_path / 'official.pth'), str(tmp_path / 'out.pth'), '--allow-unmapped']) == 0
    written = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert written['meta']['CLASSES'] == ('a',) * 10
    assert 'backbone.model.stages_0.blocks.0.attn.qkv.weight' in written['state_dict']
    with pytest.raises(ValueError, match='not an mmdet/mmseg checkpoint'):
        convert.official_state_dict({'state_dict': {'a': 1}})
