"""What the official-parity scripts (``tools/*_official_parity.py``) and their CI tests share: the fixed inputs the
fixtures were computed on, and the perturbation of BatchNorm statistics (each script perturbs its parameters by its
own rules first, then calls :func:`perturb_running_stats_`, so its generator's draws stay in that order)."""
from __future__ import annotations

import torch

__all__ = ['fixture_input', 'perturb_running_stats_']


def fixture_input(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """The fixed ``[1, 3, h, w]`` input of one size, from a seeded CPU generator."""
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed + h + w))


@torch.no_grad()
def perturb_running_stats_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move BatchNorm running statistics off their init (mean ~ 0.1 N(0, 1), var in [0.5, 1.5))."""
    for name, b in model.named_buffers():
        if name.endswith('running_mean'):
            b.copy_(0.1 * torch.randn(b.shape, generator=gen))
        elif name.endswith('running_var'):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen))
