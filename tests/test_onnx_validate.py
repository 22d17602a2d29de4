"""onnx_validate.py: an ONNX file of a reduced NAT (exported here, dynamic batch/height/width) validated in
onnxruntime against the eager model holding the same weights, on random images and on an image folder; bad requests
are one line and exit status 2."""
from __future__ import annotations

import pytest
import timm
import torch

import backbones  # noqa: F401
import onnx_validate
import zoo_common

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

KWARGS = dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 1, 2, 2), num_classes=7)
MODEL = ['--model', 'nat_mini', '--model-kwargs', 'depths=(1,1,1,1)', 'embed_dim=16', 'num_heads=(1,1,2,2)',
         'num_classes=7']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(onnx file, checkpoint) of one reduced model; the file fixed at 64x64 too, for the size check."""
    root = tmp_path_factory.mktemp('onnx')
    model = timm.create_model('nat_mini', **KWARGS).eval()
    torch.save(model.state_dict(), root / 'w.pth')
    auto = torch.export.Dim.AUTO
    x = torch.randn(2, 3, 64, 64)
    torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: auto, 2: auto, 3: auto},),
                      verbose=False).save(str(root / 'dynamic.onnx'))
    torch.onnx.export(model, (x,), dynamo=True, verbose=False).save(str(root / 'fixed.onnx'))
    return root


def test_random_images_against_eager(exported):
    result = onnx_validate.main(['--onnx-input', str(exported / 'dynamic.onnx'), *MODEL, '--checkpoint',
                                 str(exported / 'w.pth'), '--img-size', '72', '-b', '3', '--num-batches', '2'])
    assert result['images'] == 6 and result['input_size'] == [3, 72, 72]
    assert result['max_rel_diff'] < 1e-4


def test_image_folder_accuracy(exported, tmp_path):
    """An image folder through timm's eval transform: top-1 / top-5 as the eager model scores the same tensors."""
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    for cls in ('a', 'b'):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pixels = torch.randint(0, 256, (40, 48, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / cls / f'{i}.png')
    argv = ['--onnx-input', str(exported / 'dynamic.onnx'), '--data-dir', str(tmp_path), *MODEL, '--checkpoint',
            str(exported / 'w.pth'), '--img-size', '64', '-b', '4', '--workers', '0']
    result = onnx_validate.main(argv)
    assert result['images'] == 6 and result['max_rel_diff'] < 1e-4
    assert 0 <= result['top1'] <= result['top5'] <= 100


@pytest.mark.parametrize('argv,message', [
    (['--onnx-input', 'missing.onnx'], 'no such file'),
    (['--onnx-input', '{fixed}', '--img-size', '96', '-b', '2'], 'takes 64x64 inputs only'),
    (['--onnx-input', '{fixed}', '-b', '3'], 'takes batches of 2 only'),
    (['--onnx-input', '{fixed}', '--model', 'nat_minii'], 'unknown model'),
    (['--onnx-input', '{dynamic}', '--model', 'nat_mini'], 'not the same model'),
    (['--onnx-input', '{dynamic}', '--data-dir', 'no/such/dir'], 'no such folder'),
    (['--onnx-input', '{weights}'], 'not a model onnxruntime can load'),
])
def test_bad_requests(exported, capsys, argv, message):
    files = dict(fixed=exported / 'fixed.onnx', dynamic=exported / 'dynamic.onnx', weights=exported / 'w.pth')
    argv = [a.format(**files) for a in argv] + ([] if '--img-size' in argv else ['--img-size', '64'])
    assert zoo_common.run_cli(onnx_validate.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
