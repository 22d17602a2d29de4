"""Exact attention maps (ops.maps): every family's smallest model at an odd input size, in float64.

The oracle is independent of the row functions: every op call a model makes while recording is run again on the
op's *reference* backend. Flat ops (dense, linear) get identity values (``v = I``, so ``out`` is the full N x M
weight matrix, linear attention's implied weights included; token sets, agents and GLMix slots, are composed here
as full matrices). Grid ops (NA, routed, na_av) get random values placed on the map independently of the recorder
(padding cells all one random vector): their output at a chosen query must equal the recorded rows times those
values, which pins every weight (and the placement, and the padding's summed weight). Model-level checks: rows of every
softmax sum to 1 and are >= 0, and the model's outputs are bit-identical with and without recording.
"""
from collections import Counter

import pytest
import timm
import torch

import ops
from backbones._family import FAMILIES
from ops.dense import maps as dense_maps
from ops.linear import maps as linear_maps
from ops.maps import _recorder
from ops.na import maps as na_maps
from ops.routed import maps as routed_maps

F64 = torch.float64
SIZE = (67, 53)  # odd: every family pads or crops somewhere
POINTS = [(0, 0), (26, 40), (52, 66)]  # (x, y): a corner, the middle, the opposite corner


# every family's smallest model (fewest parameters), plus MOAT with its dense-prediction
# windows (odd maps: padded, masked windows), the Swin / CSWin skeletons of Agent / InLine (shifted-window slabs,
# centred stripe padding) and PVT's spatial-reduction attention (pooled keys)
SMALLEST = {'agent': 'agent_deit_tiny', 'biformer': 'biformer_tiny', 'glnet': 'glnet_4g', 'inline': 'inline_deit_tiny',
            'l2vit': 'l2vit_tiny', 'litv2': 'litv2_small', 'maxvit_na': 'maxvit_na_tiny_tf_224',
            'moat': 'tiny_moat_0_no_pe', 'nat': 'nat_mini', 'dinat': 'dinat_mini', 'dinat_s': 'dinat_s_tiny',
            'ravlt': 'ravlt_tiny', 'transnext': 'transnext_micro'}
CASES = {**{f: (n, {}) for f, n in SMALLEST.items()},
         'moat_windows': ('tiny_moat_0_no_pe', {'window_size': [None, None, (4, 4), (3, 3)]}),
         'agent_swin': ('agent_swin_tiny', {}), 'inline_cswin': ('inline_cswin_tiny', {}),
         'pvt_sra': ('agent_pvt_tiny', {'attn_type': 'BBBB'})}


def test_every_family_has_a_case():
    """A new family must join SMALLEST (with its fewest-parameter variant: ``tests/_zoo.smallest_per_family``)."""
    assert SMALLEST.keys() == FAMILIES.keys() and all(n in FAMILIES[f].variants for f, n in SMALLEST.items())


def _reference(fn, *args, **kwargs):
    """An op call on its reference backend with the recording switched off."""
    saved, _recorder.active = _recorder.active, None
    try:
        return fn(*args, backend='reference', **kwargs)
    finally:
        _recorder.active = saved


def _frame_values(vmap: torch.Tensor, frame, grid, pad_value: torch.Tensor) -> torch.Tensor:
    """Values of a grid op's frame ``[B, *frame, h, D]`` from values on the map ``vmap [B, *map, h, D]``: frame cell
    ``f`` holds the map cell ``f + origin``; frame cells off the map (padding) all hold ``pad_value [D]``."""
    pos = [torch.arange(n) + o for n, o in zip(frame, grid.origin)]
    inside = [(p >= 0) & (p < m) for p, m in zip(pos, grid.shape)]
    index = torch.meshgrid(*[p.clamp(0, m - 1) for p, m in zip(pos, grid.shape)], indexing='ij')
    on_map = torch.stack(torch.meshgrid(*inside, indexing='ij')).all(0)
    return torch.where(on_map[None, ..., None, None], vmap[(slice(None), *index)], pad_value)


