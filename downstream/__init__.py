"""COCO detection and ADE20K segmentation with zoo backbones through OpenMMLab (mmdet 3.x, mmseg 1.x).

``custom_imports = dict(imports=['downstream'])`` in a config registers :class:`AttnZooBackbone` and
:class:`AttnZooOptimWrapperConstructor` in the registries of whichever of mmdet and mmseg is installed, and lets
torch's ``weights_only`` loading read mmengine's own checkpoints (:mod:`downstream.safe_globals`), so mmdet's and
mmseg's own ``tools/train.py`` / ``tools/test.py`` (``mim train/test``, ``--resume``, ``load_from``) run zoo configs.
``python -m downstream.convert`` maps the families' official mmdet 2.x / mmseg 0.x checkpoints onto the zoo configs.
"""
import importlib

from .backbone import AttnZooBackbone
from .checkpoint import mmengine_safe_globals
from .optim import AttnZooOptimWrapperConstructor
from .safe_globals import allow_mmengine_checkpoints

__all__ = ['AttnZooBackbone', 'AttnZooOptimWrapperConstructor', 'mmengine_safe_globals', 'registered_scopes']

_INSTALL_HINT = ("pip install 'attnzoo[det]' and then build mmcv with: bash tools/install_mmcv.sh $(which python)")


def _register() -> list[str]:
    scopes = []
    for scope in ('mmdet', 'mmseg'):
        try:
            registry = importlib.import_module(f'{scope}.registry')
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.split('.')[0] == scope:
                continue  # that library is not installed: register with the other one only
            raise ImportError(f'{scope} is installed but cannot be imported ({e}); {_INSTALL_HINT}') from e
        registry.MODELS.register_module(module=AttnZooBackbone, force=True)
        registry.OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=AttnZooOptimWrapperConstructor, force=True)
        scopes.append(scope)
    if not scopes:
        raise ImportError(f'downstream needs mmdet or mmsegmentation; {_INSTALL_HINT}')
    return scopes


registered_scopes = _register()
allow_mmengine_checkpoints()
