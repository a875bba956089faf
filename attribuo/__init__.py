"""attribuo: model interpretability for PyTorch with Captum's public API."""

from . import _compat

__version__ = "0.1.0"

_compat.install()


def __getattr__(name: str):  # re-exported lazily: `import attribuo` stays torch-free
    if name == "compile_forward":
        from .compiled import compile_forward

        return compile_forward
    if name == "incremental_evaluation":
        from ._engine.incremental import incremental_evaluation

        return incremental_evaluation
    raise AttributeError(f"module 'attribuo' has no attribute {name!r}")
