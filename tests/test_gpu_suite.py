"""The GPU suite's CPU rehearsal (benchmarks/gpu_suite.py --dry-run): every non-CUDA step runs, the CUDA parts skip
and say so, the report is complete and the time budget is kept, so a GPU session does not find a typo."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.models import SHORT_MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import gpu_suite  # noqa: E402


def _rehearse(tmp_path: Path, *args: str) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    proc = subprocess.run(['bash', 'benchmarks/gpu_suite.sh', '--dry-run', '--out-dir', str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'})
    elapsed = time.monotonic() - t0
    assert (tmp_path / 'suite.json').exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads((tmp_path / 'suite.json').read_text()), elapsed


def test_rehearsal_runs_every_part(tmp_path):
    code, report, elapsed = _rehearse(tmp_path, '--budget', '200')
    meta, parts = report['meta'], {p['name']: p for p in report['parts']}
    assert code == 0 == meta['exit_code'], parts
    assert meta['dry_run'] and not meta['cuda'] and elapsed < 200
    assert list(parts) == list(gpu_suite.PARTS)
    assert parts['env']['status'] == 'ok' and parts['env']['detail']['versions']['torch']
    for name in ('cuda_tests', 'cuda_sweep'):  # collected and skipped, not silently absent
        tests = parts[name]['tests']
        assert parts[name]['status'] == 'skipped' and tests['total'] > 0 == tests['total'] - tests['skipped']
    assert parts['cuda_tests']['tests']['total'] > 100
    for name in ('ops', 'models', 'routed'):
        assert parts[name]['status'] == 'rehearsed' and parts[name]['elapsed_s'] <= parts[name]['budget_s']
    routed = parts['routed']['detail']  # kept in suite.json: no files of its own under $OUT
    assert {(r['impl'], r['mode']) for r in routed['rows']} == {(i, m) for i in ('ours', 'official gather')
                                                                 for m in ('fwd', 'fwd_bwd')}
    assert routed['problems'][0]['max_abs_diff'] < 1e-4 and len(routed['comparisons']) == 2
    assert any('triton: needs CUDA' in line for line in report['skipped'])

    ops = json.loads((tmp_path / 'ops.json').read_text())
    assert ops['meta']['complete'] and ops['meta']['mode'] == 'tiny'
    rows = {(r['problem'], r['peer']): r for r in ops['rows']}
    for (problem, peer), r in rows.items():
        assert r['fwd_ms'] > 0, (problem, peer)
        if peer == 'flex':  # the block mask (+ rpb score_mod) computes our function
            assert r['max_abs_diff'] < 1e-4, (problem, r['max_abs_diff'])
    assert {c['peer'] for c in ops['comparisons']} == {'sdpa_dense', 'flex'}
    assert any(c['target'] == 1.0 for c in ops['comparisons'])  # DiNAT shapes: faster than FlexAttention fwd+bwd

    models = json.loads((tmp_path / 'models.json').read_text())
    assert [r['model'] for r in models['rows']] == SHORT_MODELS.split(',')
    assert models['meta']['settings']['amp_dtype'] == 'bfloat16' and models['meta']['settings']['channels_last']
    assert all('error' not in r['train'] for r in models['rows'])

    md = (tmp_path / 'suite.md').read_text()
    assert md.startswith('# GPU suite on CPU') and '(CPU rehearsal)' in md
    assert '### Comparisons in this run' in md and '### Targets' in md and '### Skipped or cut short' in md
    assert '### Routed attention vs the official gather' in md
    assert 'dinat_tiny / swin_tiny_patch4_window7_224' in md
    assert (tmp_path / 'suite.log').read_text().count('$ ') >= 4
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool brings back from $OUT


def test_rehearsal_keeps_a_short_budget(tmp_path):
    """With too little time, parts that cannot start are skipped for it, the benchmark stops early and lists what
    it left; exit code 2 (incomplete)."""
    # 22 s: ops gets 22 * 140 / 240 < 15 s (MIN_START_S: skipped), models the rest (>= 15 s unless env takes > 7 s)
    code, report, elapsed = _rehearse(tmp_path, '--budget', '22', '--parts', 'env,ops,models')
    parts = {p['name']: p for p in report['parts']}
    assert code == 2 and elapsed < 22 + 20  # + at most the SIGINT grace and start-up
    assert parts['ops']['status'] == 'skipped' and parts['ops']['reason'].startswith(gpu_suite.TIME_BUDGET)
    assert parts['models']['status'] == 'partial', parts['models']
    assert any(line.startswith('ops: skipped') for line in report['skipped'])
    assert any(gpu_suite.TIME_BUDGET in line and line.startswith('models:') for line in report['skipped'])


def test_deadline_stops_a_part(tmp_path):
    suite = gpu_suite.Suite(argparse.Namespace(dry_run=True, budget=5), tmp_path)
    t0 = time.monotonic()
    rc, stopped = suite.run([sys.executable, '-c', 'import time; time.sleep(60)'], time.monotonic() + 1)
    assert stopped and rc != 0 and time.monotonic() - t0 < 10


@pytest.mark.parametrize('parts, env_ok, cuda, dry_run, want', [
    ([dict(status='ok')], True, True, False, 0),
    ([dict(status='ok'), dict(status='failed')], True, True, False, 1),
    ([dict(status='ok'), dict(status='partial')], True, True, False, 2),
    ([dict(status='skipped', reason=gpu_suite.TIME_BUDGET + ': 3 s left')], True, True, False, 2),
    ([dict(status='skipped', reason='no CUDA device: ...')], True, False, True, 0),
    ([dict(status='skipped', reason='no CUDA device: ...')], True, False, False, 2),
    ([dict(status='failed')], False, False, False, 3),
])
def test_exit_code(parts, env_ok, cuda, dry_run, want):
    assert gpu_suite.exit_code(parts, env_ok, cuda, dry_run) == want
