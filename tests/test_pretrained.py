"""``timm.create_model(name, pretrained=True)`` for the official releases, without network: timm's downloader is
replaced by one that writes the official parity fixtures (official layout, perturbed weights) as the released files,
so the logits must match the official model's."""
import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
import timm
import timm.models._hub
import torch

import backbones  # noqa: F401
from backbones._family import release_url

sys.path.insert(0, str(Path(__file__).parents[1] / 'tools'))
from _parity import fixture_input  # noqa: E402

DATA = Path(__file__).parent / 'data'


def _url(name: str) -> str:
    url = timm.models.get_pretrained_cfg(name).url
    return url[0] if isinstance(url, tuple) else url


@pytest.fixture
def releases(monkeypatch, tmp_path):
    """``.data``: {url: checkpoint or bytes} to serve; ``.files``: the cache files written (a tmp TORCH_HOME)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    served: dict = {}
    served_files: list[str] = []

    def download(url, dst, hash_prefix=None, progress=True):
        assert url in served, f'unexpected download {url}'
        payload = served[url]
        if isinstance(payload, bytes):
            Path(dst).write_bytes(payload)
        else:
            torch.save(payload, dst)
        served_files.append(os.path.basename(dst))

    monkeypatch.setattr(timm.models._hub, 'download_url_to_file', download)
    return SimpleNamespace(data=served, files=served_files)


def _serve(releases, name: str, payload) -> None:
    releases.data[_url(name)] = payload


def _float(state_dict: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def _assert_logits(model, logits: dict, atol: float) -> None:
    with torch.no_grad():
        for size, want in logits.items():
            torch.testing.assert_close(model.eval()(fixture_input(*size)), want, atol=atol, rtol=1e-4)


def test_release_cache_names_are_unique():
    """Every release of the zoo gets a cache file of its own (timm names it after the URL's basename otherwise:
    empty for TsinghuaCloud, ``content`` for every OneDrive share)."""
    names = []
    for name in timm.list_models(module=['agent', 'inline', 'glnet', 'biformer', 'nat', 'maxvit', 'litv2', 'ravlt',
                                         'l2vit', 'moat', 'transnext'], pretrained=True):
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg.hf_hub_id and not cfg.url:
            continue  # timm's hub path, unique file names
        assert cfg.custom_load, name
        names.append(cfg.url[1] if isinstance(cfg.url, tuple) else os.path.basename(urlparse(cfg.url).path))
    assert names and all(names) and max(Counter(names).values()) == 1
    assert release_url('https://cloud.tsinghua.edu.cn/f/abc/?dl=1', 'agent_deit_tiny') == (
        'https://cloud.tsinghua.edu.cn/f/abc/?dl=1', 'attnzoo-agent_deit_tiny-checkpoint.pth')
    assert release_url('https://x/root/content', 'glnet_4g')[1] == 'attnzoo-glnet_4g-content.pth'
    assert release_url('', 'inline_swin_base_384') == ''


def test_l2vit_training_checkpoint_with_namespace(releases):
    """The L2ViT releases are full training checkpoints (``args`` Namespace, numpy scalars): plain ``weights_only``
    loading fails on them; ours reads them safely and the model gives the official logits."""
    fixture = torch.load(DATA / 'l2vit_official.pt', weights_only=True)
    _serve(releases, 'l2vit_tiny', {'model': _float(fixture['state_dict']), 'epoch': 299,
                                    'args': argparse.Namespace(model='l2vit_tiny', lr=4e-3),
                                    'max_accuracy': np.float64(83.1)})
    cfg = dict(fixture['cfg'])
    model = timm.create_model('l2vit_tiny', pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **cfg)
    _assert_logits(model, fixture['logits'], atol=1e-4)
    assert releases.files == ['L2ViT-Tiny-checkpoint-best-ema.pth']

    # another classifier size (or none): the head keeps its init, everything else loads
    cfg.pop('num_classes')
    model = timm.create_model('l2vit_tiny', pretrained=True, num_classes=7, **cfg)
    want = timm.create_model('l2vit_tiny', pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **cfg,
                             num_classes=10).state_dict()
    got = model.state_dict()
    assert got['head.fc.weight'].shape == (7, cfg['embed_dims'][-1])
    assert all(torch.equal(v, want[k]) for k, v in got.items() if not k.startswith('head.fc.'))
    headless = timm.create_model('l2vit_tiny', pretrained=True, num_classes=0, **cfg)
    assert 'head.fc.weight' not in headless.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in headless.state_dict().items())
    assert releases.files == ['L2ViT-Tiny-checkpoint-best-ema.pth']  # downloaded once, then cached


def test_glnet_releases_get_their_own_cache_files(releases):
    """Two OneDrive releases of one family (both URLs end in ``/root/content``) are cached apart: each model loads its
    own official weights (a shared file would hand the second model the first one's)."""
    fixtures = torch.load(DATA / 'glnet_official.pt', weights_only=True)
    models = dict(g='glnet_4g_tklb', stl='glnet_stl')
    for key, name in models.items():
        _serve(releases, name, {'model': _float(fixtures[key]['state_dict'])})
    for key, name in models.items():
        fixture = fixtures[key]
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(num_classes=10),
                                  **fixture['cfg'])
        _assert_logits(model, fixture['logits'], atol=1e-5)
    assert releases.files == ['attnzoo-glnet_4g_tklb-content.pth', 'attnzoo-glnet_stl-content.pth']


def test_tsinghua_release_and_bad_files(releases):
    """A TsinghuaCloud share (empty basename) downloads to a file of its own; a corrupt or foreign file fails with an
    error naming the model and the file."""
    name = 'agent_deit_tiny'
    _serve(releases, name, b'not a torch file')
    with pytest.raises(RuntimeError, match=rf'{name}: cannot read checkpoint .*attnzoo-{name}-checkpoint\.pth.*'
                                           r'delete the file'):
        timm.create_model(name, pretrained=True)
    assert releases.files == [f'attnzoo-{name}-checkpoint.pth']

    glnet = torch.load(DATA / 'glnet_official.pt', weights_only=True)  # another variant's release
    _serve(releases, 'glnet_4g_tklb', {'model': _float(glnet['stl']['state_dict'])})
    with pytest.raises(ValueError, match=r'glnet_4g_tklb: pretrained weights .* do not fit'):
        timm.create_model('glnet_4g_tklb', pretrained=True, **glnet['g']['cfg'])
