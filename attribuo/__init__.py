"""attribuo: model interpretability for PyTorch with Captum's public API."""

__version__ = "0.1.0"
