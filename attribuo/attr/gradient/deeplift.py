"""DeepLift (Rescale rule) and DeepLiftShap.

The algorithm lives in :func:`deeplift_attributions` (over
:func:`deeplift_multipliers`), which takes any forward function; the classes
only parse Captum's arguments. Layer and neuron variants bind the same function to another
forward (the rest of a model after a layer, or a neuron's activation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.baselines import full_baselines
from ..._engine.call import Call, completeness_delta, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.forward import scalar_per_example
from ..._engine.hooks import modules_of, preserved_state
from ..._engine.inputs import expand_batch
from ..._engine.overrides import overriding
from ..base import GradientAttribution
from .deeplift_rules import RescaleRules

TensorOrTuple = Tensor | tuple[Tensor, ...]


def deeplift_multipliers(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    eps: float = 1e-10,
    *,
    method: str = "DeepLift",
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """DeepLift's Rescale multipliers of the targeted output w.r.t. ``call.inputs``.

    Runs ``forward_func`` once on ``[inputs; baselines]`` (each input tensor
    concatenated with its baseline along dim 0, the target and batched
    arguments expanded to match: :meth:`~attribuo._engine.call.Call.expanded`),
    with every covered non-linearity replaced by its Rescale rule
    (:mod:`.deeplift_rules`), and differentiates the sum of the targeted
    outputs with respect to the input half.

    Args:
        forward_func: any callable taking ``*inputs, *additional_args``;
            layer and neuron methods pass a forward that replaces a layer's
            output or returns one neuron (then the target is empty).
        call: the inputs (dim 0 the batch), target and extra arguments.
        baselines: one tensor per input, of the input's shape.
        eps: below this ``|x - x0|`` a rule uses the ordinary derivative.
        method: the name used in warnings about uncovered non-linearities.

    Returns:
        ``(multipliers, output_difference)``: one multiplier tensor per input
        (``(inputs - baselines) * multipliers`` are the attributions), and the
        per-example ``F(inputs) - F(baselines)`` of the same forward pass, or
        ``None`` when the forward returns one value for the whole batch.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1))
        >>> x, x0 = torch.rand(3, 2), torch.zeros(3, 2)
        >>> m, diff = deeplift_multipliers(model, parse_call(x, 0), (x0,))
        >>> torch.allclose(((x - x0) * m[0]).sum(1), diff, atol=1e-6)
        True
    """
    n = call.batch
    joint = tuple(
        torch.cat((x.detach(), b.detach().to(x.dtype))).requires_grad_() for x, b in zip(call.inputs, baselines)
    )
    module = modules_of(forward_func)

    def run(keep_float64: bool) -> tuple[RescaleRules, Tensor, tuple[Tensor, ...]]:
        rules = RescaleRules(eps, sources=joint, keep_float64=keep_float64)
        forward = overriding(forward_func, rules.table())
        with preserved_state(module), torch.enable_grad():
            selected = call.expanded(2, inputs=joint).forward(forward)
            values = scalar_per_example(selected, 2 * n)
            grads = torch.autograd.grad(values.sum(), joint, allow_unused=True, materialize_grads=True)
        return rules, values, grads

    # float64 inputs stay float64 through the model's own down-casts (see
    # deeplift_ops), unless the model then needs its lower precision.
    params = [p for p in module.parameters() if p.is_floating_point()] if module is not None else []
    float64 = all(p.dtype == torch.float64 for p in params) and all(j.dtype == torch.float64 for j in joint)
    try:
        rules, values, grads = run(float64)
    except RuntimeError:
        if not float64:
            raise
        rules, values, grads = run(False)
    rules.warn(method, stacklevel=5)
    values = values.detach()
    difference = values[:n] - values[n:] if values.dim() == 1 else None
    return tuple(g[:n] for g in grads), difference


def deeplift_attributions(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    eps: float = 1e-10,
    multiply_by_inputs: bool = True,
    custom_attribution_func: Callable | None = None,
    *,
    method: str = "DeepLift",
    with_delta: bool = False,
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """DeepLift as a pure function (behind DeepLift and its layer and neuron variants).

    Returns ``(attributions, delta)``: one attribution tensor per input of
    ``call`` (see :func:`attributions_from_multipliers`) and, when
    ``with_delta``, per example their sum minus ``F(inputs) - F(baselines)``
    from forwards of the inputs and of the baselines (as Captum computes it),
    else None.
    """
    multipliers, _ = deeplift_multipliers(forward_func, call, baselines, eps, method=method)
    attributions = attributions_from_multipliers(
        multipliers, call.inputs, baselines, multiply_by_inputs, custom_attribution_func
    )
    delta = completeness_delta(forward_func, attributions, baselines, call) if with_delta else None
    return attributions, delta


def attributions_from_multipliers(
    multipliers: tuple[Tensor, ...],
    inputs: tuple[Tensor, ...],
    baselines: tuple[Tensor, ...],
    multiply_by_inputs: bool = True,
    custom_attribution_func: Callable | None = None,
) -> tuple[Tensor, ...]:
    """Captum's last step: ``custom_attribution_func``, or ``(x - x0) * m``, or ``m``.

    ``custom_attribution_func`` is called with ``(multipliers)``,
    ``(multipliers, inputs)`` or ``(multipliers, inputs, baselines)``
    depending on how many parameters it declares, and must return a tuple
    with one tensor per input.

    Example:
        >>> import torch
        >>> m, x, x0 = (torch.ones(1, 2),), (torch.tensor([[3.0, 4.0]]),), (torch.ones(1, 2),)
        >>> attributions_from_multipliers(m, x, x0)
        (tensor([[2., 3.]]),)
    """
    if custom_attribution_func is None:
        if not multiply_by_inputs:
            return multipliers
        return tuple((x - b) * m for x, b, m in zip(inputs, baselines, multipliers))
    given = (multipliers, inputs, baselines)
    result = custom_attribution_func(*given[: _parameter_count(custom_attribution_func)])
    if isinstance(result, Tensor) and len(inputs) == 1:
        result = (result,)
    if not isinstance(result, tuple) or len(result) != len(inputs) or not all(
        isinstance(r, Tensor) for r in result
    ):
        raise ArgumentTypeError(
            f"`custom_attribution_func` must return a tuple of {len(inputs)} tensor(s), one per "
            f"input; got {type(result).__name__}"
        )
    n = inputs[0].shape[0]
    for i, r in enumerate(result):
        if r.dim() == 0 or r.shape[0] != n:
            raise ArgumentValueError(
                f"`custom_attribution_func` returned a tensor of shape {tuple(r.shape)} for input "
                f"{i}; it must keep the batch dim of {n} examples"
            )
    return result


def _parameter_count(func: Callable) -> int:
    if not callable(func):
        raise ArgumentTypeError(
            f"`custom_attribution_func` must be callable, got {type(func).__name__}"
        )
    try:
        count = len(inspect.signature(func).parameters)
    except (TypeError, ValueError) as error:
        raise ArgumentTypeError(f"`custom_attribution_func` has no inspectable signature: {error}") from None
    if not 1 <= count <= 3:
        raise ArgumentValueError(
            "`custom_attribution_func` must take 1 to 3 arguments (multipliers, inputs, "
            f"baselines); it takes {count}"
        )
    return count


def expand_pairs(call: Call, baselines: tuple[Tensor, ...]) -> tuple[Call, tuple[Tensor, ...]]:
    """Every (input, baseline) pair as one example, input-major (DeepLiftShap's order).

    With ``N`` inputs and ``B`` baselines, pair ``i * B + j`` holds input
    ``i`` and baseline ``j``; targets and batched arguments follow the inputs.

    Example:
        >>> import torch
        >>> from attribuo._engine.call import parse_call
        >>> pairs, bs = expand_pairs(parse_call(torch.tensor([[1.0], [2.0]])), (torch.tensor([[0.0], [9.0]]),))
        >>> pairs.inputs[0].flatten().tolist(), bs[0].flatten().tolist()
        ([1.0, 1.0, 2.0, 2.0], [0.0, 9.0, 0.0, 9.0])
    """
    b = baselines[0].shape[0]
    pairs = call.expanded(b, interleave=True)
    return pairs, tuple(expand_batch(base, call.batch) for base in baselines)


def mean_over_baselines(t: Tensor, n_inputs: int, n_baselines: int) -> Tensor:
    """Average per-pair values (laid out as :func:`expand_pairs` does) over the baselines."""
    return t.reshape(n_inputs, n_baselines, *t.shape[1:]).mean(dim=1)


class DeepLift(GradientAttribution):
    """DeepLIFT with the Rescale rule (Shrikumar et al., 2017; Ancona et al., 2018).

    Each covered non-linearity passes back ``(f(x) - f(x0)) / (x - x0)``
    instead of its derivative, so that the attributions of an example add up
    to ``F(x) - F(x0)``. The rule is applied to ReLU, ELU, LeakyReLU,
    Sigmoid, Tanh, Softplus, Softmax and MaxPool1d/2d/3d whether they are
    written as modules (also reused), functional calls or tensor methods, and
    to the operations of transformers (GELU, SiLU, products of two tensors of
    the inputs, LayerNorm, RMSNorm, attention: :mod:`.deeplift_ops`); a
    warning names any other non-linear function met in the forward. Inputs
    and baselines run together in one forward of ``2 * N`` examples, so dim 0
    of every tensor reaching a non-linearity must be that batch (a warning
    says where it cannot be). Softmax follows Captum: its multipliers are
    centred over the whole batch, so they depend on the other examples.
    Unlike Captum, two non-linearities in a row (e.g. ReLU then MaxPool) still
    add up to ``F(x) - F(x0)``, and where ``x == x0`` at a max pool each
    example gets its own ordinary gradient.

    ``model`` may be an ``nn.Module`` or any callable.

    Example:
        >>> import torch
        >>> from attribuo.attr import DeepLift
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(2, 3)
        >>> attr, delta = DeepLift(model).attribute(x, target=1, return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-5)
        True
    """

    _convergence_delta = True

    def __init__(self, model: Callable, multiply_by_inputs: bool = True, eps: float = 1e-10) -> None:
        super().__init__(model)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise ArgumentValueError(f"`eps` must be a non-negative number, got {eps!r}")
        self.model = model
        self.eps = float(eps)
        self._multiply_by_inputs = multiply_by_inputs

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """DeepLift attributions of ``target`` to ``inputs``, same form as ``inputs``.

        ``baselines``: None (zeros), a number, or per input a tensor of the
        input's shape or of one example's shape. With
        ``return_convergence_delta=True`` also returns, per example, the sum
        of the attributions minus ``F(inputs) - F(baselines)``.
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        attributions, delta = deeplift_attributions(
            self.forward_func, call, full_baselines(call.inputs, baselines), self.eps,
            self.multiplies_by_inputs, custom_attribution_func, method=type(self).__name__,
            with_delta=return_convergence_delta,
        )
        result = call.result(attributions)
        return (result, delta) if return_convergence_delta else result

    def satisfies_attribute_criteria(self, module: torch.nn.Module) -> bool:
        """Captum's test for a module whose input and output its hooks recorded.

        attribuo records nothing on modules (its rules replace functions), so
        this only reports whether ``module`` carries ``input`` and ``output``
        attributes, as Captum's does.
        """
        return hasattr(module, "input") and hasattr(module, "output")



class DeepLiftShap(DeepLift):
    """DeepLift averaged over a distribution of baselines (SHAP's DeepExplainer idea).

    Every input is paired with every baseline of ``baselines`` (``B > 1``
    examples); DeepLift runs on all pairs in one forward and the attributions
    are averaged over the baselines. Convergence deltas are returned per
    pair, ``N * B`` of them, input-major.

    Example:
        >>> import torch
        >>> from attribuo.attr import DeepLiftShap
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> x, dist = torch.rand(2, 3), torch.randn(5, 3)
        >>> attr, delta = DeepLiftShap(model).attribute(x, dist, target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 3]), torch.Size([10]))
    """

    def __init__(self, model: Callable, multiply_by_inputs: bool = True) -> None:
        super().__init__(model, multiply_by_inputs=multiply_by_inputs)

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: TensorOrTuple | Callable[..., TensorOrTuple],
        target: Any = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
        custom_attribution_func: Callable | None = None,
    ) -> TensorOrTuple | tuple[TensorOrTuple, Tensor]:
        """Mean DeepLift attributions over the baselines, same form as ``inputs``.

        ``baselines``: per input a tensor of ``B > 1`` baseline examples, or a
        callable returning them (called with ``inputs`` when it takes an
        argument).
        """
        call = parse_call(inputs, target, additional_forward_args, floating=True)
        dist = baseline_distribution(call.inputs, inputs, baselines)
        attributions, delta = deeplift_attributions(
            self.forward_func, *expand_pairs(call, dist), self.eps, self.multiplies_by_inputs,
            custom_attribution_func, method=type(self).__name__, with_delta=return_convergence_delta,
        )
        b = dist[0].shape[0]
        result = call.result(tuple(mean_over_baselines(a, call.batch, b) for a in attributions))
        return (result, delta) if return_convergence_delta else result


