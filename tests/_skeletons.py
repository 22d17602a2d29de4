"""What the Agent and InLine tests share about the skeletons: the official Swin / PVT checkpoint layouts (the inverse
of the filters' renaming, with the official derived buffers) and the frozen-fixture check of all four."""
import re
from pathlib import Path

import torch
from _parity import fixture_input

from backbones._skeletons import SKELETONS
from backbones.checkpoint import fit

DATA = Path(__file__).parent / 'data'


def swin_to_official(state_dict: dict, window_blocks: dict | None = None) -> dict:
    """Our Swin layout -> the official one; ``window_blocks`` (official block prefix -> window) adds the
    official ``relative_position_index`` buffers that the filter must drop."""
    out = {}
    for k, v in state_dict.items():
        m = re.match(r'^stages\.(\d+)\.downsample\.(.*)$', k)
        k = f'layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}' if m else re.sub(r'^stages\.', 'layers.', k)
        out['head.' + k[len('head.fc.'):] if k.startswith('head.fc.') else k] = v
    for prefix, w in (window_blocks or {}).items():
        out[f'{prefix}.attn.relative_position_index'] = torch.zeros(w * w, w * w, dtype=torch.long)
    return out


def pvt_to_official(state_dict: dict) -> dict:
    """Our PVT layout -> the official one (``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``, ``head``)."""
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r'^patch_embed\.', 'patch_embed1.', k)
        k = re.sub(r'^stages\.(\d+)\.downsample\.', lambda m: f'patch_embed{int(m.group(1)) + 1}.', k)
        k = re.sub(r'^stages\.(\d+)\.pos_embed$', lambda m: f'pos_embed{int(m.group(1)) + 1}', k)
        k = re.sub(r'^stages\.(\d+)\.blocks\.', lambda m: f'block{int(m.group(1)) + 1}.', k)
        out['head.' + k[len('head.fc.'):] if k.startswith('head.fc.') else k] = v
    return out


def block_kinds(model) -> list[str]:
    """Per stage, one letter per block: A(gent), I(nLine), W(indow), S(patial-reduction)."""
    letter = dict(agent='A', inline='I', window='W', sra='S')
    return [''.join(letter[b.kind] for b in s.blocks) for s in model.stages]


def check_fixture(name: str) -> None:
    """A fixture of tools/agent_inline_official_parity.py / agent_deit_cswin_official_parity.py: the official model's
    logits at its build size (perturbed weights, fp32) from our skeleton, built from the fixture's constructor
    arguments and loaded through the checkpoint fit, within 1e-4."""
    fixture = torch.load(DATA / f'{name}_official.pt', weights_only=True)
    model = SKELETONS[fixture['skeleton']](**fixture['args']).eval()
    state = {k: v.float() for k, v in fixture['state_dict'].items()}
    assert fixture['skeleton'] == 'deit' or set(state) != set(model.state_dict())  # the official layout (DeiT's: ours)
    model.load_state_dict(fit({'model': state}, model), strict=True)
    with torch.no_grad():
        for (h, w), logits in fixture['logits'].items():
            torch.testing.assert_close(model(fixture_input(h, w)), logits, atol=1e-4, rtol=0)
