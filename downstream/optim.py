"""Optimizer parameter groups for detectors/segmentors with an :class:`AttnZooBackbone`."""

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

import param_rules

from .backbone import AttnZooBackbone


class AttnZooOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus the zoo backbone's own rules.

    ``paramwise_cfg`` takes everything mmengine's default constructor takes (``custom_keys``, ``norm_decay_mult``,
    ``bias_decay_mult``, ...) and three more keys:

    * ``backbone_no_weight_decay`` (default True): no weight decay for the parameters the backbone's classification
      model lists in ``no_weight_decay()`` (relative-position tables, position embeddings), whatever the family.
    * ``layer_decay_rate`` (default None): layer-wise lr decay over the backbone (BEiT rule, layers from the model's
      ``group_matcher``): lr = base_lr * rate ** (layers below the backbone's top layer); necks and heads keep the
      base lr.
    * ``param_rules`` (default None): the per-parameter rules of ``train.py``'s recipes (:mod:`param_rules`: globs
      over the full parameter names of the detector/segmentor, e.g. ``'backbone.*.conv_offset.weight'``, the first
      match wins, ``lr = base_lr * lr_mult``, ``weight_decay = base_wd * decay_mult``). For the parameters they match
      they replace what ``custom_keys`` and ``backbone_no_weight_decay`` decided; ``layer_decay_rate`` applies on top.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.backbone_no_weight_decay = paramwise_cfg.pop('backbone_no_weight_decay', True)
        self.layer_decay_rate = paramwise_cfg.pop('layer_decay_rate', None)
        self.param_rules = param_rules.parse_rules(paramwise_cfg.pop('param_rules', None), 'paramwise_cfg.param_rules')
        if self.layer_decay_rate is not None and not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got {self.layer_decay_rate}')
        if not paramwise_cfg:
            # An empty paramwise_cfg makes mmengine pass model.parameters() as one group; ask for per-param groups.
            paramwise_cfg['bypass_duplicate'] = False
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '', is_dcn_module=None) -> None:
        super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
        if prefix:  # only the root call post-processes the finished groups
            return
        self._apply_param_rules(params, module)
        rules = {}
        for name, sub in module.named_modules():
            if isinstance(sub, AttnZooBackbone):
                info = sub.param_group_info(layer_decay=self.layer_decay_rate is not None)
                for param_name, param in sub.named_parameters():
                    rules[id(param)] = (f'{name}.{param_name}' if name else param_name, *info[param_name])
        for group in params:
            rule = rules.get(id(group['params'][0]))
            if rule is None:
                continue
            full_name, no_decay, layers_below_top = rule
            if self.backbone_no_weight_decay and no_decay and self.base_wd is not None and 'param_rule' not in group:
                group['weight_decay'] = 0.
                print_log(f'paramwise_options -- {full_name}:weight_decay=0.0 (backbone no_weight_decay)',
                          logger='current')
            if self.layer_decay_rate is not None:
                group['lr'] = group.get('lr', self.base_lr) * self.layer_decay_rate ** layers_below_top

    def _apply_param_rules(self, params: list[dict], module: nn.Module) -> None:
        if not self.param_rules:
            return
        names = {id(p): n for n, p in module.named_parameters()}
        trainable = [names[id(g['params'][0])] for g in params if g['params'][0].requires_grad]
        param_rules.check_all_used(self.param_rules, trainable, type(module).__name__, 'paramwise_cfg.param_rules')
        for group in params:
            name = names[id(group['params'][0])]
            rule = param_rules.first_match(self.param_rules, name)
            if rule is None:
                continue
            group.update(lr=self.base_lr * rule.lr_mult, param_rule=rule.pattern)
            if self.base_wd is not None:
                group['weight_decay'] = self.base_wd * rule.decay_mult
            print_log(f"paramwise_options -- {name}:lr={group['lr']}, weight_decay={group.get('weight_decay')} "
                      f"(param_rules '{rule.pattern}')", logger='current')