def baseline_distribution(
    xs: tuple[Tensor, ...], inputs: Any, baselines: Any, name: str = "baselines"
) -> tuple[Tensor, ...]:
    """Check a baseline distribution (or call the callable giving one): ``B > 1`` examples per input."""
    if callable(baselines) and not isinstance(baselines, Tensor):
        takes_inputs = len(inspect.signature(baselines).parameters) > 0
        baselines = baselines(inputs) if takes_inputs else baselines()
    dist = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(dist) != len(xs):
        raise ArgumentValueError(
            f"`{name}` has {len(dist)} entries but there are {len(xs)} inputs; give one "
            "baseline distribution per input tensor"
        )
    sizes = set()
    for i, (x, b) in enumerate(zip(xs, dist)):
        where = f"`{name}[{i}]`" if len(xs) > 1 else f"`{name}`"
        if not isinstance(b, Tensor):
            raise ArgumentTypeError(
                f"{where} must be a tensor of baseline examples (dim 0 = number of baselines), "
                f"got {type(b).__name__}; for a single baseline use DeepLift"
            )
        if b.dim() == 0 or b.shape[0] < 2 or b.shape[1:] != x.shape[1:]:
            raise ArgumentValueError(
                f"{where} must hold more than one baseline example of shape {tuple(x.shape[1:])}, "
                f"got shape {tuple(b.shape)}; for a single baseline use DeepLift"
            )
        sizes.add(b.shape[0])
    if len(sizes) > 1:
        raise ArgumentValueError(f"every tensor in `{name}` must have the same number of baselines, got {sorted(sizes)}")
    return tuple(b.detach().to(device=x.device, dtype=x.dtype) for x, b in zip(xs, dist))
