"""How relevance propagates: the machinery behind LRP and LayerLRP.

One forward pass, one backward pass. During the forward each module that has
a rule (its ``rule`` attribute, a composite's choice, or the default for its
class) has its output re-issued through a small autograd node whose backward
is the rule: the "gradient" that flows backward between layers *is* the
relevance. Operations outside rule modules are propagated one by one through
:mod:`attribuo._engine.overrides`: ReLU, Tanh and Dropout pass relevance
unchanged, and a residual addition ``a + b`` (an operator, ``torch.add``,
``+=``, or a custom addition module) splits it in proportion to ``a`` and ``b``.
Everything else (reshapes, flatten, concatenation) routes relevance like a
gradient.

Unlike Captum, the model is never modified: weights are not rewritten (rules
re-run a layer with modified parameters functionally), no attribute or hook
outlives the call, and ``rule`` attributes the user set stay in place.

As in Captum, the backward starts from 1 at the target output and the result
is scaled by the target output, so relevance sums to the output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._engine.call import parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.forward import run_forward, scalar_per_example
from ..._engine.hooks import forward_hooks, forward_pre_hooks, preserved_state
from ..._engine.inputs import grad_ready
from ..._engine.overrides import overriding, relu_rules
from ..._engine.sites import capture
from .rules import _MISSING, EpsilonRule, LayerCall, PropagationRule, default_rule

TensorOrTuple = Tensor | tuple[Tensor, ...]


# ---------------------------------------------------------------- planning
@dataclass
class Merged:
    """A layer replaced, for the duration of a call, by an equivalent affine function."""

    parameters: dict[str, Tensor]
    function: Callable[[dict, tuple, dict], Tensor]


@dataclass
class Plan:
    """Which module gets which rule; canonized (merged / bypassed) modules."""

    rules: dict[nn.Module, PropagationRule] = field(default_factory=dict)
    merged: dict[nn.Module, Merged] = field(default_factory=dict)
    bypassed: set = field(default_factory=set)


def check_rules(model: nn.Module) -> None:
    """Every ``rule`` attribute in ``model`` must be a PropagationRule or None."""
    for name, module in model.named_modules():
        rule = getattr(module, "rule", None)
        if rule is not None and not isinstance(rule, PropagationRule):
            raise ArgumentTypeError(
                f"`rule` of module {name or type(module).__name__} must be a PropagationRule "
                f"(e.g. EpsilonRule()) or None, got {type(rule).__name__}"
            )


def plan_rules(model: nn.Module, composite: Any = None) -> dict[nn.Module, PropagationRule]:
    """Rule per module: ``module.rule`` first, then ``composite``, then DEFAULT_RULES.

    A module with a rule is one unit (its children are not visited). Leaf
    modules with no rule are transparent if the default map says so (None)
    or if they are parameter-free modules defined outside ``torch.nn`` (their
    operations are then propagated one by one); otherwise a clear error.
    """
    chosen = composite.rules(model) if composite is not None else {}
    rules: dict[nn.Module, PropagationRule] = {}

    def visit(module: nn.Module, name: str) -> None:
        own = getattr(module, "rule", _MISSING)
        if own is not _MISSING and own is not None:
            rules[module] = own
            return
        if own is _MISSING and module in chosen:
            rules[module] = chosen[module]
            return
        children = list(module.named_children())
        if children:
            if any(True for _ in module.parameters(recurse=False)):
                raise ArgumentTypeError(
                    f"module {name or type(module).__name__} ({type(module).__name__}) uses its "
                    "own parameters besides its submodules; give it a `rule` attribute"
                )
            for child_name, child in children:
                visit(child, f"{name}.{child_name}" if name else child_name)
            return
        if own is None:
            return
        factory = default_rule(module)
        if factory is _MISSING:
            builtin = type(module).__module__.startswith("torch.")
            if builtin or any(True for _ in module.parameters()):
                raise ArgumentTypeError(
                    f"module {name or type(module).__name__} of type {type(module).__name__} has "
                    "no rule and no default rule exists for its type; set `module.rule`, or add "
                    "its type to attribuo.attr.relevance.rules.DEFAULT_RULES"
                )
            return
        if factory is not None:
            rules[module] = factory()

    visit(model, "")
    return rules


# ------------------------------------------------------ autograd plumbing
@dataclass
class _Step:
    rule: PropagationRule
    call: LayerCall
    versions: tuple[int, ...]
    sources: tuple[Tensor, ...]

    def __call__(self, relevance: Tensor) -> tuple[Tensor, ...]:
        if tuple(t._version for t in self.sources) != self.versions:
            raise RuntimeError(
                f"an input of {type(self.call.module).__name__} was modified in place after the "
                "layer used it; LRP needs the value the layer saw (avoid in-place ops on it)"
            )
        with torch.enable_grad():
            return self.rule.propagate(self.call, relevance)


class _RelevanceNode(torch.autograd.Function):
    """Forward: the layer's output. Backward: the rule, output relevance -> input relevance."""

    @staticmethod
    def forward(ctx, step: _Step, *inputs: Tensor) -> Tensor:  # noqa: ARG004
        ctx.step = step
        return step.call.output.clone()

    @staticmethod
    def backward(ctx, relevance: Tensor) -> tuple:
        return (None, *ctx.step(relevance))


