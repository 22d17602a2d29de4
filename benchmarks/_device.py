"""How the benchmarks name the machine they ran on (no heavy imports: the GPU suite's parts start fast)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ['cpu_name', 'device_name']


def cpu_name() -> str:
    try:
        model = next(ln.split(':', 1)[1].strip() for ln in Path('/proc/cpuinfo').read_text().splitlines()
                     if ln.startswith('model name'))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f'CPU {model} ({os.cpu_count()} cores)'


def device_name(device: torch.device) -> str:
    """The results folder name, as benchmarks/ops.py names it: the GPU's name, or the CPU architecture + threads."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device).replace(' ', '_')
    return f'cpu-{platform.machine()}-{torch.get_num_threads()}threads'
