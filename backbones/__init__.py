"""attnzoo model families; importing this package registers every model with timm (:mod:`backbones._family`)."""
from . import (  # noqa: F401  (registration side effects)
    agent,
    biformer,
    glnet,
    inline,
    l2vit,
    litv2,
    maxvit,
    moat,
    nat,
    ravlt,
    transnext,
)
from ._family import FAMILIES, Family, Variant, family_of  # noqa: F401