class _Sum(torch.autograd.Function):
    """``a + b`` whose backward splits relevance R as ``a R / z`` and ``b R / z``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, inplace: bool) -> Tensor:
        ctx.a, ctx.b = a.detach().clone() if inplace else a.detach(), b.detach()
        if inplace:
            a.add_(b)
            ctx.mark_dirty(a)
            return a
        return a + b

    @staticmethod
    def backward(ctx, relevance: Tensor) -> tuple:
        s = relevance / _SUM_RULE.stabilize(ctx.a + ctx.b)
        return ctx.a * s, ctx.b * s, None


_SUM_RULE = EpsilonRule()  # Captum gives addition modules EpsilonRule()'s 1e-9


class _Pass(torch.autograd.Function):
    """An element-wise function whose backward passes relevance unchanged."""

    @staticmethod
    def forward(ctx, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:  # noqa: ARG004
        out = fn(x)
        return out.clone() if out is x else out

    @staticmethod
    def backward(ctx, relevance: Tensor) -> tuple:
        return None, relevance


def _sum_rule(func: Callable, args: tuple, kwargs: dict) -> Any:
    a = args[0]
    b = args[1] if len(args) > 1 else kwargs.get("other")
    alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
    if (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and a.shape == b.shape
        and a.is_floating_point()
        and b.is_floating_point()
        and alpha == 1
        and "out" not in kwargs
    ):
        return _Sum.apply(a, b, func is torch.Tensor.add_)
    return func(*args, **kwargs)


def _pass_rule(func: Callable, args: tuple, kwargs: dict) -> Any:
    if func in _DROPOUTS:
        training = kwargs.get("training", args[2] if len(args) > 2 else True)
        if not training:
            return func(*args, **kwargs)
        kwargs = {**kwargs, "inplace": False}
        args = args[:3]
    return _Pass.apply(lambda x: func(x, *args[1:], **kwargs), args[0])


_DROPOUTS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
_TANHS = (torch.tanh, F.tanh, torch.Tensor.tanh)


@dataclass
class _State:
    depth: int = 0


def _function_rules(state: _State) -> dict:
    rules: dict[Callable, Callable] = dict(relu_rules(lambda grad, out: grad))
    rules.update({f: _pass_rule for f in _TANHS + _DROPOUTS})
    rules.update({f: _sum_rule for f in (torch.add, torch.Tensor.add, torch.Tensor.add_)})

    def outside_rule_modules(rule: Callable) -> Callable:
        # Inside a module that has its own rule, operations run unchanged.
        def apply(func: Callable, args: tuple, kwargs: dict) -> Any:
            if state.depth:
                return func(*args, **kwargs)
            return rule(func, args, kwargs)

        return apply

    return {f: outside_rule_modules(r) for f, r in rules.items()}


def _wrap_output(
    module: nn.Module, rule: PropagationRule, args: tuple, kwargs: dict, output: Any, merged: Merged | None
) -> Tensor:
    if merged is not None:
        output = merged.function(merged.parameters, args, kwargs)
    if not isinstance(output, Tensor):
        raise ArgumentTypeError(
            f"LRP rules need layers that return one tensor; {type(module).__name__} returned "
            f"{type(output).__name__}"
        )
    positions = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor) and a.is_floating_point())
    sources = tuple(args[i] for i in positions)
    # The recorded graph gives the layer's partial derivatives only when it has one input:
    # with several (e.g. ``add(linear(x), x)``) one may depend on another, and a gradient
    # through the recorded graph would also run through that earlier layer.
    connected = output.requires_grad and len(sources) == 1 and sources[0].requires_grad
    params = merged.parameters if merged else {n: p.detach() for n, p in module.named_parameters()}
    call = LayerCall(
        module=module,
        args=tuple(a.detach() if isinstance(a, Tensor) else a for a in args),
        kwargs=kwargs,
        positions=positions,
        inputs=tuple(t.detach() for t in sources),
        output=output.detach(),
        graph_inputs=sources if connected else (),
        graph_output=output if connected else None,
        parameters=params,
        function=merged.function if merged else None,
    )
    step = _Step(rule, call, tuple(t._version for t in sources), sources)
    return _RelevanceNode.apply(step, *sources)


@contextlib.contextmanager
def _kept_buffers(model: nn.Module) -> Iterator[None]:
    # A forward in training mode updates BatchNorm statistics; put them back.
    if not any(m.training for m in model.modules()):
        yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


@contextlib.contextmanager
def relevance_mode(model: nn.Module, plan: Plan, verbose: bool = False) -> Iterator[Callable]:
    """Hooks for ``plan`` on ``model``; yields the model's forward with LRP backward rules."""
    state = _State()

    def enter(module, args, kwargs):
        state.depth += 1

    def leave(module, args, kwargs, output):
        state.depth -= 1
        return _wrap_output(module, plan.rules[module], args, kwargs, output, plan.merged.get(module))

    def bypass(module, args, kwargs, output):
        return args[0]

    if verbose:
        for module, rule in plan.rules.items():
            print(f"Applied {rule} on layer {module}")
    with (
        preserved_state(model),
        _kept_buffers(model),
        forward_pre_hooks(((m, enter) for m in plan.rules), with_kwargs=True),
        forward_hooks(((m, leave) for m in plan.rules), with_kwargs=True),
        forward_hooks(((m, bypass) for m in plan.bypassed), with_kwargs=True),
    ):
        yield overriding(model, _function_rules(state))