def _flat(segments: dict) -> torch.Tensor:
    """Segments ``[B, P, h, *shape]`` back to the op's key order (prefix before the grid)."""
    return torch.cat([t.flatten(3) for n, t in segments.items() if n != 'padding'], -1)


class Oracle:
    """Wraps the families' ``record`` functions: after each call's rows are recorded, checks them against the
    reference backend's full weights."""

    def __init__(self, monkeypatch):
        self.checked = Counter()
        self.sets: dict[str, torch.Tensor] = {}  # token set -> full weights [B, h, S, M] over the base keys
        for module, name, check in ((na_maps, 'record', self._na), (na_maps, 'record_av', self._av),
                                    (routed_maps, 'record', self._routed), (dense_maps, 'record', self._dense),
                                    (linear_maps, 'record', self._linear)):
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name), check))

    def _wrap(self, original, check):
        def wrapped(*args):
            rec = _recorder.active
            before = rec._last
            original(*args)
            check(rec, rec._last if rec._last is not before else None, *args)
        return wrapped

    def _compare(self, kind, part, want):
        got = _flat(part.segments)
        covered = part.covered
        torch.testing.assert_close(got[:, covered], want[:, covered], atol=1e-10, rtol=1e-9, msg=kind)
        self.checked[kind] += 1

    def _project(self, rec, kind, part, frame, token_grid, vmap, pad_value, out, extra_values=None):
        """The reference output at the chosen queries (``out [B, *frame, h, D]``, run on the frame values of
        ``vmap``) equals the recorded rows times the values: ``maps . vmap + padding * pad_value + extra . values``.
        For random values this pins every weight of a row (a wrong row would need to be orthogonal to them)."""
        grid = rec.map_grid(token_grid, frame, kind)
        cells = rec.cells(grid.shape) - torch.tensor(grid.origin)
        covered = part.covered
        got = torch.einsum('bph...,b...hd->bphd', part.segments['map'], vmap)
        if 'padding' in part.segments:
            got = got + part.segments['padding'] * pad_value
        if extra_values is not None:
            got = got + torch.einsum('bphe,behd->bphd', part.segments['extra'], extra_values.expand(
                got.shape[0], -1, -1, -1))
        want = out[(slice(None), *cells[covered].T)]
        torch.testing.assert_close(got[:, covered], want, atol=1e-10, rtol=1e-9, msg=kind)
        self.checked[kind] += 1

    def _random_values(self, grid, like, width):
        b, h = like.shape[0], like.shape[-2]
        return torch.randn(b, *grid.shape, h, width, dtype=F64), torch.randn(width, dtype=F64)

    def _na(self, rec, part, query, key, spec, scale, rpb, ak, token_grid):
        frame = tuple(query.shape[1:-2])
        grid = rec.map_grid(token_grid, frame, 'na')
        vmap, pad = self._random_values(grid, query, query.shape[-1])
        av = None if ak is None else torch.randn(ak.shape, dtype=F64)
        out = _reference(ops.neighborhood_attention, len(frame), query, key, _frame_values(vmap, frame, grid, pad),
                         spec.kernel_size, spec.stride, spec.dilation, spec.is_causal, scale, rpb, ak, av,
                         valid_shape=spec.valid_shape, border=spec.border)
        self._project(rec, 'na:' + part.kind, part, frame, token_grid, vmap, pad, out, av)

    def _av(self, rec, part, weights, spec):
        frame = tuple(weights.shape[1:-2])
        grid = rec.map_grid(None, frame, 'na_av')
        vmap, pad = self._random_values(grid, weights, 8)
        out = _reference(ops.na_av, weights, vmap, spec.kernel_size, spec.stride, spec.dilation, spec.is_causal,
                         spec.border)
        self._project(rec, 'na_av', part, frame, None, vmap, pad, out)

    def _routed(self, rec, part, query, key, indices, grid, scale, valid_shape, token_grid, lse):
        frame = tuple(query.shape[1:3])
        map_grid = rec.map_grid(token_grid, frame, 'routed')
        vmap, pad = self._random_values(map_grid, query, query.shape[-1])
        out = _reference(ops.routed_attention, query, key, _frame_values(vmap, frame, map_grid, pad), indices,
                         (grid.n_h, grid.n_w), scale=scale, valid_shape=valid_shape)
        self._project(rec, 'routed', part, frame, token_grid, vmap, pad, out)

    def _flat_rows(self, rec, full, token_grid, op):
        """Full weights ``[B, N, h, M]`` of a flat op -> the chosen queries' rows over the base keys (composed
        through a key token set), or a token set's definition."""
        q_grid, k_grid = rec.flat_grids(token_grid, full.shape[1], full.shape[-1], op)
        w = full.transpose(1, 2)  # [B, h, N, M]
        if isinstance(k_grid, str):
            through = self.sets[k_grid]
            heads = max(w.shape[1], through.shape[1])
            w = w.expand(-1, heads, -1, -1) @ through.expand(-1, heads, -1, -1)
        if isinstance(q_grid, str):
            self.sets[q_grid] = w
            return None
        return w[:, :, rec.flat_queries(q_grid, full.shape[1])].transpose(1, 2)

    def _dense(self, rec, part, query, key, bias, scale, token_grid, lse):
        m = key.shape[1]
        v = torch.eye(m, dtype=F64).reshape(1, m, 1, m).expand(key.shape[0], m, query.shape[2], m)
        full = _reference(ops.dense_attention, query, key, v, bias, scale=scale)
        want = self._flat_rows(rec, full, token_grid, 'dense')
        if want is None:
            assert part is None
            self.checked['dense:set'] += 1
        else:
            self._compare('dense:' + part.kind, part, want)

    def _linear(self, rec, part, query, key, feature_map, key_reweight, sin, cos, key_reduce, eps, clamp_min, scale,
                normalizer, token_grid):
        n = key.shape[1]
        v = torch.eye(n, dtype=F64).reshape(1, n, 1, n).expand(key.shape[0], n, query.shape[2], n)
        full = _reference(ops.linear_attention, query, key, v, feature_map=feature_map, key_reweight=key_reweight,
                          rope=None if sin is None else (sin, cos), key_reduce=key_reduce, eps=eps,
                          clamp_min=clamp_min, scale=scale, normalizer=normalizer)
        self._compare('linear', part, self._flat_rows(rec, full, token_grid, 'linear'))


