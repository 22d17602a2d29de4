"""Per-parameter optimizer rules: a learning-rate multiplier and a weight-decay multiplier by parameter-name pattern.

The rules say what mmengine's ``paramwise_cfg.custom_keys`` say, for ``train.py`` (``param_rules`` in a recipe YAML
or ``--param-rules``) and for the detection/segmentation configs (``paramwise_cfg=dict(param_rules=...)`` of
:class:`downstream.AttnZooOptimWrapperConstructor`), with one syntax and one meaning::

    param_rules:
      '*.conv_offset.weight': {lr_mult: 0.01}  # LITv2: DTM offset convs at 1/100 of the lr (official OFFSET_LR_MULTI)
      '*.rpb': {decay_mult: 1.0}               # NAT: weight decay on the position-bias tables, as the official run

* A pattern is a glob (``fnmatch``, case-sensitive) over the full parameter name (``model.named_parameters()``);
  the first rule that matches a parameter applies (YAML / dict order).
* A matched parameter gets ``lr * lr_mult`` and ``weight_decay * decay_mult`` (both default 1). The rule decides its
  decay, over the default no-decay set (1-D parameters, biases, the model's ``no_weight_decay()``), as a mmengine
  custom key does; unmatched parameters keep the defaults (timm's in train.py, mmengine's in the configs).
* ``lr_mult`` sets the group's peak lr; warm-up start and minimum lr stay absolute, so such a group anneals from
  ``lr * lr_mult`` to ``min_lr`` (timm's and mmengine's schedulers, and the official Swin-codebase recipes that use
  such a group). timm's layer-wise decay (``--layer-decay``, BEiT's rule) composes: its ``lr_scale`` scales the
  whole schedule of each group on top.
* A pattern that matches no trainable parameter is an error: a typo would otherwise train the default recipe.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

_FIELDS = ('lr_mult', 'decay_mult')


@dataclass(frozen=True)
class ParamRule:
    pattern: str
    lr_mult: float = 1.
    decay_mult: float = 1.

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)

    def __str__(self) -> str:
        parts = [f'{field} {getattr(self, field):g}' for field in _FIELDS if getattr(self, field) != 1.]
        return f"'{self.pattern}' ({', '.join(parts) or 'defaults'})"


def parse_rules(spec: Mapping[str, Mapping[str, float]] | None, source: str = 'param_rules') -> list[ParamRule]:
    """``{pattern: {lr_mult: x, decay_mult: y}}`` (None or empty: no rules) -> rules, with errors naming ``source``."""
    if not spec:
        return []
    if not isinstance(spec, Mapping):
        raise ValueError(f"{source}: expected a mapping of parameter-name patterns to {{lr_mult, decay_mult}}, "
                         f'got {type(spec).__name__}')
    rules = []
    for pattern, values in spec.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f'{source}: a pattern must be a non-empty string, got {pattern!r}')
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} '{pattern}': expected a mapping with lr_mult and/or decay_mult, got {values!r}")
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{source} '{pattern}': unknown keys {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(_FIELDS)})")
        for field, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{source} '{pattern}': {field} must be a number >= 0, got {value!r}")
        rules.append(ParamRule(pattern, **{k: float(v) for k, v in values.items()}))
    return rules


def first_match(rules: Iterable[ParamRule], name: str) -> ParamRule | None:
    return next((rule for rule in rules if rule.matches(name)), None)


def check_all_used(rules: Iterable[ParamRule], names: Iterable[str], what: str, source: str = 'param_rules') -> None:
    """Raise when a rule matches none of ``names`` (the trainable parameters of ``what``)."""
    names = list(names)
    unused = [rule.pattern for rule in rules if not any(rule.matches(n) for n in names)]
    if unused:
        example = next(iter(names), '')
        raise ValueError(f"{source}: {', '.join(repr(p) for p in unused)} match no trainable parameter of {what} "
                         f"(patterns are globs over full names such as '{example}')")


def param_groups(
        model: nn.Module,
        lr: float,
        weight_decay: float,
        rules: list[ParamRule],
        layer_decay: float | None = None,
        layer_decay_min_scale: float = 0.,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: timm's default groups (no decay for 1-D parameters and the model's
    ``no_weight_decay()``; with ``layer_decay`` timm's layer-wise ``lr_scale``), then ``rules`` on top.

    Parameters in one default group that the same rule matches stay together; a matched group carries its
    ``lr`` and ``param_rule`` (the pattern, for the log). Use as ``create_optimizer_v2(param_group_fn=...)``.
    """
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    no_weight_decay = getattr(model, 'no_weight_decay', lambda: set())()
    if layer_decay is not None:
        base = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_weight_decay,
                                        layer_decay=layer_decay, min_scale=layer_decay_min_scale)
    else:
        base = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    check_all_used(rules, [names[id(p)] for g in base for p in g['params']], type(model).__name__)
    groups: dict[tuple, dict[str, Any]] = {}
    for index, group in enumerate(base):
        for param in group['params']:
            rule = first_match(rules, names[id(param)])
            key = (index, rule)
            if key not in groups:
                groups[key] = {k: v for k, v in group.items() if k != 'params'}
                groups[key]['params'] = []
                if rule is not None:
                    groups[key].update(lr=lr * rule.lr_mult, weight_decay=weight_decay * rule.decay_mult,
                                       param_rule=rule.pattern)
            groups[key]['params'].append(param)
    return list(groups.values())


def describe_groups(param_groups: list[dict[str, Any]], names: Mapping[int, str]) -> list[str]:
    """One line per optimizer group: size, lr (x lr_scale), weight decay, the rule and a few parameter names."""
    lines = []
    for i, group in enumerate(param_groups):
        params = group['params']
        numel = sum(p.numel() for p in params)
        scale = f' x lr_scale {group["lr_scale"]:.3g}' if group.get('lr_scale', 1.) != 1. else ''
        rule = f"  rule '{group['param_rule']}'" if group.get('param_rule') else ''
        shown = [names.get(id(p), '?') for p in params[:2]]
        more = f' +{len(params) - 2} more' if len(params) > 2 else ''
        lines.append(f'  group {i}: {len(params)} tensors ({numel / 1e6:.3f}M)  lr {group["lr"]:.3g}{scale}  '
                     f'weight_decay {group["weight_decay"]:g}{rule}  [{", ".join(shown)}{more}]')
    return lines