def make_plan(model: nn.Module, composite: Any, canonizers: Sequence[Any], inputs: tuple, args: tuple) -> Plan:
    plan = Plan(rules=plan_rules(model, composite))
    for canonizer in canonizers:
        merged, bypassed = canonizer.find(model, inputs, args)
        plan.merged.update(merged)
        plan.bypassed |= bypassed
    for module in plan.bypassed:
        plan.rules.pop(module, None)
    for module in plan.merged:
        plan.rules.setdefault(module, EpsilonRule())
    return plan


def lrp_relevance(
    model: nn.Module,
    inputs: Any,
    target: Any = None,
    additional_forward_args: Any = None,
    composite: Any = None,
    canonizers: Sequence[Any] = (),
    layers: Sequence[nn.Module] = (),
    use_input: bool = False,
    verbose: bool = False,
) -> tuple[tuple[Tensor, ...], list[tuple[tuple[Tensor, ...], bool]], Tensor]:
    """Input relevances, per-layer relevances ``(values, was_tuple)`` and the target output.

    All relevances are scaled so that they sum to the target output.
    """
    call = parse_call(inputs, target, additional_forward_args, floating=True)
    xs, n, tgt, args = call.inputs, call.batch, call.target, call.args
    plan = make_plan(model, composite, canonizers, xs, args)
    leaves = grad_ready(xs)
    with relevance_mode(model, plan, verbose) as forward, capture(layers, use_input, keep_graph=True) as records:
        with torch.enable_grad():
            output = scalar_per_example(run_forward(forward, leaves, tgt, args), n)
            for layer, record in zip(layers, records):
                if record.calls == 0:
                    raise ArgumentValueError(
                        f"`layer` {type(layer).__name__} was not called during the forward pass"
                    )
            sites = [v for r in records for v in r.values]
            wanted = [t for t in (*leaves, *sites) if t.requires_grad]
            grads = iter(
                torch.autograd.grad(output.sum(), wanted, allow_unused=True, materialize_grads=True)
                if wanted
                else ()
            )
    found = {id(t): next(grads) for t in wanted}
    output = output.detach()

    def scaled(ts: Sequence[Tensor]) -> tuple[Tensor, ...]:
        out = []
        for t in ts:
            g = found.get(id(t))
            g = torch.zeros_like(t) if g is None else g
            out.append(g * output.reshape((-1,) + (1,) * (g.dim() - 1)))
        return tuple(out)

    layer_rel = [(scaled(r.values), r.was_tuple) for r in records]
    return scaled(leaves), layer_rel, output
