"""The TF 'SAME' conv and average pool of MaxViT and MOAT (backbones/_tf_same.py): equal to timm's Conv2dSame /
AvgPool2dSame and to TF's valid-only pooling, static padding where it suffices, nn.Conv2d's parameters, the compiled
pooling branch, exported with dynamic sizes, bad arguments."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import AvgPool2dSame, Conv2dSame, create_conv2d, get_same_padding

from backbones._tf_same import SameAvgPool2d, SameConv2d

pytestmark = pytest.mark.usefixtures('one_thread')
SIZES = [(7, 10), (8, 8), (5, 4), (1, 3), (9, 13)]


@pytest.mark.parametrize('kernel, stride, dilation, groups', [
    (3, 2, 1, 1), (3, 2, 1, 4), (2, 2, 1, 1), (3, 1, 2, 1), (2, 1, 1, 1), (5, 3, 1, 4), ((3, 2), (2, 1), 1, 1),
    (1, 2, 1, 1)])
def test_same_conv_equals_timm_conv2d_same(kernel, stride, dilation, groups):
    torch.manual_seed(0)
    conv = SameConv2d(4, 8, kernel, stride, dilation=dilation, groups=groups).double()
    ref = Conv2dSame(4, 8, kernel, stride, dilation=dilation, groups=groups).double()
    ref.load_state_dict(conv.state_dict())
    strides = (stride, stride) if isinstance(stride, int) else stride
    for size in SIZES:
        x = torch.randn(2, 4, *size, dtype=torch.float64)
        out = conv(x)
        assert out.shape[-2:] == tuple(math.ceil(n / s) for n, s in zip(size, strides))
        torch.testing.assert_close(out, ref(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize('kernel, dilation', [(3, 1), (5, 2), (1, 1)])
def test_same_conv_stride_one_odd_span_is_a_statically_padded_conv(kernel, dilation):
    """As timm's create_conv2d(padding='same'): symmetric padding in the module, nothing padded in forward."""
    conv = SameConv2d(4, 6, kernel, dilation=dilation, groups=2, bias=False)
    ref = create_conv2d(4, 6, kernel, dilation=dilation, groups=2, padding='same')
    assert type(ref) is torch.nn.Conv2d and not conv.dynamic_padding and conv.padding == ref.padding
    assert [(k, v.shape) for k, v in conv.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(1, 4, 7, 6)
    assert torch.equal(conv(x), ref(x))


def _tf_valid_only_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF's AveragePooling2D(padding='same') written out: zero-pad (the odd element last), average the real ones."""
    pads = []
    for n in reversed(x.shape[-2:]):
        total = get_same_padding(n, kernel, stride, 1)
        pads += [total // 2, total - total // 2]
    count = F.avg_pool2d(F.pad(torch.ones_like(x[:, :1]), pads), kernel, stride)
    return F.avg_pool2d(F.pad(x, pads), kernel, stride) / count


@pytest.mark.parametrize('kernel, stride', [(2, 2), (3, 2), (3, 1), (1, 2)])
def test_same_avg_pool_is_tf_or_timm_pooling(kernel, stride, monkeypatch):
    """count_include_pad=False: TF's valid-only pooling (eager: ceil_mode; compiled branch: padded sum over the padded
    count); True: timm's AvgPool2dSame (zeros averaged)."""
    tf_pool, timm_pool = SameAvgPool2d(kernel, stride), SameAvgPool2d(kernel, stride, count_include_pad=True)
    for size in SIZES:
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        ref = _tf_valid_only_pool(x, kernel, stride)
        out = tf_pool(x)
        assert out.shape[-2:] == tuple(math.ceil(n / stride) for n in size)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        assert torch.equal(timm_pool(x), AvgPool2dSame(kernel, stride)(x))
    with monkeypatch.context() as m:
        m.setattr(torch.compiler, 'is_compiling', lambda: True)
        for size in SIZES:
            x = torch.randn(2, 3, *size, dtype=torch.float64)
            torch.testing.assert_close(tf_pool(x), _tf_valid_only_pool(x, kernel, stride), rtol=0, atol=1e-12)


def test_same_layers_export_with_dynamic_sizes():
    """A strided conv and both pools through torch.export with dynamic height/width: right at another size."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(SameConv2d(3, 4, 3, 2), SameAvgPool2d(3, 2), SameAvgPool2d(2, count_include_pad=True))
    model.eval()
    dim = torch.export.Dim.AUTO
    program = torch.export.export(model, (torch.randn(1, 3, 32, 48),), dynamic_shapes=({2: dim, 3: dim},))
    x = torch.randn(1, 3, 37, 29)
    torch.testing.assert_close(program.module()(x), model(x))


@pytest.mark.parametrize('layer, kwargs, message', [
    (SameConv2d, dict(in_channels=3, out_channels=4, kernel_size=0), 'kernel_size'),
    (SameConv2d, dict(in_channels=3, out_channels=4, kernel_size=3, stride=(2, 0)), 'stride'),
    (SameConv2d, dict(in_channels=3, out_channels=4, kernel_size=3, dilation=1.5), 'dilation'),
    (SameAvgPool2d, dict(kernel_size=True), 'kernel_size'),
    (SameAvgPool2d, dict(kernel_size=2, stride=-1), 'stride'),
])
def test_same_layers_refuse_bad_sizes(layer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer(**kwargs)

