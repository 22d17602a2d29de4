"""attnzoo model families; importing this package registers every model with timm."""
from . import glnet, l2vit, litv2, maxvit, nat, ravlt  # noqa: F401  (registration side effects)
