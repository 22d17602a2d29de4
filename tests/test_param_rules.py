"""Per-parameter optimizer rules (param_rules.py) through train.py's optimizer: the groups really get those lr and
weight-decay values, composed with timm's no-decay groups and layer-wise decay, and the schedule keeps them."""
from pathlib import Path

import pytest
import timm
import torch
import yaml
from timm.optim._param_groups import param_groups_layer_decay
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

import param_rules
import train
import zoo_common

ROOT = Path(__file__).resolve().parents[1]
LITV2 = dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8), num_classes=10)
RULES = "{'*.conv_offset.weight': {lr_mult: 0.01}, 'head.*': {lr_mult: 2, decay_mult: 0}}"


def _args(*argv):
    return zoo_common.parse_args(train.build_parser(), ['--opt', 'adamw', '--lr', '1e-3', '--weight-decay', '0.05',
                                                        *argv])


def _per_param(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}


def test_rules_set_lr_and_weight_decay_per_parameter():
    model = timm.create_model('litv2_small', **LITV2)
    optimizer = train._create_optimizer(model, _args('--param-rules', RULES))
    groups = _per_param(model, optimizer)
    assert len(groups) == len(list(model.parameters()))
    offsets = [n for n in groups if n.endswith('conv_offset.weight')]
    assert len(offsets) == 3
    for name, param in model.named_parameters():
        lr, wd = groups[name]['lr'], groups[name]['weight_decay']
        if name.endswith('conv_offset.weight'):  # the official OFFSET_LR_MULTI group: decayed, 1/100 of the lr
            assert (lr, wd) == (pytest.approx(1e-5), 0.05) and groups[name]['param_rule'] == '*.conv_offset.weight'
        elif name.startswith('head.'):  # decay_mult 0 also for the weight, lr x 2
            assert (lr, wd) == (pytest.approx(2e-3), 0.)
        else:  # timm's defaults: no decay for 1-D parameters and biases (the offset biases too), full lr
            assert (lr, wd) == (1e-3, 0. if param.ndim <= 1 else 0.05), name
            assert 'param_rule' not in groups[name]


def test_rules_compose_with_layer_decay_and_the_schedule():
    model = timm.create_model('litv2_small', **LITV2)
    args = _args('--lr', '1e-2', '--param-rules', RULES, '--layer-decay', '0.5', '--warmup-epochs', '1',
                 '--warmup-lr', '1e-6', '--min-lr', '1e-5', '--epochs', '4', '--sched-on-updates')
    optimizer = train._create_optimizer(model, args)
    groups = _per_param(model, optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    timm_scale = {names[id(p)]: g['lr_scale'] for g in param_groups_layer_decay(model, 0.05, layer_decay=0.5)
                  for p in g['params']}
    assert len(set(timm_scale.values())) > 3
    for name in groups:
        assert groups[name]['lr_scale'] == timm_scale[name], name
    scheduler, _ = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=10)
    offset = next(n for n in groups if n.endswith('conv_offset.weight'))
    plain = offset.replace('conv_offset.weight', 'weight')  # the deformable conv itself: same layer, no rule
    peak = {offset: 1e-2 * 0.01, plain: 1e-2}
    fractions = []
    for step, absolute in ((0, 1e-6), (25, None), (40, 1e-5)):  # warm-up start and min_lr stay absolute
        scheduler.step_update(step)
        for name in (offset, plain):
            lr = groups[name]['lr'] / timm_scale[name]
            if absolute is not None:
                assert lr == pytest.approx(absolute, rel=1e-6), (name, step)
            else:  # mid-cosine: the same fraction of the way from min_lr to each group's own peak
                fractions.append((lr - 1e-5) / (peak[name] - 1e-5))
    assert 0 < fractions[0] < 1 and fractions[0] == pytest.approx(fractions[1], rel=1e-6)


@pytest.mark.parametrize('spec, message', [
    ({'*.x': {'lr': 0.1}}, 'unknown keys lr'),
    ({'*.x': {'lr_mult': -1}}, 'lr_mult must be a number >= 0'),
    ({'*.x': 0.1}, 'expected a mapping with lr_mult'),
    (['*.x'], 'expected a mapping of parameter-name patterns'),
])
def test_bad_rules_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        param_rules.parse_rules(spec)


def test_train_refuses_rules_that_match_nothing(tmp_path, capsys):
    argv = ['--model', 'test_resnet', '-j', '0', '--param-rules', "{'*.conv_ofset.weight': {lr_mult: 0.01}}",
            '--output', tmp_path]
    assert zoo_common.run_cli(train.main, [str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "'*.conv_ofset.weight' match no trainable parameter" in err and not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        train.main(['--param-rules', '{a: ['])
    assert 'argument --param-rules: not YAML' in capsys.readouterr().err


def test_recipe_rules_match_their_models():
    """Every rule of every recipe matches parameters of the real model (built on the meta device)."""
    checked = 0
    for path in sorted((ROOT / 'configs' / 'imagenet').glob('*.yaml')):
        spec = (yaml.safe_load(path.read_text()) or {}).get('param_rules')
        if spec:
            with torch.device('meta'):
                model = timm.create_model(path.stem)
            groups = param_rules.param_groups(model, 1e-3, 0.05, param_rules.parse_rules(spec, str(path)))
            assert any('param_rule' in g for g in groups), path
            checked += 1
    assert checked >= 4  # LITv2's at least
