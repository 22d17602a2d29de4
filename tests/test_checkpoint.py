"""One way to read weights: the same file gives the same weights in validate.py/train.py, ``pretrained=True`` and the
downstream reader; the family decides the default, ``use_ema`` chooses; a filter's diagnosis reaches the user."""
import pytest
import timm
import torch

import zoo_common
from backbones import FAMILIES, nat
from backbones import checkpoint as ckpt
from downstream.checkpoint import read_state_dict

SHORT = dict(depths=(1, 1, 1, 1), dilations=((1,), (1,), (1,), (1,)))


def _two_weight_file(tmp_path, name: str, **kwargs):
    """A file holding different raw (``model``) and EMA (``model_ema``) weights of ``name``, as L2ViT's releases."""
    torch.manual_seed(0)
    raw = timm.create_model(name, **kwargs).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    path = tmp_path / f'{name}.pth'
    torch.save({'model': raw, 'model_ema': ema, 'epoch': 3}, path)
    return path, raw, ema


def _same(model: torch.nn.Module, expected: dict) -> bool:
    return all(torch.equal(v, expected[k]) for k, v in model.state_dict().items() if k in expected)


def test_families_declare_their_default_weights():
    assert FAMILIES['dinat_s'].ema is False and FAMILIES['maxvit_na'].ema is True
    assert ckpt.ema_first('dinat_s_tiny') is False and ckpt.ema_first('maxvit_na_tiny_tf_224') is True
    assert ckpt.ema_first('test_resnet') is True  # nothing declared: timm's order
    assert ckpt.checkpoint_filter('dinat_mini') is nat.checkpoint_filter_fn
    assert ckpt.checkpoint_filter(timm.create_model('dinat_s_tiny', **SHORT)) is nat.checkpoint_filter_fn


@pytest.mark.parametrize('name, kwargs, default', [('nat_mini', SHORT, 'raw'), ('test_resnet', {}, 'ema')])
def test_one_unwrap_order_everywhere(tmp_path, monkeypatch, name, kwargs, default):
    path, raw, ema = _two_weight_file(tmp_path, name, **kwargs)
    want = raw if default == 'raw' else ema

    # validate.py --checkpoint / train.py --initial-checkpoint
    model = timm.create_model(name, **kwargs)
    zoo_common.load_model_weights(model, str(path), '--checkpoint')
    assert _same(model, want)
    # pretrained=True from a URL (the released-weights path: the family filter sees the whole file)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    if name == 'nat_mini':
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(url=path.as_uri()), **kwargs)
        assert _same(model, want)
    # the downstream reader (AttnZooBackbone's init_cfg)
    got = read_state_dict(str(path), prefer_ema=ckpt.ema_first(name))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    # and an explicit choice wins everywhere
    for use_ema, expected in ((True, ema), (False, raw)):
        model = timm.create_model(name, **kwargs)
        zoo_common.load_model_weights(model, str(path), '--checkpoint', use_ema=use_ema)
        assert _same(model, expected)
        got = read_state_dict(str(path), use_ema=use_ema)
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_unwrap_explicit_choice_errors():
    sd = {'w': torch.zeros(1)}
    assert ckpt.unwrap_state_dict({'module.w': torch.zeros(1)}).keys() == {'w'}
    with pytest.raises(ValueError, match='holds no EMA weights'):
        ckpt.unwrap_state_dict({'model': sd}, use_ema=True)
    with pytest.raises(ValueError, match='holds only EMA weights'):
        ckpt.unwrap_state_dict({'model_ema': sd}, use_ema=False)
    assert ckpt.unwrap_state_dict(sd, use_ema=False) == sd


def test_filter_diagnosis_reaches_the_user(tmp_path):
    """A NAT checkpoint given to a DiNAT_s model: the user reads the family filter's verdict, not just key lists."""
    path = tmp_path / 'nat.pth'
    torch.save({'model': timm.create_model('nat_mini', **SHORT).state_dict()}, path)
    with pytest.raises(zoo_common.CliError) as err:
        zoo_common.load_model_weights(timm.create_model('dinat_s_tiny', **SHORT), str(path), '--checkpoint')
    message = str(err.value)
    assert "does not match model 'dinat_s_tiny'" in message and '\n' not in message
    assert 'checkpoint is a NAT/DiNAT' in message and 'but dinat_s_tiny is a DiNAT_s' in message
    assert 'backbones.nat.checkpoint_filter_fn' in message and 'missing keys' in message


def test_one_mismatch_report():
    model = timm.create_model('test_resnet')
    sd = dict(model.state_dict())
    sd.pop('fc.bias')
    sd['extra'] = torch.zeros(1)
    sd['fc.weight'] = torch.zeros(3, 3)
    report = ckpt.mismatch_report(model.state_dict(), sd)
    assert report == ('1 missing keys (fc.bias); 1 unexpected keys (extra); 1 shape mismatches (checkpoint vs model: '
                      f'fc.weight (3, 3) vs {tuple(model.fc.weight.shape)})')
    assert zoo_common.state_dict_mismatch(model, sd) == report
    assert ckpt.mismatch_report(model.state_dict(), sd, optional={'fc.bias', 'fc.weight', 'extra'}) is None
