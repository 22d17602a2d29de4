"""Token-labelling training (token_label.py) on a small synthetic label set in TokenLabeling's format."""
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import auto_augment

import backbones  # noqa: F401
import token_label as tl

pytestmark = pytest.mark.usefixtures('one_thread')
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), head_dim=8, num_slots=4, num_classes=6)


def _write_set(root, num_classes=3, per_class=2, size=48, k=5, grid=15, seed=0):
    """An ImageNet-style train folder and its label folder (``[2, k, grid, grid]`` half-precision maps, as
    TokenLabeling's generate_label.py writes them)."""
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        (root / 'train' / f'n{c:08d}').mkdir(parents=True)
        (root / 'labels' / f'n{c:08d}').mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / 'train' / f'n{c:08d}' / f'img_{i}.JPEG')
            scores = torch.rand(k, grid, grid).sort(0, descending=True).values * 10
            index = torch.stack([torch.randperm(num_classes * 2)[:k] for _ in range(grid * grid)], 1)
            torch.save(torch.stack([scores, index.reshape(k, grid, grid).float()]).half(),
                       root / 'labels' / f'n{c:08d}' / f'img_{i}.pt')


def _pil_op(name, array, arg):
    img = Image.fromarray(array)
    fn = auto_augment.NAME_TO_OP[name]
    return np.asarray(fn(img, arg, resample=Image.NEAREST, fillcolor=0))


@pytest.mark.parametrize('name,arg', [('ShearX', 0.3), ('ShearY', -0.2), ('TranslateXRel', 0.2),
                                      ('TranslateYRel', -0.3)])
def test_label_ops_move_the_map_as_the_image(name, arg):
    """On a map the size of the image, each geometric op moves scores as PIL moves pixels (nearest sampling)."""
    rng = np.random.default_rng(0)
    scores = rng.integers(1, 255, (15, 15)).astype(np.uint8)
    label = torch.stack([torch.from_numpy(scores).float(), torch.zeros(15, 15)])[:, None]  # [2, 1, 15, 15]
    moved = tl.LABEL_OPS[name](label, arg)[0, 0].numpy()
    expected = _pil_op(name, scores, arg).astype(np.float32)
    # PIL samples at pixel centres, ndimage at indices: the two round differently on a few boundary positions.
    assert (moved == expected).mean() > 0.9
    assert (moved == expected).mean() > (moved == scores).mean()  # moved the right way, not left in place


def test_rotate_label_turns_with_the_image():
    """Rotate turns the map the image's way about TokenLabeling's centre (size / 2 in index units, half a cell from
    PIL's pixel-centre convention): a quarter turn equals PIL's up to that one-cell shift."""
    rng = np.random.default_rng(0)
    scores = rng.integers(1, 255, (15, 15)).astype(np.uint8)
    label = torch.stack([torch.from_numpy(scores).float(), torch.zeros(15, 15)])[:, None]
    torch.testing.assert_close(tl.LABEL_OPS['Rotate'](label, 0.), label)
    turned = tl.LABEL_OPS['Rotate'](label, 90.)[0, 0].numpy()
    expected = np.asarray(auto_augment.rotate(Image.fromarray(scores), 90., resample=Image.NEAREST, fillcolor=0))
    assert (np.roll(turned, -1, 0) == expected).mean() > 0.9