@pytest.mark.parametrize('case', sorted(CASES))
def test_maps_equal_reference_rows(case, monkeypatch, one_thread):
    name, kwargs = CASES[case]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).to(F64).eval()
    x = torch.randn(1, 3, *SIZE, dtype=F64)
    with torch.no_grad():
        plain = model(x)
    oracle = Oracle(monkeypatch)
    with torch.no_grad(), ops.record_attention(POINTS, SIZE, model, batch=1) as rec:
        recorded = model(x)
    assert torch.equal(plain, recorded)  # the fast forward is untouched by recording
    assert rec.maps and sum(oracle.checked.values()) >= len(rec.maps)
    for label, amap in rec.maps.items():
        assert amap.maps.dtype == F64 and amap.maps.shape[:2] == (1, len(POINTS)), label
        if amap.normalized:
            torch.testing.assert_close(amap.total(), torch.ones_like(amap.total()), atol=1e-10, rtol=0, msg=label)
            assert all((t >= 0).all() for t in (amap.maps, *amap.extra.values())), label
    if case == 'moat_windows':  # masked window padding: the padded keys get exactly 0
        padded = [m for m in rec.maps.values() if 'padding' in m.extra]
        assert padded and all((m.extra['padding'] == 0).all() for m in padded)
    expected = {'nat': 'na:neighborhood', 'dinat': 'na:grid', 'dinat_s': 'na:grid', 'maxvit_na': 'na:grid',
                'biformer': 'routed', 'litv2': 'dense:pooled', 'agent': 'dense:agents', 'inline': 'linear',
                'ravlt': 'linear', 'l2vit': 'linear', 'glnet': 'dense:slots', 'transnext': 'na:neighborhood',
                'moat': 'dense:dense', 'moat_windows': 'na:window', 'agent_swin': 'na:window',
                'inline_cswin': 'linear', 'pvt_sra': 'dense:pooled'}[case]
    assert oracle.checked[expected], (expected, oracle.checked)


