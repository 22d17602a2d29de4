"""Optimizer parameter groups for detectors/segmentors with an :class:`AttnZooBackbone`."""

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from .backbone import AttnZooBackbone


class AttnZooOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus the zoo backbone's own rules.

    ``paramwise_cfg`` takes everything mmengine's default constructor takes (``custom_keys``, ``norm_decay_mult``,
    ``bias_decay_mult``, ...) and two more keys:

    * ``backbone_no_weight_decay`` (default True): no weight decay for the parameters the backbone's classification
      model lists in ``no_weight_decay()`` (relative-position tables, position embeddings), whatever the family.
    * ``layer_decay_rate`` (default None): layer-wise lr decay over the backbone (BEiT rule, layers from the model's
      ``group_matcher``): lr = base_lr * rate ** (layers below the backbone's top layer); necks and heads keep the
      base lr.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.backbone_no_weight_decay = paramwise_cfg.pop('backbone_no_weight_decay', True)
        self.layer_decay_rate = paramwise_cfg.pop('layer_decay_rate', None)
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
            if self.backbone_no_weight_decay and no_decay and self.base_wd is not None:
                group['weight_decay'] = 0.
                print_log(f'paramwise_options -- {full_name}:weight_decay=0.0 (backbone no_weight_decay)',
                          logger='current')
            if self.layer_decay_rate is not None:
                group['lr'] = group.get('lr', self.base_lr) * self.layer_decay_rate ** layers_below_top