def test_dataset_and_transform_build_the_official_target(tmp_path):
    _write_set(tmp_path)
    transform = tl.TokenLabelTransform(32, auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25)
    ds = tl.TokenLabelDataset(str(tmp_path / 'train'), str(tmp_path / 'labels'), transform)
    assert len(ds) == 6
    x, label = ds[3]
    assert x.shape == (3, 32, 32) and label.shape == (3, 5, 15, 15)
    top, left, h, w = label[2, 0, 0, :4].tolist()
    assert 0 <= top and 0 <= left and top + h <= 1 + 1e-6 and left + w <= 1 + 1e-6 and h > 0 and w > 0
    assert label[2, 0, 0, 5].item() == 1  # the class of image 3 (class folders in sorted order)
    for name in ('class10', 'class2'):
        (tmp_path / 'natural' / name).mkdir(parents=True)
    assert tl.TokenLabelDataset.find_classes(None, str(tmp_path / 'natural'))[0] == ['class2', 'class10']
    (tmp_path / 'labels' / 'n00000002' / 'img_1.pt').unlink()
    with pytest.raises(FileNotFoundError, match='token label file not found: .*n00000002.img_1.pt'):
        ds[5]
    torch.save(torch.zeros(5, 15, 15), tmp_path / 'labels' / 'n00000000' / 'img_0.pt')
    with pytest.raises(ValueError, match=r'\[2, k, H, W\]'):
        tl.TokenLabelDataset(str(tmp_path / 'train'), str(tmp_path / 'labels'), transform)
    with pytest.raises(FileNotFoundError, match='token label folder'):
        tl.TokenLabelDataset(str(tmp_path / 'train'), str(tmp_path / 'nowhere'), transform)


