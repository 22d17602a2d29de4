"""Shared pytest set-up: one torch thread per xdist worker so `pytest -n 2` does not oversubscribe 2 cores; tests
marked ``cuda`` skip where CUDA is not available (``pytest -m cuda`` runs them: benchmarks/gpu_suite.py)."""
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


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)
