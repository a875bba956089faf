"""Shared pieces of the sampling metrics (infidelity, sensitivity_max).

Both metrics draw ``n_perturb_samples`` perturbations per example in chunks.
The chunk sizes follow Captum's rule exactly, because a user's perturbation
function draws random numbers per call: the same seed only gives the same
numbers when the function is called on the same shapes in the same order.
"""

from __future__ import annotations

from torch import Tensor

from .._engine.batching import chunks
from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import positive_int


def sample_chunks(n_samples: int, batch: int, max_examples_per_batch: int | None) -> list[int]:
    """Samples per example in each evaluation, in order.

    ``max_examples_per_batch`` bounds the expanded batch (``batch * samples``);
    every chunk holds at least one sample of every example, so a bound below
    the batch size still evaluates one sample per example at a time.
    """
    n_samples = positive_int(n_samples, "n_perturb_samples")
    pieces = chunks(n_samples, None, examples=max_examples_per_batch, batch=batch, name="max_examples_per_batch")
    return [stop - start for start, stop in pieces]


def check_attributions(inputs: tuple[Tensor, ...], attributions: tuple[Tensor, ...]) -> None:
    if len(inputs) != len(attributions):
        raise ArgumentValueError(
            f"`attributions` has {len(attributions)} tensors but `inputs` has {len(inputs)}; "
            "give one attribution tensor per input tensor"
        )
    for i, (x, a) in enumerate(zip(inputs, attributions)):
        if x.shape != a.shape:
            raise ArgumentValueError(
                f"`attributions[{i}]` has shape {tuple(a.shape)} but `inputs[{i}]` has shape "
                f"{tuple(x.shape)}; they must match"
            )


def check_perturbed(
    inputs: tuple[Tensor, ...], perturbed: tuple[Tensor, ...], name: str, rows: int
) -> None:
    """The perturbation function's output must line up with the expanded inputs."""
    if len(perturbed) != len(inputs):
        raise ArgumentValueError(
            f"`perturb_func` returned {len(perturbed)} {name} tensors for {len(inputs)} inputs"
        )
    for i, (x, p) in enumerate(zip(inputs, perturbed)):
        if not isinstance(p, Tensor):
            raise ArgumentTypeError(
                f"`perturb_func` must return tensors; {name}[{i}] is {type(p).__name__}"
            )
        if p.shape[0] != rows or p.shape[1:] != x.shape[1:]:
            raise ArgumentValueError(
                f"`perturb_func` returned {name}[{i}] of shape {tuple(p.shape)}; expected "
                f"{(rows, *x.shape[1:])} (the inputs repeated once per sample)"
            )


def per_example_output(output: Tensor, rows: int) -> Tensor:
    """The selected forward output as one value per row."""
    if not isinstance(output, Tensor):
        raise ArgumentTypeError(
            f"the forward function must return a tensor, got {type(output).__name__}"
        )
    if output.numel() != rows:
        raise ArgumentValueError(
            f"the metric needs one output value per example, but the (target-selected) output "
            f"has shape {tuple(output.shape)} for {rows} examples; pass `target`"
        )
    return output.reshape(rows)