def test_horizontal_flip_flips_the_map():
    transform = tl.TokenLabelTransform(16, hflip=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    label = torch.stack([torch.arange(16.).reshape(1, 4, 4), torch.zeros(1, 4, 4)])
    _, out = transform(Image.new('RGB', (16, 16)), label.clone())
    torch.testing.assert_close(out[:2], label.flip(3))


def test_targets_follow_the_crop_box():
    """Scores for class 2 on the map's first half along the axis the box's first coordinate is compared with,
    class 4 on the rest; a box over the second half labels every token 4 (the official box order: (top, left,
    bottom, right) given to roi_align as (x1, y1, x2, y2), i.e. the first coordinate is compared with columns)."""
    label = torch.zeros(3, 1, 8, 8)
    label[0] = 10.
    label[1, 0, :, :4], label[1, 0, :, 4:] = 2, 4
    label[2, 0, 0, :4] = torch.tensor([0.5, 0., 0.5, 1.])  # first coordinate 0.5..1
    crop, tokens = tl.token_label_targets(label[None], num_classes=6, label_size=2, smoothing=0.)
    assert tokens.shape == (1, 4, 6) and crop.shape == (1, 6)
    assert (tokens.argmax(-1) == 4).all() and crop.argmax(-1).item() == 4
    torch.testing.assert_close(tokens.sum(-1), torch.ones(1, 4))
    _, smoothed = tl.token_label_targets(label[None], num_classes=6, label_size=2, smoothing=0.1)
    torch.testing.assert_close(smoothed, tokens * (0.9 + 0.1 / 6) + 0.1 / 6)  # on * p + off, as officially
    label[1, 0, 0, 0] = 6
    with pytest.raises(ValueError, match='outside 0..5'):
        tl.token_label_targets(label[None], num_classes=6, label_size=2)


def test_in_model_cutmix_and_loss(monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model('glnet_4g_tklb', **TINY)
    wrapper = tl.TokenLabelModel(model, rng=np.random.default_rng(0))
    x = torch.randn(4, 3, 64, 64)
    # Without a box the training path is the model's own forward: logits + 0.5 * token max.
    monkeypatch.setattr(tl, 'cutmix_box', lambda *a, **k: (0, 0, 0, 0))
    wrapper.train()
    model.eval()  # BatchNorm with running statistics, no drop path: comparable with the eval forward
    logits, tokens, box = wrapper(x)
    torch.testing.assert_close(logits + 0.5 * tokens.amax(1), model(x), atol=1e-5, rtol=1e-5)
    assert tokens.shape == (4, 4, 6)
    monkeypatch.undo()
    # Identical images: pasting one into another changes nothing, and the swap back restores the tokens.
    same = x[:1].expand(4, -1, -1, -1)
    mixed_logits, mixed_tokens, _ = tl.TokenLabelModel(model, rng=np.random.default_rng(1))(same)
    plain = model(same[:1])
    torch.testing.assert_close(mixed_logits + 0.5 * mixed_tokens.amax(1), plain.expand(4, -1), atol=1e-5, rtol=1e-5)
    boxes = {tl.cutmix_box(2, 2, float(lam), np.random.default_rng(s)) for s, lam in enumerate(np.linspace(0, 1, 20))}
    assert all(0 <= r1 <= r2 <= 2 and 0 <= c1 <= c2 <= 2 for r1, c1, r2, c2 in boxes) and len(boxes) > 1
    # The loss: gradients reach both heads; the crop label is mixed by the pasted area.
    model.train()
    labels = torch.zeros(4, 3, 5, 6, 6)
    labels[:, 0] = torch.rand(4, 5, 6, 6) * 5
    labels[:, 1] = torch.stack([torch.randperm(6)[:5] for _ in range(36)], 1).reshape(5, 6, 6).float()
    labels[:, 2, 0, 0, :4] = torch.tensor([0.1, 0.2, 0.8, 0.7])
    loss_fn = tl.TokenLabelLoss(num_classes=6, label_size=2, smoothing=0.1)
    loss = loss_fn(wrapper(x), labels)
    loss.backward()
    assert torch.isfinite(loss) and model.head.aux_head.weight.grad.abs().sum() > 0
    assert model.head.fc.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='--token-label-size'):
        tl.TokenLabelLoss(num_classes=6, label_size=7)(wrapper(x), labels)
    with pytest.raises(ValueError, match='glnet_\\*_tklb'):
        tl.TokenLabelModel(timm.create_model('glnet_4g', **TINY))


def test_train_py_trains_with_token_labels(tmp_path, capsys):
    """train.py end to end: a GLNet *_tklb model on 64x64 crops (2x2 final grid) of the synthetic set, one epoch."""
    import train
    import zoo_common

    _write_set(tmp_path, num_classes=3, per_class=4, size=72)
    (tmp_path / 'validation').symlink_to(tmp_path / 'train')
    common = ['--data-dir', tmp_path, '--model', 'glnet_4g_tklb', '--model-kwargs', 'depths=(1,1,1,1)',
              'embed_dims=(8,16,24,32)', 'head_dim=8', 'num_slots=4', '--num-classes', '6', '--img-size', '64',
              '-b', '4', '-j', '0', '--epochs', '1', '--warmup-epochs', '0', '--no-plot', '--output', tmp_path / 'out',
              '--token-label-dir', tmp_path / 'labels', '--token-label-size', '2', '--aa', 'rand-m9-mstd0.5-inc1',
              '--reprob', '0.25']
    row = train.main([str(a) for a in common + ['--experiment', 'ok']])
    assert math.isfinite(row['train_loss']) and math.isfinite(row['eval_loss'])
    saved = torch.load(tmp_path / 'out' / 'ok' / 'last.pth.tar', weights_only=False)['state_dict']
    assert 'head.aux_head.weight' in saved and not any(k.startswith('model.') for k in saved)  # wrapper not saved
    assert zoo_common.run_cli(train.main, [str(a) for a in common + ['--mixup', '0.8']]) == 2
    assert '--mixup 0 --cutmix 0' in capsys.readouterr().err
    assert zoo_common.run_cli(train.main, [str(a) for a in common + ['--token-label-size', '7']]) == 2
    assert '--token-label-size' in capsys.readouterr().err


def test_tklb_recipes_need_the_label_folder(capsys):
    import train
    import zoo_common

    recipe = str(Path(__file__).parents[1] / 'configs' / 'imagenet' / 'glnet_4g_tklb.yaml')
    assert zoo_common.run_cli(train.main, ['--config', recipe, '--epochs', '1']) == 2
    assert '--token-label-dir' in capsys.readouterr().err
