"""Agent-/InLine-DeiT and -CSWin: the frozen official-parity fixtures, parameter counts of every variant, the
attentions at another size against direct references of the official (downstream) rules, any input size, grads,
official checkpoint layouts (EMA first for CSWin), bad input."""
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from _skeletons import check_fixture
from _zoo import assert_grad_checkpointing_matches, assert_official_round_trip

import backbones  # noqa: F401  (registers the models)
from backbones import family_of
from backbones._cswin import CSWin, LePEStripeAttention
from backbones._deit import AgentDeiTAttention, DeiT
from backbones.checkpoint import fit

PARAMS = dict(  # the official code's counts (specs/official-params.csv)
    agent_deit_tiny=6_015_640, agent_deit_small=22_647_112, agent_deit_small_448=23_070_472,
    agent_deit_base=87_204_904, agent_cswin_tiny=20_458_672, agent_cswin_small=32_814_100,
    agent_cswin_base=73_249_696, agent_cswin_base_384=73_328_416,
    inline_deit_tiny=6_477_736, inline_deit_small=16_734_760, inline_deit_base=23_797_096,
    inline_cswin_tiny=20_604_520, inline_cswin_small=33_032_872, inline_cswin_base=73_413_640,
    inline_cswin_base_384=73_413_640,
)
SHORT_DEIT = dict(depth=2, drop_path_rate=0.)
SHORT_CSWIN = dict(embed_dim=16, depths=(1, 2, 2, 1), drop_path_rate=0.)

pytestmark = pytest.mark.usefixtures('one_thread')


def _meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize('name', ['agent_deit', 'inline_deit', 'agent_cswin', 'inline_cswin'])
def test_official_parity_fixture(name):
    """Written by tools/agent_deit_cswin_official_parity.py from the official code (perturbed weights, fp32)."""
    check_fixture(name)


