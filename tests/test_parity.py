"""Official parity pinned in CI: each fixture (``tests/data/parity/<model>.pt``, written once by
``tools/make_parity_fixtures.py`` from the authors' own code) holds an official-layout state dict of a reduced model,
an input and the logits the official code gives; our model must load it through ``backbones.checkpoint.fit`` (strictly)
and give the same logits. A new family adds its fixtures the same way; every file found here is checked."""
from pathlib import Path

import pytest
import timm
import torch

from backbones.checkpoint import fit

FIXTURES = sorted((Path(__file__).parent / 'data' / 'parity').glob('*.pt'))

pytestmark = pytest.mark.usefixtures('one_thread')


def test_every_ported_nat_family_has_a_fixture():
    assert {'nat_mini', 'nat_small', 'dinat_mini', 'dinat_s_tiny'} <= {p.stem for p in FIXTURES}


@pytest.mark.parametrize('path', FIXTURES, ids=lambda p: p.stem)
def test_official_logits(path):
    fixture = torch.load(path, map_location='cpu', weights_only=True)
    model = timm.create_model(fixture['model_name'], **fixture['model_kwargs']).eval()
    official = fixture['official_state_dict']
    assert any(k.startswith(('levels.', 'layers.')) for k in official)  # the official layout, not ours
    model.load_state_dict(fit({'model': official}, model), strict=True)
    with torch.no_grad():
        logits = model.double()(fixture['input'].double()).float()
    torch.testing.assert_close(logits, fixture['logits'], rtol=1e-5, atol=1e-5)
