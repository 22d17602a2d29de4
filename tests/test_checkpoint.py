"""One way to read weights: the same file gives the same weights (the family's default, EMA or raw; ``use_ema``
chooses) through validate.py / train.py (zoo_common), ``pretrained=True`` (URL and ``file=``) and the downstream
backbone's init_cfg; the fit's one-line diagnosis reaches the user unchanged."""
import pytest
import timm
import torch

import zoo_common
from backbones import FAMILIES, family_of, nat
from backbones import checkpoint as ckpt

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
    assert family_of('dinat_mini').model is nat.NAT and family_of(timm.create_model('dinat_s_tiny', **SHORT)).name == \
        'dinat_s' and family_of('test_resnet') is None


def _backbone_weights(name: str, path, kwargs: dict, **extra) -> dict:
    """What ``AttnZooBackbone(init_cfg=Pretrained(path))`` loads, under the classification model's names."""
    pytest.importorskip('mmengine')
    from downstream import AttnZooBackbone

    backbone = AttnZooBackbone(name, out_indices=(0, 1), model_kwargs=kwargs,
                               init_cfg=dict(type='Pretrained', checkpoint=str(path)), **extra)
    backbone.init_weights()
    names = backbone.classification_model().state_dict()
    out = {}
    for feat_name, value in backbone.model.state_dict().items():
        cls_name = next(c for c in (feat_name, feat_name.replace('_', '.', 1), feat_name[6:]) if c in names)
        out[cls_name] = value
    return out


@pytest.mark.parametrize('name, kwargs, default', [('nat_mini', SHORT, 'raw'), ('test_resnet', {}, 'ema')])
def test_the_same_file_gives_the_same_weights_everywhere(tmp_path, monkeypatch, name, kwargs, default):
    path, raw, ema = _two_weight_file(tmp_path, name, **kwargs)
    want = raw if default == 'raw' else ema

    # validate.py --checkpoint / train.py --initial-checkpoint / --pretrained-path
    model = timm.create_model(name, **kwargs)
    zoo_common.load_model_weights(model, str(path), '--checkpoint')
    assert _same(model, want)
    model = timm.create_model(name, **kwargs)
    zoo_common.load_model_weights(model, str(path), '--pretrained-path', new_classifier=True)
    assert _same(model, want)
    # pretrained=True from a URL (how the releases load) and from a file
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
    if name == 'nat_mini':
        for overlay in (dict(url=path.as_uri()), dict(file=str(path))):
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            assert _same(model, want), overlay
    # the downstream backbone's init_cfg
    got = _backbone_weights(name, path, kwargs)
    assert got and all(torch.equal(v, want[k]) for k, v in got.items())

    # and an explicit choice wins everywhere
    for use_ema, expected in ((True, ema), (False, raw)):
        model = timm.create_model(name, **kwargs)
        zoo_common.load_model_weights(model, str(path), '--checkpoint', use_ema=use_ema)
        assert _same(model, expected)
        model = timm.create_model(name, **kwargs)
        ckpt.load_weights(model, path, use_ema=use_ema)
        assert _same(model, expected)
        got = _backbone_weights(name, path, kwargs, use_ema=use_ema)
        assert all(torch.equal(v, expected[k]) for k, v in got.items())


def test_unwrap_explicit_choice_errors():
    sd = {'w': torch.zeros(1)}
    assert ckpt.unwrap_state_dict({'module.w': torch.zeros(1)}).keys() == {'w'}
    with pytest.raises(ValueError, match='holds no EMA weights'):
        ckpt.unwrap_state_dict({'model': sd}, use_ema=True)
    with pytest.raises(ValueError, match='holds only EMA weights'):
        ckpt.unwrap_state_dict({'model_ema': sd}, use_ema=False)
    assert ckpt.unwrap_state_dict(sd, use_ema=False) == sd


def test_fit_diagnosis_reaches_the_user_unchanged(tmp_path):
    """A NAT checkpoint given to a DiNAT_s model: every loader shows the fit's verdict (what differs, then the keys),
    adding only which file; no loader retries or rewraps it into another error."""
    path = tmp_path / 'nat.pth'
    torch.save({'model': timm.create_model('nat_mini', **SHORT).state_dict()}, path)
    detail = 'stem: checkpoint conv tokenizer (NAT/DiNAT) vs model 4x4 patches (DiNAT_s); stage widths'
    verdict = f'dinat_s_tiny: checkpoint does not match the model: {detail}'
    with pytest.raises(zoo_common.CliError) as err:
        zoo_common.load_model_weights(timm.create_model('dinat_s_tiny', **SHORT), str(path), '--checkpoint')
    message = str(err.value)
    assert message.startswith(f"--checkpoint {path} does not match model 'dinat_s_tiny': {detail}")
    assert '\n' not in message and 'missing keys' in message
    with pytest.raises(ValueError) as err:
        ckpt.load_weights(timm.create_model('dinat_s_tiny', **SHORT), path)
    assert str(err.value).startswith(verdict)
    with pytest.raises(ValueError) as err:
        _backbone_weights('dinat_s_tiny', path, SHORT)
    assert str(err.value).startswith(f'checkpoint {path}: {verdict}')
    with pytest.raises(RuntimeError, match='cannot read checkpoint'):
        ckpt.read_checkpoint(tmp_path / 'missing.pth')


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
