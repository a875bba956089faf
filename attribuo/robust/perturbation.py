"""The base class every attack in :mod:`attribuo.robust` derives from."""

from __future__ import annotations

from typing import Any


class Perturbation:
    """An attack or perturbation: ``perturb(inputs, ...)`` returns perturbed inputs.

    Subclasses implement :meth:`perturb`; calling the object is the same as
    calling ``perturb``, so an attack can be handed anywhere a plain function
    of the inputs is expected (``AttackComparator``, ``MinParamPerturbation``).
    The result has the form of ``inputs``: a tensor for a tensor, a tuple for
    a tuple.

    Example:
        >>> import torch
        >>> from attribuo.robust import Perturbation
        >>> class AddOne(Perturbation):
        ...     def perturb(self, inputs):
        ...         return inputs + 1
        >>> AddOne()(torch.zeros(2))
        tensor([1., 1.])
    """

    def perturb(self, *args: Any, **kwargs: Any) -> Any:
        """Return the perturbed inputs; subclasses define the arguments."""
        raise NotImplementedError(f"{type(self).__name__} must implement `perturb`")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.perturb(*args, **kwargs)
