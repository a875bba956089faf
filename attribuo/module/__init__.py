"""Stochastic gates: differentiable L0 regularisation and feature selection.

Put a gate module in front of a model's input (or any layer), add the returned
penalty to the loss, and read ``get_gate_values()`` after training: gates of
useless features close to 0.
"""

from .binary_concrete_stochastic_gates import BinaryConcreteStochasticGates
from .gaussian_stochastic_gates import GaussianStochasticGates
from .stochastic_gates_base import StochasticGatesBase

__all__ = [
    "BinaryConcreteStochasticGates",
    "GaussianStochasticGates",
    "StochasticGatesBase",
]
