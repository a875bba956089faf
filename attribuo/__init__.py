"""attribuo: model interpretability for PyTorch with Captum's public API."""

from . import _compat

__version__ = "0.1.0"

_compat.install()
