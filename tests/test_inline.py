"""InLine-Swin / InLine-PVT: frozen official-parity fixtures, exact parameter counts of every variant (meta device),
the official letter codes per block, forward / backward / any input size on reduced-depth models, official
checkpoint mapping, the feature-map option, bad input."""
import pytest
import timm
import torch
from _skeletons import block_kinds, check_fixture, pvt_to_official, swin_to_official
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
from backbones import FAMILIES
from backbones._agent_inline import InLineAttention
from backbones.checkpoint import fit

# the official code's counts (specs/official-params.csv); the README rounds Swin-T to 30M and says PVT-L 50.2M
PARAMS = dict(
    inline_swin_tiny=29_223_544, inline_swin_small=49_793_296, inline_swin_base=88_350_120,
    inline_swin_base_384=88_465_320, inline_pvt_tiny=12_032_232, inline_pvt_small=21_556_136,
    inline_pvt_medium=37_618_856, inline_pvt_large=51_154_280,
)
SHORT = dict(depths=(1, 1, 1, 1), drop_path_rate=0.)


def _meta(name: str, **kwargs):
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('fixture', ['inline_swin', 'inline_pvt'])
def test_official_parity_fixture(fixture):
    check_fixture(fixture)


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    size = FAMILIES['inline'].variants[name].args.get('img_size', 224)
    assert cfg['input_size'] == (3, size, size) and cfg['paper_ids'] == 'arXiv:2412.06590'
    # InLine-Swin-B-384 has a config but no released weights
    released = bool(cfg['url']) and cfg['url'][0].startswith('https://cloud.tsinghua.edu.cn/f/')
    assert released == (name != 'inline_swin_base_384')
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()


def test_letter_codes():
    assert block_kinds(_meta('inline_swin_tiny')) == ['II', 'II', 'I' * 6, 'WW']  # IIIS
    assert block_kinds(_meta('inline_swin_small')) == ['II', 'II', 'W' * 18, 'WW']  # IISS
    b384 = _meta('inline_swin_base_384')
    assert block_kinds(b384) == ['II', 'II', 'II' + 'W' * 16, 'WW']  # IIMS2
    assert b384.stages[2].blocks[3].attn.window_size == (12, 12) and b384.stages[2].blocks[3].attn.shift_size == (6, 6)
    pvt = _meta('inline_pvt_tiny')
    assert block_kinds(pvt) == ['II'] * 4 and [s.blocks[0].attn.num_heads for s in pvt.stages] == [2, 4, 10, 16]


@pytest.mark.parametrize('name', ['inline_swin_tiny', 'inline_pvt_tiny'])
def test_forward_backward_any_size(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **SHORT)
    assert_grad_checkpointing_matches(model, torch.randn(2, 3, 64, 64))
    model.eval()
    for size in ((97, 75), (224, 224)):
        out = model(torch.randn(1, 3, *size))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
    out, inter = model.forward_intermediates(torch.randn(1, 3, 97, 75))
    assert [t.shape[1] for t in inter] == [f['num_chs'] for f in model.feature_info]


def test_kernel_func_option():
    model = timm.create_model('inline_swin_tiny', **SHORT, kernel_func='relu')
    kinds = {m.kernel_func for m in model.modules() if isinstance(m, InLineAttention)}
    assert kinds == {'relu'} and torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()
    with pytest.raises(ValueError, match='kernel_func must be one of'):
        timm.create_model('inline_pvt_tiny', kernel_func='softmax')


@pytest.mark.parametrize('wrap', ['plain', 'model'])
def test_official_round_trip(wrap):
    def swin_official(sd):
        return swin_to_official(sd, {'layers.3.blocks.0': 7})
    assert_official_round_trip('inline_swin_tiny', SHORT, swin_official, fit, wrap)
    assert_official_round_trip('inline_pvt_tiny', SHORT, pvt_to_official, fit, wrap)


def test_checkpoint_errors_and_bad_input():
    official = pvt_to_official(timm.create_model('inline_pvt_tiny', **SHORT).state_dict())
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[1, 1, 1, 1\] vs model \[2, 2, 2, 2\]'):
        fit(official, timm.create_model('inline_pvt_tiny'))
    with pytest.raises(ValueError, match='not a Swin-skeleton checkpoint'):
        fit(official, timm.create_model('inline_swin_tiny', **SHORT))
    with pytest.raises(ValueError, match=r"uses \['A', 'B'\]: not letters of this code \(letters \['I', 'M', 'S'\]\)"):
        timm.create_model('inline_swin_tiny', attn_type='AAAB')
    with pytest.raises(ValueError, match='at least 32 px'):
        timm.create_model('inline_pvt_tiny', **SHORT)(torch.randn(1, 3, 31, 64))


def test_fvcore_flops_pvt_tiny_224():
    """fvcore FLOPs within 2% of the README's 2.0 G."""
    fvcore = pytest.importorskip('fvcore.nn')
    flops = fvcore.FlopCountAnalysis(timm.create_model('inline_pvt_tiny').eval(), torch.randn(1, 3, 224, 224))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    assert flops.total() / 1e9 == pytest.approx(2.0, rel=0.02)  # measured 1.99
