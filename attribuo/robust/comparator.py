"""AttackComparator: a model metric under a set of attacks, per batch and running."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import format_additional_args, positive_int
from ._common import check_callable
from ._grouped import grouped_outputs, require_batchable

ORIGINAL_KEY = "Original"


class AttackInfo(NamedTuple):
    """One attack registered with :meth:`AttackComparator.add_attack`."""

    attack_fn: Callable
    name: str
    num_attempts: int
    apply_before_preproc: bool
    attack_kwargs: dict[str, Any]
    additional_args: list[str]


class DuplicateAttackError(ArgumentValueError, RuntimeError):
    """An attack name is already taken (a ``RuntimeError`` too, as Captum raises)."""


def agg_metric(inp: Any) -> Any:
    """Average tensor metrics over dim 0 (the examples of a batch); floats pass through."""
    if isinstance(inp, Tensor):
        return inp.mean(dim=0)
    if isinstance(inp, tuple):
        return tuple(agg_metric(elem) for elem in inp)
    return inp


class _Running:
    """Running mean (and elementwise min / max) of one metric value per update.

    Floats become float32 tensors and integer tensors average in float64,
    as Captum's summarizer does, so the numbers agree.
    """

    def __init__(self, extremes: bool) -> None:
        self.extremes = extremes
        self.count = 0
        self.mean: Tensor | None = None
        self.min: Tensor | None = None
        self.max: Tensor | None = None

    def update(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            x = torch.tensor(x, dtype=torch.float)
        self.count += 1
        if self.mean is None:
            self.mean = x.clone() if x.is_floating_point() else x.double()
            self.min = self.max = x
        else:
            self.mean = self.mean + (x - self.mean) / self.count
            if self.extremes:
                self.min = torch.min(self.min, x)
                self.max = torch.max(self.max, x)

    def summary(self) -> dict[str, Tensor]:
        if not self.extremes:
            return {"mean": self.mean}
        return {"mean": self.mean, "max": self.max, "min": self.min}


class _Summary:
    """Running statistics of a metric that is a value or a tuple of values."""

    def __init__(self, extremes: bool = False) -> None:
        self.extremes = extremes
        self.parts: list[_Running] = []
        self.is_tuple: bool | None = None
        self.out_format: type | None = None

    def update(self, value: Any) -> None:
        is_tuple = isinstance(value, tuple)
        if self.is_tuple is None:
            self.is_tuple = is_tuple
            if is_tuple and hasattr(value, "_fields"):
                self.out_format = type(value)
        elif self.is_tuple != is_tuple:
            raise ArgumentTypeError(
                "`metric` must return the same form (a value or a tuple) on every call"
            )
        values = value if is_tuple else (value,)
        while len(self.parts) < len(values):
            self.parts.append(_Running(self.extremes))
        for part, v in zip(self.parts, values):
            part.update(v)

    def summary(self, out_format: type | None = None) -> dict[str, Any]:
        if not self.is_tuple:
            return self.parts[0].summary()
        per_part = [p.summary() for p in self.parts]
        fmt = out_format or self.out_format
        result = {}
        for key in per_part[0]:
            values = tuple(s[key] for s in per_part)
            result[key] = fmt(*values) if fmt is not None else values
        return result


class AttackComparator:
    """Compare a model metric on clean inputs and under several attacks.

    ``metric(model_out, **kwargs)`` returns a float, a tensor (dim 0 = the
    examples) or a (named) tuple of them; ``kwargs`` are those given to
    :meth:`evaluate`. ``preproc_fn`` maps raw inputs to model inputs;
    attacks run before it (default) or after it. An attack run more than
    once (``num_attempts > 1``, for random transforms) reports the mean,
    max and min over attempts. :meth:`summary` gives running means over all
    batches evaluated since construction or :meth:`reset`.

    Example:
        >>> import torch
        >>> from attribuo.robust import AttackComparator
        >>> model = torch.nn.Linear(3, 2)
        >>> def accuracy(out, labels):
        ...     return (out.argmax(1) == labels).float()
        >>> comp = AttackComparator(model, accuracy)
        >>> comp.add_attack(lambda x: x + 0.01 * torch.randn_like(x), "noise", num_attempts=3)
        >>> x, y = torch.rand(5, 3), torch.zeros(5, dtype=torch.long)
        >>> sorted(comp.evaluate(x, labels=y))
        ['Original', 'noise']
        >>> sorted(comp.summary())
        ['Original', 'noise Max Attempt', 'noise Mean Attempt', 'noise Min Attempt']
    """

    def __init__(
        self,
        forward_func: Callable,
        metric: Callable,
        preproc_fn: Callable | None = None,
    ) -> None:
        check_callable(forward_func, "forward_func")
        check_callable(metric, "metric")
        check_callable(preproc_fn, "preproc_fn", optional=True)
        self.forward_func = forward_func
        self.metric = metric
        self.preproc_fn = preproc_fn
        self.attacks: dict[str, AttackInfo] = {}
        self.summary_results: dict[str, _Summary] = {}
        self.metric_aggregator: Callable[[Any], Any] = agg_metric
        self.out_format: type | None = None

    def add_attack(
        self,
        attack: Callable,
        name: str | None = None,
        num_attempts: int = 1,
        apply_before_preproc: bool = True,
        attack_kwargs: dict[str, Any] | None = None,
        additional_attack_arg_names: list[str] | None = None,
    ) -> None:
        """Register ``attack`` (a :class:`Perturbation` or any function of the inputs).

        ``name`` defaults to the attack's class name and must be unique.
        ``attack_kwargs`` are passed on every call; the names in
        ``additional_attack_arg_names`` are taken from :meth:`evaluate`'s
        keyword arguments (per-batch values such as ``target``).
        """
        check_callable(attack, "attack")
        if name is None:
            name = type(attack).__name__
        if name in self.attacks:
            raise DuplicateAttackError(
                f"`name` {name!r} is already used by another attack; names must be unique"
            )
        positive_int(num_attempts, "num_attempts")
        if attack_kwargs is not None and not isinstance(attack_kwargs, dict):
            raise ArgumentTypeError(
                f"`attack_kwargs` must be a dict, got {type(attack_kwargs).__name__}"
            )
        self.attacks[name] = AttackInfo(
            attack_fn=attack,
            name=name,
            num_attempts=num_attempts,
            apply_before_preproc=apply_before_preproc,
            attack_kwargs=dict(attack_kwargs or {}),
            additional_args=list(additional_attack_arg_names or []),
        )

    def evaluate(
        self,
        inputs: Any,
        additional_forward_args: Any = None,
        perturbations_per_eval: int = 1,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Metric results for one batch: the clean inputs and every attack.

        Returns ``{"Original": value, name: {"mean": value}}`` for one-attempt
        attacks and ``{name: {"mean", "max", "min"}}`` for several attempts.
        Up to ``perturbations_per_eval`` perturbed copies (the clean one
        included) are evaluated in one forward call; ``kwargs`` go to the
        metric and, when named by the attack, to the attack.
        """
        per_eval = positive_int(perturbations_per_eval, "perturbations_per_eval")
        args = format_additional_args(additional_forward_args)
        model_input = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        require_batchable(model_input, per_eval)

        batch_summaries = {ORIGINAL_KEY: _Summary()}
        pending: list[tuple[Any, str]] = [(model_input, ORIGINAL_KEY)]

        def flush() -> None:
            outputs = grouped_outputs(self.forward_func, [p[0] for p in pending], args)
            for out, (_, key) in zip(outputs, pending):
                value = self.metric(out, **kwargs)
                if self.out_format is None and isinstance(value, tuple) and hasattr(value, "_fields"):
                    self.out_format = type(value)
                batch_summaries[key].update(value)
            pending.clear()

        if len(pending) == per_eval:
            flush()
        for attack in self.attacks.values():
            batch_summaries[attack.name] = _Summary(extremes=attack.num_attempts > 1)
            extra = {}
            for key in attack.additional_args:
                if key in kwargs:
                    extra[key] = kwargs[key]
                else:
                    warnings.warn(
                        f"Additional sample arg {key} not provided for {attack.name}",
                        stacklevel=2,
                    )
            for _ in range(attack.num_attempts):
                if attack.apply_before_preproc:
                    attacked = attack.attack_fn(inputs, **extra, **attack.attack_kwargs)
                    if self.preproc_fn is not None:
                        attacked = self.preproc_fn(attacked)
                else:
                    attacked = attack.attack_fn(model_input, **extra, **attack.attack_kwargs)
                pending.append((attacked, attack.name))
                if len(pending) == per_eval:
                    flush()
        if pending:
            flush()
        return self._record(batch_summaries)

    def _record(self, batch_summaries: dict[str, _Summary]) -> dict[str, Any]:
        """Turn one batch's statistics into results and fold them into the running summary."""
        original = batch_summaries[ORIGINAL_KEY].summary(self.out_format)["mean"]
        results: dict[str, Any] = {ORIGINAL_KEY: original}
        self._accumulate(ORIGINAL_KEY, original)
        for attack in self.attacks.values():
            attack_results = batch_summaries[attack.name].summary(self.out_format)
            results[attack.name] = attack_results
            if len(attack_results) == 1:
                self._accumulate(attack.name, attack_results["mean"])
            else:
                for key, value in attack_results.items():
                    self._accumulate(f"{attack.name} {key.title()} Attempt", value)
        return results

    def _accumulate(self, key: str, value: Any) -> None:
        self.summary_results.setdefault(key, _Summary()).update(self.metric_aggregator(value))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Running means, per key, of the batch results since construction or :meth:`reset`.

        Keys are ``"Original"``, each one-attempt attack's name, and
        ``"<name> Mean Attempt"`` / ``"Max Attempt"`` / ``"Min Attempt"`` for
        attacks with several attempts; tensor metrics are first averaged over
        each batch's examples.
        """
        return {key: s.summary(self.out_format) for key, s in self.summary_results.items()}

    def reset(self) -> None:
        """Forget the running summary of previous batches."""
        self.summary_results = {}