def _natten_window(i: int, n: int, k: int, d: int) -> set[int]:
    """NATTEN's window along one axis (clamped at the borders, within the query's dilation group)."""
    g, idx = i % d, i // d
    n_g = (n - g + d - 1) // d
    start = min(max(idx - k // 2, 0), n_g - k)
    return {g + d * (start + j) for j in range(k)}


@pytest.mark.parametrize('dilation', [1, 2])
def test_na_support_is_the_natten_window(dilation):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 11, 9, 2, 4, dtype=F64) for _ in range(3))
    cells = [(0, 0), (5, 4), (10, 8), (3, 7)]  # (row, col); image_size = the grid: points are cells
    with ops.record_attention([(c, r) for r, c in cells], (11, 9)) as rec:
        ops.na2d(q, k, v, 3, dilation=dilation)
    (amap,) = rec.maps.values()
    for p, (r, c) in enumerate(cells):
        support = {tuple(t.tolist()) for t in (amap.maps[0, p] != 0).any(0).nonzero()}
        rows, cols = _natten_window(r, 11, 3, dilation), _natten_window(c, 9, 3, dilation)
        assert support == {(a, b) for a in rows for b in cols}


def test_routed_support_is_the_routed_regions():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 8, 6, 2, 4, dtype=F64) for _ in range(3))
    indices = torch.randint(0, 4, (1, 4, 2))  # 2x2 regions of 4x3 tokens, topk 2
    with ops.record_attention([(1, 1), (5, 6)], (8, 6)) as rec:
        ops.routed_attention(q, k, v, indices, 2)
    (amap,) = rec.maps.values()
    for p, (r, c) in enumerate([(1, 1), (6, 5)]):
        routed = indices[0, (r // 4) * 2 + c // 3].tolist()
        support = {tuple(t.tolist()) for t in (amap.maps[0, p] != 0).any(0).nonzero()}
        assert support == {(a, b) for a in range(8) for b in range(6) if (a // 4) * 2 + b // 3 in routed}


@pytest.mark.parametrize('mask', [True, False])
def test_padded_keys(mask):
    """Window attention on an odd map: masked padding gets exactly 0, unmasked zero padding its (positive) share."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 5, 5, 1, 4, dtype=F64) for _ in range(3))
    with ops.record_attention([(4, 4)], (5, 5)) as rec:
        ops.window_attention(q, k, v, 3, padding='masked' if mask else 'zeros')
    (amap,) = rec.maps.values()
    assert amap.key_grid == (5, 5) and (amap.extra['padding'] == 0).all() == mask
    torch.testing.assert_close(amap.total(), torch.ones_like(amap.total()))
    assert (amap.maps[0, 0, 0] != 0).nonzero().tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]


def test_bad_requests():
    model = timm.create_model('tiny_moat_0_no_pe').eval()
    x = torch.randn(1, 3, 33, 31)
    with pytest.raises(ValueError, match=r'lie outside the image'):
        ops.attention_maps(model, x, [(31, 5)])
    with pytest.raises(IndexError, match='layer index 99 does not exist'):
        ops.attention_maps(model, x, [(3, 5)], layers=[99])
    with pytest.raises(ValueError, match='no attention layer matches'):
        ops.attention_maps(model, x, [(3, 5)], layers=['nothing.*'])
    with pytest.raises(ValueError, match='has no attention layer to map'):
        ops.attention_maps(torch.nn.Conv2d(3, 4, 3), x, [(3, 5)])
    with pytest.raises(ValueError, match='needs token_grid'):
        with ops.record_attention([(0, 0)], (4, 4)):
            ops.dense_attention(*(torch.randn(1, 16, 1, 4) for _ in range(3)))
    with pytest.raises(RuntimeError, match='does not nest'):
        with ops.record_attention([(0, 0)], (4, 4)), ops.record_attention([(0, 0)], (4, 4)):
            pass
