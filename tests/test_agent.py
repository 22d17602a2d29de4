"""Agent-Swin / Agent-PVT: frozen official-parity fixtures, exact parameter counts of every variant (meta device),
the official letter codes per block, forward / backward / any input size / downstream agent grids on reduced-depth
models, official checkpoint mapping and its errors, bad input."""
import pytest
import timm
import torch
from _skeletons import block_kinds, check_fixture, pvt_to_official, swin_to_official
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
from backbones import FAMILIES
from backbones._agent_inline import AgentAttention
from backbones._attn_kinds import parse_attn_code
from backbones._family import Family
from backbones._skeletons import SKELETONS
from backbones.checkpoint import fit

# the official code's counts (specs/official-params.csv)
PARAMS = dict(
    agent_swin_tiny=28_902_964, agent_swin_small=49_666_684, agent_swin_small_288=49_707_964,
    agent_swin_base=88_095_096, agent_swin_base_384=88_305_016, agent_pvt_tiny=11_570_352,
    agent_pvt_small=20_635_066, agent_pvt_medium=35_921_746, agent_pvt_medium_256=36_083_682,
    agent_pvt_large=48_738_180,
)
SHORT = dict(depths=(1, 1, 1, 1), drop_path_rate=0.)


def _meta(name: str, **kwargs):
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('fixture', ['agent_swin', 'agent_pvt'])
def test_official_parity_fixture(fixture):
    check_fixture(fixture)


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    size = FAMILIES['agent'].variants[name].args.get('img_size', 224)
    assert cfg['url'][0].startswith('https://cloud.tsinghua.edu.cn/f/') and cfg['input_size'] == (3, size, size)
    assert cfg['crop_pct'] == (1.0 if name in ('agent_swin_small_288', 'agent_swin_base_384') else 0.875)
    assert isinstance(model.get_submodule(cfg['first_conv']), torch.nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert [f['reduction'] for f in model.feature_info] == [4, 8, 16, 32]


def test_letter_codes_windows_and_bias_sizes():
    base = _meta('agent_swin_base')
    assert block_kinds(base) == ['AA', 'AA', 'AA' + 'W' * 16, 'WW']  # AAMB2
    assert [b.attn.shift_size for b in base.stages[2].blocks[2:4]] == [(0, 0), (3, 3)]  # odd blocks shifted
    assert [b.attn.query_size for b in base.stages[2].blocks[:2]] == [(14, 14)] * 2
    assert block_kinds(_meta('agent_swin_tiny')) == ['AA', 'AA', 'A' * 6, 'WW']
    # 288 / 384: A blocks sized to the whole stage map, B windows max(7, ws // 8)
    s288, b384 = _meta('agent_swin_small_288'), _meta('agent_swin_base_384')
    assert [s.blocks[0].attn.query_size[0] for s in s288.stages[:2]] == [72, 36]
    assert [s288.stages[2].blocks[1].attn.window_size, b384.stages[3].blocks[1].attn.window_size] == [(9, 9), (12, 12)]
    assert [s.blocks[0].attn.agent_num for s in b384.stages[:3]] == [9, 16, 49]
    pvt = _meta('agent_pvt_medium_256')
    assert block_kinds(pvt) == ['AAA', 'AAAA', 'A' * 18, 'AAA']
    assert [s.blocks[0].attn.query_size for s in pvt.stages] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert [tuple(s.pos_embed.shape) for s in pvt.stages] == [(1, 4096, 64), (1, 1024, 128), (1, 256, 320),
                                                               (1, 64, 512)]


@pytest.mark.parametrize('name', ['agent_swin_tiny', 'agent_pvt_tiny'])
def test_forward_backward_any_size(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **SHORT)
    x = torch.randn(2, 3, 64, 64)
    assert_grad_checkpointing_matches(model, x)
    model.eval()
    for size in ((97, 75), (224, 224)):  # odd / non-square, and the build size
        out = model(torch.randn(1, 3, *size))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
    feats = timm.create_model(name, **SHORT, features_only=True).eval()(torch.randn(1, 3, 97, 75))
    assert [f.shape[1] for f in feats] == [f['num_chs'] for f in model.feature_info]


@pytest.mark.parametrize('name,shapes', [('agent_swin_tiny', ((9, 9), (12, 12), (14, 14), (7, 7))),
                                         ('agent_pvt_tiny', ((12, 12), (16, 16), (28, 28), (28, 28)))])
def test_downstream_agent_shapes(name, shapes):
    """The official downstream configs' agent grids: the same weights, more agents; the build grids change nothing."""
    torch.manual_seed(0)
    model = timm.create_model(name, **SHORT).eval()
    x = torch.randn(1, 3, 160, 128)
    ref = model(x)
    grids = [getattr(s.blocks[0].attn, 'grid', None) for s in model.stages]
    same = timm.create_model(name, **SHORT, agent_shapes=grids).eval()
    same.load_state_dict(model.state_dict())
    torch.testing.assert_close(same(x), ref)
    down = timm.create_model(name, **SHORT, agent_shapes=shapes).eval()
    down.load_state_dict(model.state_dict())
    agents = [m.agent_shape for m in down.modules() if isinstance(m, AgentAttention)]
    assert agents == [s for s, k in zip(shapes, ('A', 'A', 'A', 'W' if 'swin' in name else 'A')) if k == 'A']
    out = down(x)
    assert torch.isfinite(out).all() and not torch.allclose(out, ref)


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_official_round_trip(wrap):
    def swin_official(sd):
        return swin_to_official(sd, {'layers.3.blocks.0': 7, 'layers.3.blocks.1': 7})
    assert_official_round_trip('agent_swin_tiny', SHORT, swin_official, fit, wrap)
    assert_official_round_trip('agent_pvt_tiny', SHORT, pvt_to_official, fit, wrap)


def test_checkpoint_errors():
    tiny = timm.create_model('agent_swin_tiny', **SHORT)
    official = swin_to_official(tiny.state_dict())
    other = timm.create_model('agent_swin_tiny', depths=(1, 1, 2, 1))
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[1, 1, 1, 1\] vs model \[1, 1, 2, 1\]'):
        fit({'model': official}, other)
    mixed = timm.create_model('agent_swin_tiny', **SHORT, attn_type='ABAB')
    with pytest.raises(ValueError, match=r"attention per block .* checkpoint \['A', 'A', 'A', 'W'\] vs model "
                                         r"\['A', 'W', 'A', 'W'\]"):
        fit(official, mixed)
    pvt = timm.create_model('agent_pvt_tiny', **SHORT)
    with pytest.raises(ValueError, match='not a PVT-skeleton checkpoint'):
        fit(official, pvt)
    with pytest.raises(ValueError, match='Linear: checkpoint does not match the model: 2 missing keys'):
        fit(official, torch.nn.Linear(2, 2))


def test_letter_codes_and_attn_kinds():
    """One parser for the four skeletons, the letters each family declares; attn_kinds words in every constructor."""
    letters = FAMILIES['agent'].letters
    assert parse_attn_code('AAMB2', (2, 2, 4, 1), letters['swin']) == [
        ['agent'] * 2, ['agent'] * 2, ['agent'] * 2 + ['window'] * 2, ['window']]
    assert parse_attn_code('AAB', (3,), letters['deit']) == [['agent', 'agent', 'softmax']]  # one per block
    assert parse_attn_code('A', (3,), letters['deit']) == [['agent'] * 3]  # one per stage
    kinds = [['agent'], ['window'], ['agent'], ['window']]
    model = _meta('agent_swin_tiny', **SHORT, attn_kinds=kinds)  # words override the table's code
    assert block_kinds(model) == ['A', 'W', 'A', 'W'] and model.attn_kinds == tuple(map(tuple, kinds))
    with pytest.raises(TypeError, match='not both'):
        timm.create_model('agent_swin_tiny', attn_type='ABAB', attn_kinds=kinds)
    with pytest.raises(ValueError, match=r"attn_kinds has \['agnet'\]; this model builds \('window', 'agent'"):
        _meta('agent_swin_tiny', **SHORT, attn_kinds=[['agnet']] * 4)
    with pytest.raises(ValueError, match='one kind per block'):
        _meta('agent_pvt_tiny', **SHORT, attn_kinds=['agent'] * 4)
    with pytest.raises(ValueError, match=r"letter 'A' names \['agnet'\]; the skeleton builds"):
        Family('x', __name__, SKELETONS, variants={}, cfg={}, letters=dict(pvt={'A': 'agnet', 'B': 'sra'}))
    with pytest.raises(ValueError, match="letters are per skeleton of the family, got 'vit'"):
        Family('x', __name__, SKELETONS, variants={}, cfg={}, letters=dict(vit={'A': 'agent'}))
    with pytest.raises(ValueError, match='M to a .leading, trailing. pair'):
        Family('x', __name__, SKELETONS, variants={}, cfg={}, letters=dict(swin={'A': 'agent', 'M': 'agent'}))


def test_bad_input():
    with pytest.raises(ValueError, match=r"attn_type 'AAXB' uses \['X'\]: not letters of this code \(letters \['A', "
                                         r"'B', 'M'\]\)"):
        timm.create_model('agent_swin_tiny', attn_type='AAXB')
    with pytest.raises(ValueError, match='a mixed stage .M. needs the count of its leading blocks'):
        timm.create_model('agent_swin_tiny', attn_type='AAMB')
    with pytest.raises(ValueError, match="uses \\['M'\\]"):  # the official PVT has no mixed stages
        timm.create_model('agent_pvt_tiny', attn_type='AAMB1')
    with pytest.raises(ValueError, match=r'attn_type must be one letter per stage \(4\) or one per block \(8\)'):
        timm.create_model('agent_pvt_tiny', attn_type='AAA')
    with pytest.raises(ValueError, match='square number'):
        timm.create_model('agent_pvt_tiny', agent_num=(9, 16, 49, 50))
    model = timm.create_model('agent_swin_tiny', **SHORT)
    with pytest.raises(ValueError, match='at least 29 px'):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match='in_chans=3'):
        timm.create_model('agent_pvt_tiny', **SHORT)(torch.randn(1, 1, 64, 64))


def test_fvcore_flops_swin_tiny_224():
    """fvcore FLOPs (agent attention through the dense op's handle) within 2% of the README's 4.5 G."""
    fvcore = pytest.importorskip('fvcore.nn')
    flops = fvcore.FlopCountAnalysis(timm.create_model('agent_swin_tiny').eval(), torch.randn(1, 3, 224, 224))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    assert flops.total() / 1e9 == pytest.approx(4.5, rel=0.02)  # measured 4.53
