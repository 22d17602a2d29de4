"""attnzoo model families; importing this package registers every model with timm."""
from . import maxvit, nat  # noqa: F401  (registration side effects)
