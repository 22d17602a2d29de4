"""Foundation tests: install, registry, train.py/validate.py end to end on the embedded data, resume, DDP, bad input.

All training here uses timm's tiny ``test_resnet`` at 32x32 on the embedded digits, one thread per process, so
the module stays within a few minutes on 2 cores. Tests share one xdist group: runs are reused between tests.
"""
import configparser
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from timm.models import model_entrypoint

import train
import validate
import zoo_common

pytestmark = pytest.mark.xdist_group('foundation')

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'test_resnet'
FAST = ['--model', MODEL, '-b', '32', '-j', '0', '--opt', 'adamw', '--lr', '2e-3', '--warmup-epochs', '0',
        '--hflip', '0', '--scale', '0.5', '1', '--no-plot']


def _env() -> dict[str, str]:
    """Subprocess environment: same thread count as this process (bit-exact comparisons), repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    return env


def _run(main, *argv) -> int:
    return zoo_common.run_cli(main, [str(a) for a in argv])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> Path:
    """A short real training run (3 epochs on 640 images) whose output folder the tests inspect."""
    out = tmp_path_factory.mktemp('train')
    rc = _run(train.main, *FAST, '--epochs', '3', '--train-num-samples', '640', '--output', out, '--experiment', 'run')
    assert rc == 0
    return out / 'run'


def test_installed_package(tmp_path):
    """`pip install -e .` happened with the extras, and the packages import from outside the repository."""
    assert importlib.metadata.metadata('attnzoo')['Name'] == 'attnzoo'
    requires = importlib.metadata.requires('attnzoo')
    assert any(r.startswith('timm') for r in requires)
    assert any('mmdet==3.3.0' in r and 'extra == "det"' in r for r in requires)
    assert any(r.startswith('pytest') and 'extra == "dev"' in r for r in requires)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    code = 'import backbones, downstream, ops, timm, zoo_common; assert timm.is_model("nat_mini"); print(ops.__file__)'
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()).parent == ROOT / 'ops'


def test_setup_cfg_lists_root_modules():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    py_modules = cfg['options']['py_modules'].split()
    assert 'zoo_common' in py_modules
    assert all((ROOT / f'{m}.py').is_file() for m in py_modules)


def test_embedded_dataset_split_is_fixed_and_disjoint():
    train_ds, val_ds = zoo_common.EmbeddedDigits('train'), zoo_common.EmbeddedDigits('validation')
    assert (len(train_ds), len(val_ds)) == (1433, 364)
    assert not set(train_ds.indices) & set(val_ds.indices)
    assert sorted(set(val_ds.targets)) == list(range(10))
    img, target = val_ds[0]
    assert img.size == (32, 32) and img.mode == 'RGB' and target == val_ds.targets[0]
    assert zoo_common.EmbeddedDigits('val').indices == val_ds.indices
    with pytest.raises(zoo_common.CliError, match='split'):
        zoo_common.EmbeddedDigits('holdout')


def test_train_beats_chance_and_writes_outputs(trained):
    history = json.loads((trained / 'summary.json').read_text())
    assert [row['epoch'] for row in history] == [0, 1, 2]
    assert history[-1]['eval_top1'] > 50.0, history  # chance is 10%
    assert history[-1]['train_loss'] < history[0]['train_loss']
    csv_lines = (trained / 'summary.csv').read_text().splitlines()
    assert csv_lines[0].startswith('epoch,lr,train_loss,eval_loss,eval_top1,eval_top5') and len(csv_lines) == 4
    for name in ('last.pth.tar', 'model_best.pth.tar', 'args.yaml'):
        assert (trained / name).is_file()
    assert not list(trained.glob('*.tmp')) and not (trained / 'tmp.pth.tar').exists()


def test_curves_png(trained, tmp_path):
    history = json.loads((trained / 'summary.json').read_text())
    train.plot_curves(history, str(tmp_path / 'curves.png'), 'test')
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_validate_reproduces_training_eval(trained, tmp_path):
    history = json.loads((trained / 'summary.json').read_text())
    best = max(history, key=lambda row: row['eval_top1'])
    results = tmp_path / 'results.csv'
    rows = validate.main(['--model', MODEL, '--checkpoint', str(trained / 'model_best.pth.tar'), '-j', '0',
                          '--results-file', str(results)])
    assert rows[0]['top1'] == pytest.approx(best['eval_top1'], abs=1e-3)
    assert rows[0]['loss'] == pytest.approx(best['eval_loss'], abs=1e-4)
    assert rows[0]['samples'] == 364 and rows[0]['img_per_s'] > 0 and rows[0]['peak_mem_mb'] > 0
    header, line = results.read_text().splitlines()
    assert header.startswith('model,top1,top5,loss,img_per_s,peak_mem_mb') and line.startswith(MODEL)


def test_pretrained_path_keeps_a_fresh_classifier_for_other_classes(trained):
    saved = zoo_common.read_checkpoint(str(trained / 'last.pth.tar'), 'test')['state_dict']
    model = timm.create_model(MODEL, num_classes=12)
    fresh_head = model.fc.weight.detach().clone()
    zoo_common.load_model_weights(model, str(trained / 'last.pth.tar'), '--pretrained-path', new_classifier=True)
    assert torch.equal(model.fc.weight, fresh_head)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if not k.startswith('fc.'))
    with pytest.raises(zoo_common.CliError, match="does not match model 'test_resnet'.*fc.weight"):
        zoo_common.load_model_weights(timm.create_model(MODEL, num_classes=12), str(trained / 'last.pth.tar'), 'x')


def test_validate_wildcard_lists_models():
    rows = validate.main(['--model', 'test_convnext*', '-j', '0', '--num-samples', '16', '-b', '16'])
    assert [row['model'] for row in rows] == ['test_convnext', 'test_convnext2', 'test_convnext3']


def test_resume_after_kill_is_exact(tmp_path):
    """2 epochs straight == 1 epoch, SIGKILL mid-epoch 2, resume: same weights, optimizer and EMA, bit for bit."""
    args = [*FAST, '--epochs', '2', '--train-num-samples', '256', '--val-num-samples', '64', '--output', tmp_path,
            '--mixup', '0.8', '--cutmix', '1.0', '--aa', 'rand-m9-mstd0.5-inc1', '--reprob', '0.25',
            '--drop-path', '0.1', '--model-ema', '--model-ema-decay', '0.9', '--grad-accum-steps', '2',
            '--sched-on-updates', '--warmup-epochs', '1', '-j', '1']
    assert _run(train.main, *args, '--experiment', 'straight') == 0

    killed = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), *map(str, args), '--experiment', 'killed'],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 600
    while not (killed / 'last.pth.tar').exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert zoo_common.read_checkpoint(str(killed / 'last.pth.tar'), 'test')['epoch'] == 0

    assert _run(train.main, *args, '--resume', killed / 'last.pth.tar') == 0
    straight = zoo_common.read_checkpoint(str(tmp_path / 'straight' / 'last.pth.tar'), 'test')
    resumed = zoo_common.read_checkpoint(str(killed / 'last.pth.tar'), 'test')
    assert resumed['epoch'] == straight['epoch'] == 1
    for key in ('state_dict', 'state_dict_ema'):
        assert straight[key].keys() == resumed[key].keys()
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), f'{key}.{name} differs after resume'
    for a, b in zip(straight['optimizer']['state'].values(), resumed['optimizer']['state'].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    timing = ('img_per_s', 'epoch_time_s')
    logged = [json.loads((killed / 'summary.json').read_text()), straight['history'], resumed['history']]
    logged = [[{k: v for k, v in row.items() if k not in timing} for row in rows] for rows in logged]
    assert logged[0] == logged[1] == logged[2]


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes (repeated augmentation): rank 0 alone writes, and the reduced eval matches a
    1-process validate."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
           str(ROOT / 'train.py'), *FAST, '-b', '16', '--epochs', '1', '--train-num-samples', '128',
           '--aug-repeats', '3', '--val-num-samples', '101', '--log-interval', '1', '--output', str(tmp_path),
           '--experiment', 'ddp']
    env = _env()
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / 'ddp.log').write_text(result.stdout)  # captured: not a terminal, so progress comes as log lines
    progress = [ln for ln in (tmp_path / 'ddp.log').read_text().splitlines() if ln.startswith('epoch 1 [')]
    assert len(progress) >= 2 and all('img/s' in ln and 'ETA' in ln for ln in progress), result.stdout[-2000:]
    assert 'Repeated augmentation: each image 3 times, the copies spread over the 2 process(es)' in result.stdout
    run = tmp_path / 'ddp'
    history = json.loads((run / 'summary.json').read_text())
    assert len(history) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ddp', 'ddp.log']  # rank 1 wrote nothing
    rows = validate.main(['--model', MODEL, '--checkpoint', str(run / 'last.pth.tar'), '-j', '0',
                          '--num-samples', '101'])
    assert rows[0]['top1'] == pytest.approx(history[0]['eval_top1'], abs=1e-3)
    assert rows[0]['loss'] == pytest.approx(history[0]['eval_loss'], abs=1e-4)


class _Indices(torch.utils.data.Dataset):
    transform = None

    def __len__(self):
        return 600

    def __getitem__(self, i):
        return torch.tensor(i), 0


@pytest.mark.parametrize('world_size', [1, 2])
def test_repeated_augmentation_loader(world_size):
    """--aug-repeats 3 (DeiT's RASampler through timm): each chosen image 3 times per epoch, its copies on different
    ranks, 256-rounded epoch length (512 of 600), reshuffled by set_epoch; also on one process."""
    args = zoo_common.parse_args(train.build_parser(), ['--aug-repeats', '3', '-j', '0', '-b', '8'])
    seen = []
    for rank in range(world_size):
        args.world_size, args.rank = world_size, rank
        loader = train._build_loader(_Indices(), None, 8, args, True, torch.device('cpu'))
        assert len(loader.sampler) == 512 // world_size and len(loader) == 512 // world_size // 8
        epochs = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            epochs.append([int(i) for x, _ in loader for i in x])
        assert epochs[0] != epochs[1]
        seen.append(epochs[0])
    counts = np.bincount(np.concatenate(seen), minlength=600)
    assert set(counts[counts > 0]) <= {1, 2, 3} and (counts == 3).sum() >= 500 // 3 - 1
    if world_size == 2:  # a repeated image lands on both ranks in the same epoch
        assert len(set(seen[0]) & set(seen[1])) > 100


# ---- bad input: one clear line on stderr, exit status 2, no good checkpoint touched ----

@pytest.mark.parametrize('argv, message', [
    (['--data-dir', '/nonexistent/attnzoo'], 'no such directory'),
    (['--model', 'test_resnett'], 'unknown model (did you mean test_resnet'),
    (['--config', '/nonexistent.yaml'], '--config /nonexistent.yaml: cannot read'),
    (['--batch-size', '31', '--mixup', '0.8'], 'must be even'),
    (['--initial-checkpoint', '/nonexistent.pth'], 'no such file'),
])
def test_train_bad_arguments(argv, message, capsys, tmp_path):
    assert _run(train.main, *FAST, '--epochs', '1', '--output', tmp_path, *argv) == 2
    assert message in _error_line(capsys)
    assert not list(tmp_path.rglob('*.pth.tar'))


def test_train_empty_data_dir(tmp_path, capsys):
    (tmp_path / 'data' / 'train').mkdir(parents=True)
    (tmp_path / 'data' / 'validation').mkdir()
    assert _run(train.main, *FAST, '--data-dir', tmp_path / 'data', '--output', tmp_path) == 2
    line = _error_line(capsys)
    assert '--data-dir' in line and 'Found 0 images' in line


def test_train_refuses_a_data_dir_without_a_validation_folder(tmp_path, capsys):
    """timm would fall back to the root folder, validating on the training images: refuse instead."""
    (tmp_path / 'data' / 'train' / 'cat').mkdir(parents=True)
    assert _run(train.main, *FAST, '--data-dir', tmp_path / 'data', '--output', tmp_path) == 2
    line = _error_line(capsys)
    assert '--val-split validation' in line and 'no validation/val/' in line


def test_train_config_values_obey_choices(tmp_path, capsys):
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text('model: test_resnet\namp_dtype: float32\n')
    assert _run(train.main, '--config', cfg, '--output', tmp_path) == 2
    assert "amp_dtype='float32' is not one of" in _error_line(capsys)


def test_train_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text('model: test_resnet\nlearning_rate: 0.1\n')
    assert _run(train.main, '--config', cfg, '--output', tmp_path) == 2
    assert 'unknown keys learning_rate' in _error_line(capsys)


def test_train_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    assert _run(train.main, *FAST, '--epochs', '1', '--output', blocker / 'sub') == 2
    assert 'not writable' in _error_line(capsys)


def test_bad_checkpoints_never_overwrite_good_ones(trained, tmp_path, capsys):
    run = tmp_path / 'run'
    shutil.copytree(trained, run)
    before = {p.name: _digest(p) for p in run.glob('*.pth.tar')}
    good = (run / 'last.pth.tar').read_bytes()
    (run / 'truncated.pth.tar').write_bytes(good[:len(good) // 2])
    (run / 'garbage.pth.tar').write_bytes(b'not a checkpoint at all')
    cases = [
        (['--resume', run / 'truncated.pth.tar'], 'not a readable checkpoint'),
        (['--resume', run / 'garbage.pth.tar'], 'not a readable checkpoint'),
        (['--resume', run / 'last.pth.tar', '--model', 'test_convnext'], "does not match model 'test_convnext'"),
        (['--initial-checkpoint', run / 'last.pth.tar', '--model', 'test_convnext'], 'does not match model'),
        (['--output', tmp_path, '--experiment', 'run'], 'already holds a run'),
        (['--resume', run / 'last.pth.tar', '--param-rules', "{'*.bias': {lr_mult: 2}}"],
         'its optimizer does not fit this run'),
    ]
    for argv, message in cases:
        assert _run(train.main, *FAST, '--epochs', '5', '--train-num-samples', '64', *argv) == 2
        assert message in _error_line(capsys), argv
        assert {p.name: _digest(p) for p in run.glob('*.pth.tar') if p.name in before} == before


def test_validate_bad_input(trained, tmp_path, capsys):
    assert _run(validate.main, '--model', 'test_convnext', '--checkpoint', trained / 'last.pth.tar', '-j', '0') == 2
    line = _error_line(capsys)
    assert "does not match model 'test_convnext'" in line and 'missing keys' in line
    assert _run(validate.main, '--model', 'no_such_model_*') == 2
    assert 'no registered model matches' in _error_line(capsys)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'\x00' * 64)
    assert _run(validate.main, '--model', MODEL, '--checkpoint', garbage) == 2
    assert 'not a readable checkpoint' in _error_line(capsys)
    assert _run(validate.main, '--model', MODEL, '--checkpoint', trained / 'last.pth.tar', '--use-ema', '-j', '0') == 2
    assert '--use-ema: the checkpoint holds no EMA weights' in _error_line(capsys)


def test_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--model', 'no_such_model', '--output',
                             str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    errors = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1 and errors[0].startswith('train.py: error: --model no_such_model: unknown model')


# ---- recipes and README ----

def test_recipes_parse_and_name_registered_models():
    configs = sorted((ROOT / 'configs' / 'imagenet').glob('*.yaml')) + [ROOT / 'configs' / 'demo.yaml']
    assert len(configs) > 1
    for path in configs:
        args = zoo_common.parse_args(train.build_parser(), ['--config', str(path)])
        assert timm.is_model(args.model) and args.epochs > 0, path
        if path.parent.name == 'imagenet':
            assert path.stem == args.model and model_entrypoint(args.model).__module__.startswith('backbones.')


def test_readme_model_table_is_current():
    import gen_model_table

    registered = gen_model_table.zoo_models()
    published = gen_model_table.read_published()
    table = gen_model_table.render_table(published, registered)
    assert all(f'| `{name}' in table for name in registered)
    assert all(f"| `{row['model']}` |" in table for row in published)
    readme = (ROOT / 'README.md').read_text()
    assert gen_model_table.update_readme(readme, table) == readme, 'run `python tools/gen_model_table.py`'


# ---- timm's train.py / validate.py level (issue 9 §2) ----

TINY_NAT = ['--model', 'nat_mini', '--model-kwargs', 'depths=(1,1,1,1)', 'embed_dim=16', 'num_heads=(1,1,2,2)',
            '-b', '16', '-j', '0', '--opt', 'adamw', '--lr', '1e-3', '--warmup-epochs', '0', '--no-plot']


def test_defaults_are_the_zoos():
    from _zoo import num_params, zoo_models

    args = zoo_common.parse_args(train.build_parser(), [])
    assert args.model == zoo_common.DEFAULT_MODEL and num_params(args.model) == min(map(num_params, zoo_models()))
    assert zoo_common.parse_args(validate.build_parser(), []).model == zoo_common.DEFAULT_MODEL
    assert 1 <= args.workers <= min(4, len(os.sched_getaffinity(0)))
    assert args.checkpoint_hist == 10  # timm's
    args = zoo_common.parse_args(train.build_parser(), ['--sync-bn', '--aug-repeats', '3', '--bce-loss',
                                                        '--torchcompile-mode', 'max-autotune'])
    assert args.sync_bn and args.aug_repeats == 3 and args.bce_loss and args.torchcompile_mode == 'max-autotune'


def test_train_zoo_model_bf16_channels_last_grad_checkpointing(tmp_path, capsys):
    """A zoo model through train.py with CPU bf16 autocast, channels-last, gradient checkpointing, BCE loss,
    repeated augmentation, per-parameter rules with layer decay; without a terminal the progress is logged as lines
    every --log-interval updates."""
    argv = [*TINY_NAT, '--epochs', '1', '--train-num-samples', '64', '--val-num-samples', '32', '--amp',
            '--amp-dtype', 'bfloat16', '--channels-last', '--grad-checkpointing', '--bce-loss', '--aug-repeats', '2',
            '--param-rules', "{'*.rpb': {decay_mult: 1.0}}", '--layer-decay', '0.8',
            '--log-interval', '2', '--output', tmp_path, '--experiment', 'run']
    assert _run(train.main, *argv) == 0
    history = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert len(history) == 1 and all(map(math.isfinite, (history[0]['train_loss'], history[0]['eval_loss'])))
    out = capsys.readouterr().out
    assert 'parameter groups, layer decay 0.8' in out and "weight_decay 2e-05  rule '*.rpb'" in out, out[:3000]
    lines = [ln for ln in out.splitlines() if ln.startswith('epoch 1 [')]
    assert lines and all('loss' in ln and 'img/s' in ln and 'data' in ln and 'ETA' in ln for ln in lines), lines
    args = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    assert args['model'] == 'nat_mini' and args['amp_dtype'] == 'bfloat16'


def test_train_torch_compile_zoo_model(tmp_path):
    argv = [*TINY_NAT, '--epochs', '1', '--train-num-samples', '32', '--val-num-samples', '16',
            '--torch-compile', 'aot_eager', '--output', tmp_path, '--experiment', 'run']
    assert _run(train.main, *argv) == 0
    assert math.isfinite(json.loads((tmp_path / 'run' / 'summary.json').read_text())[0]['train_loss'])


def test_sync_bn_refused_on_cpu(tmp_path, capsys):
    assert _run(train.main, *FAST, '--epochs', '1', '--sync-bn', '--device', 'cpu', '--output', tmp_path) == 2
    assert '--sync-bn needs CUDA' in _error_line(capsys)


_NAN_ON_RANK_1 = '''
import os, sys, torch
sys.path.insert(0, sys.argv.pop(1))
import train, zoo_common
make = train._create_mixup_and_loss
def poisoned(args):
    mixup, loss = make(args)
    if os.environ["RANK"] != "1":
        return mixup, loss
    class NaNAfterFirstStep(torch.nn.Module):
        calls = 0
        def forward(self, out, y):
            self.calls += 1
            return loss(out, y) * (float("nan") if self.calls > 1 else 1.0)
    return mixup, NaNAfterFirstStep()
train._create_mixup_and_loss = poisoned
sys.exit(zoo_common.run_cli(train.main))
'''


def test_ddp_divergence_on_one_rank_stops_all(tmp_path):
    """A NaN loss on rank 1 only: both ranks agree at the next log step and exit with the error, none hangs."""
    script = tmp_path / 'nan_rank1.py'
    script.write_text(_NAN_ON_RANK_1)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', str(script),
           str(ROOT), *FAST, '-b', '8', '--epochs', '1', '--train-num-samples', '64', '--val-num-samples', '16',
           '--log-interval', '2', '--output', str(tmp_path), '--experiment', 'nan']
    env = _env()
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if 'error: training diverged' in ln]
    assert any('[rank 0]' in ln for ln in errors) and any('[rank 1]' in ln for ln in errors), result.stderr[-3000:]
    assert not (tmp_path / 'nan' / 'last.pth.tar').exists()


def test_validate_retry_test_pool_log_freq_and_compile(tmp_path, monkeypatch, capsys):
    real = zoo_common.evaluate_sums

    def oom_above_8(model, loader, *args, **kwargs):
        if loader.batch_size > 8:
            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(zoo_common, 'evaluate_sums', oom_above_8)
    base = ['--model', MODEL, '-j', '0', '--num-samples', '24', '--log-freq', '1']
    with pytest.raises(RuntimeError, match='out of memory'):
        validate.main([*base, '-b', '32'])
    rows = validate.main([*base, '-b', '32', '--retry'])
    assert rows[0]['batch_size'] == 8 and rows[0]['samples'] == 24
    out = capsys.readouterr().out.splitlines()
    assert f'{MODEL}: out of memory, retrying with batch size 16' in out
    assert [ln.split(']')[0] for ln in out if ln.startswith(f'{MODEL}: [')] == [f'{MODEL}: [{i}/3' for i in (1, 2, 3)]
    monkeypatch.setattr(zoo_common, 'evaluate_sums', real)

    # test-time pooling above the cfg size: the zoo's NAT supports it, MaxViT's head (norm after pooling) does not
    tiny = ['--model-kwargs', 'depths=(1,1,1,1)', 'embed_dim=16', 'num_heads=(1,1,2,2)', '--num-classes', '10']
    rows = validate.main(['--model', 'nat_mini', *tiny, '-j', '0', '--num-samples', '4', '-b', '4', '--img-size',
                          '256', '--test-pool'])
    assert rows[0]['test_time_pool'] is True and rows[0]['img_size'] == 256
    rows = validate.main(['--model', 'nat_mini', *tiny, '-j', '0', '--num-samples', '4', '--test-pool'])
    assert rows[0]['test_time_pool'] is False  # 32 px digits: below the cfg's 224, nothing to pool
    with pytest.raises(zoo_common.CliError, match='--test-pool: maxvit_na_tiny_tf_224 does not support'):
        validate.main(['--model', 'maxvit_na_tiny_tf_224', '-j', '0', '--num-samples', '4', '--test-pool'])
    rows = validate.main(['--model', 'nat_mini', *tiny, '-j', '0', '--num-samples', '8', '--torchcompile',
                          'aot_eager'])
    assert rows[0]['samples'] == 8 and math.isfinite(rows[0]['loss'])
