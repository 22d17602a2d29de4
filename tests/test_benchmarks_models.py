"""Smoke test of benchmarks/models.py: a tiny CPU run writes its results, MaxViT gets its timm twin's weights."""
import json
import statistics

import pytest
import torch

from benchmarks import models as bench
from zoo_common import CliError


def test_unknown_model_is_a_clear_error():
    with pytest.raises(CliError, match='nat_tinyy: unknown model.*nat_tiny'):
        bench.resolve_models('nat_tinyy', max_params_m=35., peers=False)
    with pytest.raises(CliError, match='no registered model matches'):
        bench.resolve_models('no_such_family_*', max_params_m=35., peers=False)


def test_selection_adds_peers_and_twins():
    names = bench.resolve_models('maxvit_na_tiny_tf_224,nat_mini', max_params_m=35., peers=True)
    assert names[:3] == list(bench.PEERS)
    assert names[3:] == ['maxvit_na_tiny_tf_224', 'nat_mini']  # the twin maxvit_tiny_tf_224 is already a peer
    assert bench.timm_twin('maxvit_na_tiny_tf_224') == 'maxvit_tiny_tf_224'
    assert bench.timm_twin('nat_mini') is None and bench.timm_twin('convnext_tiny') is None
    assert bench.resolve_models('dinat_s_[lt]*', max_params_m=35., peers=False) == ['dinat_s_tiny']


@pytest.mark.parametrize('rounds', [1, 2])
def test_tiny_cpu_run(tmp_path, rounds):
    # one thread (as under xdist); the backbone run at the benchmark size, so no model is built twice; rounds 1: one
    # model after another, rounds 2: both models kept and timed in turn
    threads = torch.get_num_threads()
    try:
        rows = bench.main(['--models', 'maxvit_na_tiny_tf_224', '--no-peers', '--img-size', '32', '--batch-size',
                           '2', '--iters', '1', '--warmup', '0', '--full', '--backbone-size', '32', '--threads', '1',
                           '--rounds', str(rounds), '--out-dir', str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert [r['model'] for r in rows] == ['maxvit_na_tiny_tf_224', 'maxvit_tiny_tf_224']
    ours = rows[0]
    assert ours['twin_diff_fp32']['max_abs'] < 1e-4  # the same weights through backbones.checkpoint.fit
    for row in rows:
        for mode in bench.MODES:
            assert 'error' not in row[mode] and row[mode]['img_s'] > 0, (row['model'], mode, row[mode])
    assert ours['kwargs'] == {'img_size': 32} and ours['backbone']['img_size'] == 32
    for mode in ('infer', 'train'):  # img/s from the median over the rounds, every round timed
        times = ours[mode].get('rounds_ms', [ours[mode]['ms']])
        assert len(times) == rounds and ours[mode]['img_s'] == pytest.approx(2e3 / statistics.median(times))
    saved = json.loads((tmp_path / 'models.json').read_text())
    assert saved['meta']['settings']['batch_size'] == 2 and len(saved['rows']) == 2
    assert saved['ratios'][0]['peer'] == 'maxvit_tiny_tf_224' and saved['ratios'][0]['same_weights']
    md = (tmp_path / 'models.md').read_text()
    assert '| maxvit_na_tiny_tf_224 | maxvit_tiny_tf_224 (same weights) |' in md
    assert (tmp_path / 'models.png').stat().st_size > 0


def test_bad_arguments(tmp_path):
    with pytest.raises(CliError, match='--iters must be >= 1'):
        bench.main(['--models', 'nat_mini', '--iters', '0', '--out-dir', str(tmp_path)])
    with pytest.raises(CliError, match='--models: no model given'):
        bench.main(['--models', ' , ', '--out-dir', str(tmp_path)])
