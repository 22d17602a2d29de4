"""Shared pytest set-up: one torch thread per xdist worker so `pytest -n 2` does not oversubscribe 2 cores."""
import os

import torch

if os.environ.get('PYTEST_XDIST_WORKER') and 'OMP_NUM_THREADS' not in os.environ:
    torch.set_num_threads(1)
