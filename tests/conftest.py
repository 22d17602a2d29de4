"""Shared pytest set-up: one torch thread per xdist worker so `pytest -n 2` does not oversubscribe 2 cores."""
import os

import pytest
import torch

if os.environ.get('PYTEST_XDIST_WORKER') and 'OMP_NUM_THREADS' not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Run a test single-threaded (small CPU models run several times faster without oversubscription)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
