"""visualize.py: a figure from a scikit-image sample picture, and one clear error per bad request."""
import pytest

import visualize
from zoo_common import CliError

pytest.importorskip('skimage')


def test_figure(tmp_path):
    out = tmp_path / 'maps.png'
    chosen = visualize.main(['--model', 'tiny_moat_0_no_pe', '--image', 'chelsea', '--points', '150,120', '330,90',
                             '--size', '65', '--out', str(out)])
    assert out.stat().st_size > 0
    assert [m.stage for m in chosen.values()] == [2, 3]  # MOAT's attention stages, the last layer of each
    assert all(m.maps.shape[:2] == (1, 2) for m in chosen.values())


@pytest.mark.parametrize('argv, message', [
    (['--points', '451,10'], 'outside the picture'),
    (['--points', '10'], 'expected x,y'),
    (['--image', 'no_such_sample'], 'neither a file nor a scikit-image sample'),
    (['--layers', '42'], 'layer index 42 does not exist'),
    (['--stages', '0'], r'no attention layer there; stages with attention: \[2, 3\]'),
    (['--head', '9'], 'has 4 heads'),
    (['--model', 'no_such_model'], 'unknown model'),
])
def test_bad_requests(tmp_path, argv, message):
    with pytest.raises(CliError, match=message):
        visualize.main(['--model', 'tiny_moat_0_no_pe', '--size', '33', '--out', str(tmp_path / 'x.png'), *argv])


def test_checkpoint_weights_are_drawn(tmp_path):
    """--checkpoint loads the weights the maps come from (a different seed's weights would give other maps)."""
    import timm
    import torch

    import backbones  # noqa: F401
    torch.manual_seed(5)
    path = tmp_path / 'w.pth'
    torch.save(timm.create_model('tiny_moat_0_no_pe').state_dict(), path)
    args = ['--model', 'tiny_moat_0_no_pe', '--size', '33', '--points', '3,4', '--out', str(tmp_path / 'x.png')]
    loaded = visualize.main([*args, '--checkpoint', str(path), '--seed', '1'])
    again = visualize.main([*args, '--checkpoint', str(path), '--seed', '2'])
    fresh = visualize.main([*args, '--seed', '1'])
    name = next(iter(loaded))
    assert torch.equal(loaded[name].maps, again[name].maps) and not torch.equal(loaded[name].maps, fresh[name].maps)
