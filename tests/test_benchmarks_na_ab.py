"""benchmarks/na_ab.py: the in-process A/B of the CPU NA backend against a git revision."""
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import na_ab

ROOT = Path(__file__).resolve().parents[1]


def _committed(path: str) -> bool:
    """Whether ``path`` in the working tree equals HEAD's (an A/A run is then exact)."""
    return subprocess.run(['git', '-C', str(ROOT), 'diff', '--quiet', 'HEAD', '--', path]).returncode == 0


def test_a_a_run_writes_results(tmp_path):
    threads = torch.get_num_threads()
    try:
        rows = na_ab.main(['--base', 'HEAD', '--cases', '7,w56', '--batch', '1', '--reps', '2', '--out-dir',
                           str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert [r['case'] for r in rows] == ['7', 'w56']
    for r in rows:
        assert all(r[f'{rev}_{phase}'] > 0 for rev in ('base', 'new') for phase in ('fwd', 'bwd'))
        assert r['speedup_fwd'] == pytest.approx(r['base_fwd'] / r['new_fwd'])
        unchanged = all(_committed(f'ops/na/backends/{f}.py') for f in ('torch_na', 'torch_blocks'))
        assert r['max_abs_diff'] == 0 if unchanged else r['max_abs_diff'] < 1e-4
    assert (tmp_path / 'na_ab.json').exists()
    assert '| w56 |' in (tmp_path / 'na_ab.md').read_text()


def test_bad_revision_and_case_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match='no-such-rev'):
        na_ab.main(['--base', 'no-such-rev', '--cases', '7', '--out-dir', str(tmp_path)])
    with pytest.raises(SystemExit):
        na_ab.main(['--base', 'HEAD', '--cases', '9x9', '--out-dir', str(tmp_path)])
