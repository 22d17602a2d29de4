"""attnzoo model families; importing this package registers every model with timm."""
from . import glnet, litv2, maxvit, nat, ravlt, transnext  # noqa: F401  (registration side effects)