@pytest.mark.parametrize('name', list(PARAMS))
def test_variant_params_and_cfg(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    size = {'agent_deit_small_448': 448, 'inline_deit_small': 288, 'inline_deit_base': 448}.get(
        name, 384 if name.endswith('_384') else 224)
    assert cfg['input_size'] == (3, size, size) and cfg['crop_pct'] == 0.875
    released = bool(cfg['url']) and cfg['url'][0].startswith('https://cloud.tsinghua.edu.cn/f/')
    assert released or name == 'inline_cswin_base_384'
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    assert family_of(name).ema_first(name) == ('cswin' in name)


def test_registry_and_letter_codes():
    assert sorted(timm.list_models('agent_deit*') + timm.list_models('agent_cswin*') + timm.list_models('inline_deit*')
                  + timm.list_models('inline_cswin*')) == sorted(PARAMS)
    assert _meta('agent_deit_base').attn_kinds == (('agent',) * 4 + ('softmax',) * 8,)  # agent_layer=4
    assert _meta('inline_cswin_base').attn_kinds[2] == ('stripe',) * 29  # IISS
    with pytest.raises(ValueError, match='one letter per stage'):
        _meta('agent_cswin_tiny', attn_type='AAB')
    tiny = _meta('agent_cswin_tiny')
    # AABB: agents over the whole map in stages 1-2; stripes (two half branches) in stage 3; one branch in stage 4
    assert [len(s.blocks[0].attns) for s in tiny.stages] == [1, 1, 2, 1]
    assert type(tiny.stages[0].blocks[0].attns[0]).__name__ == 'AgentStripeAttention'
    assert tiny.stages[0].blocks[0].attns[0].ah_bias.shape == (1, 2, 9, 56, 1)
    assert isinstance(tiny.stages[2].blocks[0].attns[1], LePEStripeAttention)
    with pytest.raises(ValueError, match=r"has \['lepe'\]; this model builds \('stripe', 'agent', 'inline'\)"):
        CSWin(attn_kinds=[['lepe']] * 4, depths=(1, 1, 1, 1), embed_dim=8, num_heads=(2, 2, 2, 2), device='meta')
    with pytest.raises(ValueError, match='one kind per block'):
        DeiT(attn_kinds=['agent'] * 2, depth=2, device='meta')


def _agent_deit_reference(attn: AgentDeiTAttention, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The official Agent-DeiT attention written out with explicit softmax matrices, its biases sized to ``grid``
    by the official downstream rule (bilinear resize of an/na and of the ah+aw / ha+wa sums)."""
    b, n, c = x.shape
    heads, d, (h, w), a = attn.num_heads, c // attn.num_heads, grid, attn.agent_num
    q, k, v = attn.qkv(x).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    agents = F.adaptive_avg_pool2d(q[:, :, 1:].transpose(2, 3).reshape(b * heads, d, h, w), attn.grid)
    agents = agents.reshape(b, heads, d, a).transpose(2, 3)

    def up(t):
        return F.interpolate(t, size=(h, w), mode='bilinear').reshape(heads, a, h * w)
    bias1 = torch.cat([attn.ac_bias[0], up(attn.an_bias) + up((attn.ah_bias + attn.aw_bias)[0])], dim=-1)
    bias2 = up(attn.na_bias).transpose(1, 2) + up((attn.ha_bias + attn.wa_bias)[0].permute(0, 3, 1, 2)).transpose(1, 2)
    bias2 = torch.cat([attn.ca_bias[0], bias2], dim=-2)
    agent_v = torch.softmax(agents * attn.scale @ k.transpose(-2, -1) + bias1, -1) @ v
    out = (torch.softmax(q * attn.scale @ agents.transpose(-2, -1) + bias2, -1) @ agent_v).transpose(1, 2)
    out = out.reshape(b, n, c)
    dwc = attn.dwc(v[:, :, 1:].transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
    return attn.proj(torch.cat([out[:, :1], out[:, 1:] + dwc], dim=1))


def test_agent_deit_attention_at_another_grid_follows_the_downstream_rule():
    torch.manual_seed(0)
    attn = AgentDeiTAttention(32, 2, (4, 4), agent_num=9).double()
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if name.endswith('_bias') and p.dim() > 1:
                p.normal_()
    params = list(attn.parameters())
    for grid in ((4, 4), (5, 7), (2, 3)):
        x = torch.randn(2, 1 + grid[0] * grid[1], 32, dtype=torch.float64, requires_grad=True)
        out, ref = attn(x, grid), _agent_deit_reference(attn, x, grid)
        torch.testing.assert_close(out, ref)
        for g, r in zip(torch.autograd.grad(out.square().sum(), [x, *params]),
                        torch.autograd.grad(ref.square().sum(), [x, *params])):
            torch.testing.assert_close(g, r)


def _lepe_reference(attn: LePEStripeAttention, q, k, v, masked: bool = False):
    """CSWin's segmentation-backbone ``LePEAttention`` on NHWC q/k/v: centred zero padding of q, k, v to a multiple
    of the stripe, explicit softmax per stripe, LePE per stripe, crop; ``masked``: end padding, padded keys masked."""
    b, h, w, c = q.shape
    heads, d = attn.num_heads, c // attn.num_heads
    wh, ww = {-1: (h, w), 0: (h, attn.split_size), 1: (attn.split_size, w)}[attn.idx]
    ph, pw = (wh - h % wh) % wh, (ww - w % ww) % ww
    top, left = (0, 0) if masked else (ph // 2, pw // 2)
    q, k, v, real = (F.pad(t, (0, 0, left, pw - left, top, ph - top))
                     for t in (q, k, v, torch.ones(b, h, w, 1, dtype=q.dtype)))
    hp, wp = h + ph, w + pw

    def windows(t):  # [b * nw, C, wh, ww]
        n = t.shape[-1]
        return t.reshape(b, hp // wh, wh, wp // ww, ww, n).permute(0, 1, 3, 5, 2, 4).reshape(-1, n, wh, ww)
    qw, kw, vw = (windows(t).reshape(-1, heads, d, wh * ww).transpose(2, 3) for t in (q, k, v))
    logits = qw * attn.scale @ kw.transpose(-2, -1)
    if masked:
        logits = logits.masked_fill(windows(real).reshape(-1, 1, 1, wh * ww) == 0, float('-inf'))
    lepe = attn.get_v(windows(v)).reshape(-1, heads, d, wh * ww).transpose(2, 3)
    out = torch.softmax(logits, -1) @ vw + lepe
    out = out.transpose(2, 3).reshape(b, hp // wh, wp // ww, c, wh, ww).permute(0, 1, 4, 2, 5, 3).reshape(b, hp, wp, c)
    return out[:, top:top + h, left:left + w]


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('idx', [-1, 0, 1])
@pytest.mark.parametrize('size', [(14, 14), (9, 12), (3, 5)])
def test_lepe_stripes_at_any_size_follow_the_segmentation_rule(idx, size, masked):
    """The official centred, unmasked padding by default; mask_padding=True: end padding, padded keys masked."""
    torch.manual_seed(0)
    attn = LePEStripeAttention(16, 2, idx, 7, 14, mask_padding=masked).double()
    q, k, v = (torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, ref = attn(q, k, v), _lepe_reference(attn, q, k, v, masked)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v, attn.get_v.weight))
    for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v, attn.get_v.weight))):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('idx', [0, 1])
def test_lepe_stripes_export_with_dynamic_sizes(idx, masked):
    """One torch.export program (dynamic batch / height / width) follows the padding rule at sizes with one stripe,
    several, and a multiple of the stripe (the stripe count and the padding are never specialised)."""
    torch.manual_seed(0)
    attn = LePEStripeAttention(16, 2, idx, 7, 14, mask_padding=masked).eval()

    class Branch(torch.nn.Module):  # q, k, v of one map, as the block passes them (chunks of one qkv)
        def forward(self, qkv):
            return attn(*qkv.chunk(3, dim=-1))
    auto = torch.export.Dim.AUTO
    program = torch.export.export(Branch(), (torch.randn(2, 10, 16, 48),),
                                  dynamic_shapes=({0: auto, 1: auto, 2: auto},)).module()
    for size in [(1, 5, 6), (3, 7, 14), (2, 16, 23)]:
        qkv = torch.randn(*size, 48)
        torch.testing.assert_close(program(qkv), _lepe_reference(attn, *qkv.chunk(3, dim=-1), masked))


@pytest.mark.parametrize('name', ['agent_deit_tiny', 'inline_deit_tiny'])
def test_deit_any_size_grads_features(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **SHORT_DEIT, num_classes=10)
    x = torch.randn(2, 3, 72, 40)  # 5x3 patches after padding: not square, not a multiple of 16
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    model.eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [tuple(t.shape) for t in inter] == [(2, 192, 5, 3)] * 2
        prefix = model.forward_intermediates(x, indices=[0], return_prefix_tokens=True, intermediates_only=True)
        assert prefix[0][1].shape == (2, 1, 192)
    features = timm.create_model(name, **SHORT_DEIT, features_only=True, out_indices=(0, 1)).eval()
    features.load_state_dict(model.state_dict(), strict=False)
    assert features.feature_info.reduction() == [16, 16]


@pytest.mark.parametrize('name', ['agent_cswin_tiny', 'inline_cswin_tiny'])
def test_cswin_any_size_grads_features(name):
    torch.manual_seed(0)
    model = timm.create_model(name, **SHORT_CSWIN, num_classes=10)
    x = torch.randn(2, 3, 75, 50)  # odd maps at every stage: stripes padded, agent biases resized
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    model.eval()
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(t.shape[1:]) for t in inter] == [(16, 19, 12), (32, 10, 6), (64, 5, 3), (128, 3, 2)]
    masked = timm.create_model(name, **SHORT_CSWIN, num_classes=10, mask_stripe_padding=True).eval()
    masked.load_state_dict(model.state_dict())
    assert all(a.mask_padding for s in masked.stages for b in s.blocks for a in b.attns if hasattr(a, 'mask_padding'))
    with torch.no_grad():
        assert not torch.allclose(masked(x), model(x))  # stage 3's 5x3 map is padded to the 7-stripes


@pytest.mark.parametrize('name,kwargs', [('agent_deit_tiny', SHORT_DEIT), ('inline_cswin_tiny', SHORT_CSWIN)])
def test_grad_checkpointing(name, kwargs):
    torch.manual_seed(0)
    assert_grad_checkpointing_matches(timm.create_model(name, **kwargs, num_classes=5), torch.randn(2, 3, 48, 48))


def _cswin_to_official(state_dict: dict) -> dict:
    """Our CSWin layout -> the official one (the inverse of the filter's renaming)."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r'^patch_embed\.proj\.', 'stage1_conv_embed.0.', k)
        k = re.sub(r'^patch_embed\.norm\.', 'stage1_conv_embed.2.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.', lambda m: f'stage{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d)\.downsample\.', r'merge\1.', k)
        out[re.sub(r'^head\.fc\.', 'head.', k)] = v
    return out


@pytest.mark.parametrize('wrap', ['plain', 'model', 'module'])
def test_cswin_official_layout_loads_strictly_and_round_trips(wrap):
    official = assert_official_round_trip('agent_cswin_tiny', SHORT_CSWIN, _cswin_to_official,
                                          fit, wrap)
    assert {'stage1_conv_embed.0.weight', 'merge1.conv.weight', 'stage3.0.attns.1.get_v.weight',
            'stage1.0.attns.0.an_bias', 'head.weight'} <= official.keys()


def test_cswin_prefers_ema_deit_raw_weights():
    cswin = timm.create_model('inline_cswin_tiny', **SHORT_CSWIN)
    raw = {k: torch.zeros_like(v) for k, v in cswin.state_dict().items()}
    ema = _cswin_to_official(cswin.state_dict())
    fitted = fit({'model': _cswin_to_official(raw), 'state_dict_ema': ema}, cswin)
    assert all(torch.equal(fitted[k], v) for k, v in cswin.state_dict().items())
    fitted = fit({'model': _cswin_to_official(raw), 'state_dict_ema': ema}, cswin)
    assert all(torch.equal(fitted[k], v) for k, v in cswin.state_dict().items())
    deit = timm.create_model('agent_deit_tiny', **SHORT_DEIT)
    fitted = fit({'model': deit.state_dict(), 'model_ema': {}}, deit)
    assert fitted.keys() == deit.state_dict().keys()


def test_deit_checkpoint_of_another_grid_resamples_pos_embed_and_mismatch_is_named():
    small = timm.create_model('inline_deit_tiny', **SHORT_DEIT)
    big = _meta('inline_deit_tiny', **SHORT_DEIT, img_size=288)
    fitted = fit({'model': small.state_dict()}, big)
    assert fitted['pos_embed'].shape == (1, 1 + 18 * 18, 192)
    with pytest.raises(ValueError, match=r'depth: checkpoint 2 vs model 12'):
        fit(small.state_dict(), _meta('inline_deit_tiny'))
    with pytest.raises(ValueError, match='not a CSWin checkpoint'):
        fit(small.state_dict(), _meta('agent_cswin_tiny'))
    with pytest.raises(ValueError, match=r'blocks per stage: checkpoint \[1, 2, 2, 1\] vs model \[2, 4, 18, 1\]'):
        fit(_cswin_to_official(timm.create_model('agent_cswin_tiny', **SHORT_CSWIN)
                                                      .state_dict()), _meta('agent_cswin_tiny'))


@pytest.mark.parametrize('name,kwargs', [('agent_deit_tiny', SHORT_DEIT), ('agent_cswin_tiny', SHORT_CSWIN)])
def test_bad_input_is_named(name, kwargs):
    model = timm.create_model(name, **kwargs).eval()
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        model(torch.randn(1, 4, 64, 64))
    too_small = r'at least 16 px per side \(one patch\)' if 'deit' in name else 'at least 3 px'
    with pytest.raises(ValueError, match=too_small):
        model(torch.randn(1, 3, 2, 64))


@pytest.mark.parametrize('name,kwargs', [('inline_deit_tiny', SHORT_DEIT), ('agent_cswin_tiny', SHORT_CSWIN)])
def test_bf16_autocast_smoke(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=0)
