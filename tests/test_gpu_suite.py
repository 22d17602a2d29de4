"""The GPU suite's CPU rehearsal (benchmarks/gpu_suite.py --dry-run): every non-CUDA step runs, the CUDA parts skip
and say so, the report is complete, so a GPU session does not find a typo; and how the suite spends its time budget,
on a fake clock (no test here reads how long anything took)."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import models as bench_models
from benchmarks.models import SHORT_MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import gpu_suite  # noqa: E402


def _rehearse(tmp_path: Path, *args: str) -> tuple[int, dict]:
    proc = subprocess.run(['bash', 'benchmarks/gpu_suite.sh', '--dry-run', '--out-dir', str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800,  # a hang guard only
                          env={**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'})
    assert (tmp_path / 'suite.json').exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads((tmp_path / 'suite.json').read_text())


def test_rehearsal_runs_every_part(tmp_path):
    # a budget no loaded machine uses up (the rehearsal takes about a minute): nothing is cut for time; what the
    # suite does with too little time is pinned on a fake clock below
    code, report = _rehearse(tmp_path, '--budget', '3000')
    meta, parts = report['meta'], {p['name']: p for p in report['parts']}
    assert code == 0 == meta['exit_code'], parts
    assert meta['dry_run'] and not meta['cuda']
    assert list(parts) == list(gpu_suite.PARTS)
    assert parts['env']['status'] == 'ok' and parts['env']['detail']['versions']['torch']
    for name in ('cuda_tests', 'cuda_sweep'):  # collected and skipped, not silently absent
        tests = parts[name]['tests']
        assert parts[name]['status'] == 'skipped' and tests['total'] > 0 == tests['total'] - tests['skipped']
    assert parts['cuda_tests']['tests']['total'] > 100
    for name in ('ops', 'models', 'routed'):
        assert parts[name]['status'] == 'rehearsed' and not parts[name]['time_skipped']
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


class FakeClock:
    """Seconds that pass only when the test moves them on."""

    def __init__(self) -> None:
        self.now = 1000.

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize('env_s', [2, 10])
def test_a_short_budget_skips_and_cuts(tmp_path, env_s):
    """22 s for env, ops and models (shares 10 / 140 / 90): ops may run until +13.75 s, which leaves it less than
    MIN_START_S after env's 2 or 10 s: skipped for time. models may run until +22 s: after env's 2 s it starts
    with a 1 s inner budget (its 30 s reserve leaves nothing, 1 s is the least) and models.py, on the same clock,
    skips all four models, listed: partial; after env's 10 s it is skipped too. Exit code 2 (incomplete) either
    way."""
    clock = FakeClock()
    args = argparse.Namespace(dry_run=True, budget=22, parts=['env', 'ops', 'models'], no_install=True)
    suite = gpu_suite.Suite(args, tmp_path, clock=clock)

    def part_env(deadline):
        clock.now += env_s
        return dict(status='ok', reason=None)

    def run(cmd, deadline):  # models.py in this process; its first reading of the clock sets its deadline
        commands.append(cmd)
        ticks = itertools.chain([clock.now], itertools.repeat(clock.now + 5))
        threads = torch.get_num_threads()
        try:
            assert bench_models.main(cmd[2:], clock=lambda: next(ticks)) == []
        finally:
            torch.set_num_threads(threads)
        clock.now += 5
        return 0, False
    commands = []
    suite.part_env, suite.probe, suite.run = part_env, lambda: dict(cuda=False, device=None), run
    assert suite.main() == 2
    report = json.loads((tmp_path / 'suite.json').read_text())
    parts = {p['name']: p for p in report['parts']}
    ops_left = 22 * 150 / 240 - env_s
    assert parts['ops'] == dict(name='ops', budget_s=round(ops_left, 1), status='skipped',
                                reason=f'{gpu_suite.TIME_BUDGET}: {ops_left:.0f} s left for it')
    models = parts['models']
    assert models['budget_s'] == 22 - env_s
    if env_s == 10:
        assert models['status'] == 'skipped' and models['reason'] == f'{gpu_suite.TIME_BUDGET}: 12 s left for it'
        assert commands == [] and report['meta']['elapsed_s'] == 10
        return
    assert commands[0][:4] == [sys.executable, 'benchmarks/models.py', '--time-budget', '1']
    assert models['status'] == 'partial' and models['elapsed_s'] == 5 and report['meta']['elapsed_s'] == 7
    skipped = [s['model'] for s in models['time_skipped']]
    assert skipped == SHORT_MODELS.split(',') and models['reason'] == '4 item(s) skipped for time'
    assert report['skipped'][:2] == [f"ops: skipped ({parts['ops']['reason']})",
                                     f"models: partial ({models['reason']})"]
    assert report['skipped'][2:] == [f'models: {m}: {gpu_suite.TIME_BUDGET}' for m in skipped]


def test_deadline_stops_a_part(tmp_path):
    """A part still running at its deadline gets SIGINT (not the SIGKILL that follows 15 s later)."""
    suite = gpu_suite.Suite(argparse.Namespace(dry_run=True, budget=5), tmp_path)
    rc, stopped = suite.run([sys.executable, '-c', 'import time; time.sleep(60)'], suite.clock() + 1)
    assert stopped and rc == -signal.SIGINT


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
