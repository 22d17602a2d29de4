"""WindowAttention1D/2D/3D: each padding mode against a direct implementation of the behaviour it reproduces, at
sizes that do not divide by the window (Swin/timm token padding, zero padding, masked zero padding, NATTEN clamp,
Swin's shifted windows), and timm's state-dict layout."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention, window_partition, window_reverse

import ops

CLASSES = {1: ops.WindowAttention1D, 2: ops.WindowAttention2D, 3: ops.WindowAttention3D}


def _module(ndim, window, padding, shift=0, dim=16, heads=2, qkv_bias=True, seed=0):
    torch.manual_seed(seed)
    m = CLASSES[ndim](dim, heads, window, shift, padding=padding, qkv_bias=qkv_bias).double()
    torch.nn.init.normal_(m.relative_position_bias_table)  # large enough that a wrong layout shows
    return m


def _grads(m, x, out):
    leaves = [x, *m.parameters()]
    return out, torch.autograd.grad(out, leaves, torch.randn_like(out, generator=torch.Generator().manual_seed(9)))


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0])
    for ga, gb in zip(a[1], b[1]):
        torch.testing.assert_close(ga, gb)


# --- a direct implementation of Swin's window attention (official code / timm, any ndim) ---

def _pad_end(x, w):
    """Zero-pad the spatial dims of [B, *spatial, C] at the end to multiples of ``w``."""
    pad = [0, 0]
    for n, k in zip(reversed(x.shape[1:-1]), reversed(w)):
        pad += [0, -n % k]
    return F.pad(x, pad)


def _windows(x, w):
    """[B, *spatial, C] -> [B * n_windows, prod(w), C], windows in row-major order (Swin's window_partition)."""
    b, c, n = x.shape[0], x.shape[-1], len(w)
    x = x.reshape(b, *(d for s, k in zip(x.shape[1:-1], w) for d in (s // k, k)), c)
    x = x.permute(0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
    return x.reshape(-1, math.prod(w), c)


def _unwindows(x, w, b, shape):
    n = len(w)
    x = x.reshape(b, *(s // k for s, k in zip(shape, w)), *w, x.shape[-1])
    x = x.permute(0, *(i for a in range(1, n + 1) for i in (a, a + n)), 2 * n + 1)
    return x.reshape(b, *shape, x.shape[-1])


def _swin_bias(table, w):
    """Swin's relative_position_index: (query - key + w - 1) per axis, row-major into table [prod(2w-1), heads]."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(k) for k in w), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros_like(rel[0])
    for i, k in enumerate(w):
        index = index * (2 * k - 1) + rel[i] + k - 1
    return table[index].permute(2, 0, 1)  # [heads, T, T]


def _swin_regions(padded, w, shift):
    """Swin's SW-MSA region labels of the rolled map: slices (0, -w), (-w, -s), (-s, None) per axis."""
    label = torch.zeros(padded, dtype=torch.long)
    for i, (p, k, s) in enumerate(zip(padded, w, shift)):
        axis = torch.zeros(p, dtype=torch.long)
        if s:
            axis[p - k:p - s], axis[p - s:] = 1, 2
        label = label * 3 + axis.view(*(-1 if j == i else 1 for j in range(len(w))))
    return label


def _direct(m, x, mode):
    """Swin's block as its official code runs it (detection/segmentation, Video Swin): 'tokens' pads the tokens,
    then qkv; 'zeros' / 'masked' pad q/k/v after qkv (masked: padded keys masked). Then roll by -shift, Swin's
    WindowAttention on the partitioned windows with its -100 region mask, reverse, roll back, crop."""
    b, shape, w, shift, heads = x.shape[0], x.shape[1:-1], m.window_size, m.shift_size, m.num_heads
    dims = tuple(range(1, len(w) + 1))
    qkv = m.qkv(_pad_end(x, w)) if mode == 'tokens' else _pad_end(m.qkv(x), w)
    valid = _pad_end(torch.ones(b, *shape, 1, dtype=torch.bool), w)
    padded = qkv.shape[1:-1]
    qkv, valid = (torch.roll(t, [-s for s in shift], dims) for t in (qkv, valid))
    qkv, valid = _windows(qkv, w), _windows(valid, w)[..., 0]
    keep = _windows(_swin_regions(padded, w, shift)[None, ..., None], w)[..., 0].repeat(b, 1)
    keep = keep[:, :, None] == keep[:, None, :]
    if mode == 'masked':
        keep = keep & valid[:, None, :]
    q, k, v = qkv.reshape(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = (q * m.scale) @ k.transpose(-1, -2) + _swin_bias(m.relative_position_bias_table, w)
    attn = attn.masked_fill(~keep[:, None], -100.)
    o = (attn.softmax(-1) @ v).transpose(1, 2).reshape(qkv.shape[0], qkv.shape[1], -1)
    o = torch.roll(_unwindows(o, w, b, padded), shift, dims)[(slice(None), *(slice(0, n) for n in shape))]
    return m.proj(o)


# --- 'tokens' is Swin: timm's block padding + timm's WindowAttention, same weights ---

@pytest.mark.parametrize('size,window', [((10, 13), 4), ((7, 7), 3), ((6, 9), (4, 3))])
def test_tokens_equals_timm_swin_block(size, window):
    torch.manual_seed(0)
    block = SwinTransformerBlock(16, size, num_heads=2, window_size=window, shift_size=0).double()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    m = ops.WindowAttention2D(16, 2, window).double()
    m.load_state_dict(block.attn.state_dict())  # strict: timm's parameter names and shapes
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    got = _grads(m, x, m(x))
    want = _grads(block.attn, x, block._attn(x))  # timm's padding (tokens after norm1) + its W-MSA
    _assert_same(got, want)
    zeros = ops.WindowAttention2D(16, 2, window, padding='zeros').double()
    zeros.load_state_dict(block.attn.state_dict())
    assert not torch.allclose(zeros(x), want[0])  # the padded keys' projection bias matters


@pytest.mark.parametrize('padding', ['tokens', 'zeros', 'masked', 'clamp'])
def test_timm_state_dict_at_divisible_size(padding):
    """All modes agree at a divisible size, and equal timm's WindowAttention on window_partition'd tokens."""
    torch.manual_seed(1)
    ref = WindowAttention(16, 2, window_size=(4, 2)).double()
    torch.nn.init.normal_(ref.relative_position_bias_table)
    m = ops.WindowAttention2D(16, 2, (4, 2), padding=padding).double()
    m.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 6, 16, dtype=torch.float64)
    want = window_reverse(ref(window_partition(x, (4, 2)).reshape(-1, 8, 16)).reshape(-1, 4, 2, 16), (4, 2), 8, 6)
    torch.testing.assert_close(m(x), want)


# --- shifted windows: the official Swin order (pad, then roll), timm's at divisible sizes ---

def _official_shifted(block, x):
    """Swin-Transformer-Object-Detection's block attention: pad the tokens, roll, W-MSA with the region mask of
    the padded map, reverse, roll back, crop (timm's WindowAttention and mask builder, official order)."""
    w, s, (h, wd) = block.window_size, block.shift_size, x.shape[1:3]
    xp = torch.roll(_pad_end(x, w), [-i for i in s], (1, 2))
    hp, wp = xp.shape[1:3]
    o = block.attn(window_partition(xp, w).reshape(-1, w[0] * w[1], x.shape[-1]), mask=block.get_attn_mask(xp))
    return torch.roll(window_reverse(o.reshape(-1, *w, x.shape[-1]), w, hp, wp), s, (1, 2))[:, :h, :wd]


@pytest.mark.parametrize('size,window,shift', [((10, 13), 4, 2), ((7, 7), 3, 1), ((9, 11), (4, 3), (2, 1))])
def test_shifted_tokens_equal_official_swin(size, window, shift):
    torch.manual_seed(2)
    block = SwinTransformerBlock(16, size, num_heads=2, window_size=window, shift_size=shift).double()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    m = ops.WindowAttention2D(16, 2, window, shift).double()
    m.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(m, x, m(x)), _grads(block.attn, x, _official_shifted(block, x)))


def test_shifted_equals_timm_block_at_divisible_size():
    torch.manual_seed(3)
    block = SwinTransformerBlock(16, (8, 12), num_heads=2, window_size=4, shift_size=2).double()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    m = ops.WindowAttention2D(16, 2, 4, 2).double()
    m.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, 8, 12, 16, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(m, x, m(x)), _grads(block.attn, x, block._attn(x)))


# --- every padding mode against its direct implementation, 1-3 D, shifted or not, outputs and gradients ---

@pytest.mark.parametrize('mode', ['tokens', 'zeros', 'masked'])
@pytest.mark.parametrize('size,window,shift', [
    ((10,), 4, 0), ((7, 7), 3, 0), ((10, 13), (4, 4), 0), ((3, 5, 6), (2, 2, 4), 0),
    ((9,), 4, 2), ((7, 8), 3, 1), ((3, 5, 6), (2, 2, 4), (1, 0, 3)), ((1, 5), 4, (2, 1)),
])
def test_padding_modes_equal_direct_swin_partition(mode, size, window, shift):
    m = _module(len(size), window, mode, shift)
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(m, x, m(x)), _grads(m, x, _direct(m, x, mode)))


def test_zeros_equals_tokens_without_qkv_bias():
    m = _module(2, 3, 'zeros', qkv_bias=False)
    x = torch.randn(1, 7, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), _direct(m, x, 'tokens'))
    m.padding = 'masked'
    assert not torch.allclose(m(x), _direct(m, x, 'tokens'))


# --- 'clamp' is NATTEN's blocked window: the last window shifted inwards ---

def _direct_clamp(m, x):
    """Dense attention with NATTEN's window rule for kernel = stride = w: the window of query q starts at
    clamp(min((q // w) * w + w // 2, L - 1) - w // 2, 0, L - w) per axis; bias by Swin's query - key index."""
    b, shape, w, heads = x.shape[0], x.shape[1:-1], m.window_size, m.num_heads
    allowed, index = True, 0
    for i, (n, k) in enumerate(zip(shape, w)):
        pos = torch.arange(n)
        start = ((torch.minimum((pos // k) * k + k // 2, torch.tensor(n - 1)) - k // 2).clamp(0, n - k))
        axis = [1] * len(shape)
        axis[i] = n
        qpos, kpos, qstart = pos.view(*axis, *[1] * len(shape)), pos.view(*[1] * len(shape), *axis), start.view(
            *axis, *[1] * len(shape))
        allowed = allowed & (kpos >= qstart) & (kpos < qstart + k)
        index = index * (2 * k - 1) + (qpos - kpos + k - 1).clamp(0, 2 * k - 2)
    n_tok = math.prod(shape)
    allowed, index = allowed.reshape(n_tok, n_tok), index.reshape(n_tok, n_tok)
    q, k, v = m.qkv(x).reshape(b, n_tok, 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = (q * m.scale) @ k.transpose(-1, -2) + m.relative_position_bias_table[index].permute(2, 0, 1)
    o = attn.masked_fill(~allowed, float('-inf')).softmax(-1) @ v
    return m.proj(o.transpose(1, 2).reshape(b, *shape, -1))


@pytest.mark.parametrize('size,window', [((10,), 4), ((10, 7), (4, 3))])
def test_clamp_equals_natten_blocked_window(size, window):
    m = _module(len(size), window, 'clamp')
    x = torch.randn(2, *size, 16, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(m, x, m(x)), _grads(m, x, _direct_clamp(m, x)))


def test_options_and_errors():
    m = ops.WindowAttention2D(16, 2, 4, rel_pos_bias=False, head_dim=4)
    assert m.relative_position_bias_table is None and m.relative_position_bias() is None
    assert m.qkv.out_features == 24 and m(torch.randn(1, 5, 6, 16)).shape == (1, 5, 6, 16)
    with pytest.raises(ValueError, match='padding'):
        ops.WindowAttention2D(16, 2, 4, padding='reflect')
    with pytest.raises(ValueError, match='expects'):
        ops.WindowAttention2D(16, 2, 4)(torch.randn(1, 8, 16))
    with pytest.raises(ValueError, match='num_heads'):
        ops.WindowAttention1D(16, 3, 4)
    with pytest.raises(ValueError, match='shift_size'):
        ops.WindowAttention2D(16, 2, 4, 4)
    with pytest.raises(ValueError, match='clamp'):
        ops.WindowAttention2D(16, 2, 4, 2, padding='clamp')
