"""LIME: fit an interpretable (linear) model to perturbed copies of each example."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentValueError
from ..._engine.inputs import as_tuple, positive_int
from ..._engine.perturb import (
    Masks,
    blend,
    evaluate_perturbations,
    feature_count,
    feature_masks,
    initial_output,
    perturbation_baselines,
    select_elements,
    spread,
)
from ..._engine.threads import is_small_work, serial_threads
from ..base import PerturbationAttribution
from .linear_models import Model, SkLearnLasso

TensorOrTuple = Tensor | tuple[Tensor, ...]


# ------------------------------------------------------------------ default hooks
class ExpKernelSimilarity:
    """``exp(-d^2 / (2 width^2))`` of the distance between original and perturbed inputs.

    Called like Captum's similarity functions ``(original, perturbed,
    interpretable_sample, **kwargs) -> float``; Lime also evaluates it for
    many perturbations at once (:meth:`batched`).
    """

    def __init__(self, distance_mode: str = "cosine", kernel_width: float = 1.0) -> None:
        if distance_mode not in ("cosine", "euclidean"):
            raise ArgumentValueError("`distance_mode` must be either 'cosine' or 'euclidean'")
        self.distance_mode = distance_mode
        self.kernel_width = kernel_width

    def __call__(self, original_inp: Any, perturbed_inp: Any, _interpretable: Any = None, **kwargs: Any) -> float:
        a = torch.cat([t.flatten() for t in as_tuple(original_inp)]).float()
        b = torch.cat([t.flatten() for t in as_tuple(perturbed_inp)]).float()
        stats = (torch.dot(a, b), torch.dot(b, b), torch.dot(a, a), ((a - b) ** 2).sum())
        return float(self._kernel(*stats))

    def _kernel(self, dot: Tensor, pp: Tensor, oo: Tensor, sq: Tensor) -> Tensor:
        if self.distance_mode == "cosine":
            cos = dot / torch.sqrt(torch.clamp_min(pp * oo, 1e-16))  # torch's CosineSimilarity eps
            distance = 1 - cos
        else:
            distance = torch.sqrt(sq)
        return torch.exp(-(distance.double() ** 2) / (2 * self.kernel_width**2))

    def batched(self, originals: tuple[Tensor, ...], copies: tuple[Tensor, ...], groups: int) -> Tensor:
        """Similarities ``[P, groups]`` of copies ``[P * N, ...]`` to their originals ``[N, ...]``.

        ``groups`` is N when each example is its own sample, 1 when the
        whole batch is (one model for the batch).
        """
        dot = pp = oo = sq = 0
        for x, c in zip(originals, copies):
            if x.numel() == 0:
                continue  # an empty input adds nothing to the distance
            a = x.float().reshape(groups, -1)
            b = c.float().reshape(-1, groups, a.shape[1])
            dot = dot + (b * a).sum(-1)
            pp = pp + (b * b).sum(-1)
            oo = oo + (a * a).sum(-1)
            sq = sq + ((b - a) ** 2).sum(-1)
        return self._kernel(dot, pp, oo, sq)


def get_exp_kernel_similarity_function(
    distance_mode: str = "cosine", kernel_width: float = 1.0
) -> ExpKernelSimilarity:
    """Lime's default similarity: an exponential kernel on cosine or euclidean distance.

    Example:
        >>> import torch
        >>> sim = get_exp_kernel_similarity_function("euclidean", kernel_width=1.0)
        >>> round(sim(torch.zeros(1, 2), torch.ones(1, 2), None), 4)
        0.3679
    """
    return ExpKernelSimilarity(distance_mode, kernel_width)


def default_perturb_func(original_inp: Any, **kwargs: Any) -> Tensor:
    """Lime's default sampler: each interpretable feature kept with probability 1/2."""
    if "num_interp_features" not in kwargs:
        raise ArgumentValueError("`num_interp_features` is needed by the default perturbation function")
    device = as_tuple(original_inp)[0].device
    probs = torch.ones(1, int(kwargs["num_interp_features"])) * 0.5
    return torch.bernoulli(probs).to(device=device).long()


def default_from_interp_rep_transform(curr_sample: Tensor, original_inputs: Any, **kwargs: Any) -> Any:
    """Binary interpretable sample -> inputs: kept features from the input, others from the baseline."""
    if "feature_mask" not in kwargs or "baselines" not in kwargs:
        raise ArgumentValueError("`feature_mask` and `baselines` are needed by the default transform")
    masks, bases = kwargs["feature_mask"], kwargs["baselines"]
    single = isinstance(original_inputs, Tensor)
    xs = as_tuple(original_inputs)
    masks = (masks,) if single else masks
    bases = (bases,) if single else bases
    out = tuple(
        torch.where(curr_sample[0][m].bool(), x, torch.as_tensor(b, dtype=x.dtype, device=x.device))
        for x, m, b in zip(xs, masks, bases)
    )
    return out[0] if single else out


def construct_feature_mask(feature_mask: Any, formatted_inputs: tuple[Tensor, ...]) -> tuple[Masks, int]:
    """Feature masks with ids starting at 0 (shifted, with a warning, as Captum does) and their count."""
    masks = feature_masks(formatted_inputs, feature_mask)
    present = [m for m in masks if m.numel()]
    if feature_mask is not None and present:
        low = min(int(m.min()) for m in present)
        if low != 0:
            warnings.warn("Minimum element in feature mask is not 0, shifting indices to start at 0.", stacklevel=3)
            masks = tuple(m - low for m in masks)
    count = feature_count(masks)
    return masks, count


# -------------------------------------------------------------- batched algorithm
def surrogate_coefficients(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    masks: Masks,
    samples: Tensor,
    model: Model,
    weights: Tensor | ExpKernelSimilarity,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Lime",
) -> Tensor:
    """Fit one interpretable model per group of examples; the algorithm behind Lime and KernelShap.

    ``samples`` is a boolean ``[G, S, F]``: for each of ``G`` groups (every
    example on its own, ``G = N``; or the whole batch together, ``G = 1``)
    ``S`` interpretable samples saying which features keep the input's value
    (the others take the baseline). All ``S`` perturbed batches are
    evaluated in large chunks; ``weights`` is ``[G, S]`` or a similarity
    kernel evaluated on the perturbed copies. The model is fitted to
    ``(samples, outputs, weights)`` -- for all groups at once when it has a
    ``fit_batch`` method -- and the coefficients ``[G, F]`` are returned.
    """
    groups, count, num = samples.shape
    inputs = call.inputs
    initial = initial_output(forward_func, call)
    outputs = torch.zeros((groups, count), dtype=torch.float64, device=samples.device)
    kernel = weights if isinstance(weights, ExpKernelSimilarity) else None
    sims = torch.zeros((groups, count), dtype=torch.float64, device=samples.device) if kernel else weights

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        chosen = samples[:, start:stop].transpose(0, 1)  # [P, G, F]
        if groups == 1:
            chosen = chosen[:, 0]
        copies = tuple(blend(select_elements(chosen.to(x.device), m), x, b) for x, b, m in zip(inputs, baselines, masks))
        if kernel is not None:
            sims[:, start:stop] = kernel.batched(inputs, copies, groups).transpose(0, 1).to(sims.device)
        return copies, None

    for start, stop, rows, _ in evaluate_perturbations(
        forward_func, call, count, make, initial, perturbations_per_eval, show_progress, desc
    ):
        outputs[:, start:stop] = rows.reshape(stop - start, groups).transpose(0, 1).to(outputs.device)
    x = samples.to(torch.float64)
    fit_batch = getattr(model, "fit_batch", None)
    if callable(fit_batch):
        return fit_batch(x, outputs, sims).reshape(groups, num)
    coefs = []
    for g in range(groups):
        data = TensorDataset(x[g].float(), outputs[g].float(), sims[g].float())
        model.fit(DataLoader(data, batch_size=count))
        coefs.append(model.representation().reshape(-1).to(samples.device))
    return torch.stack(coefs)


def _groups(forward_func: Callable, call: Call, per_eval: Any) -> int:
    """1 for one surrogate for the whole batch, N for one per example (Captum's rules)."""
    n = call.batch
    if n == 1:
        return 1
    out = initial_output(forward_func, call)
    if out.numel() == n:
        return n
    if out.numel() == 1:
        if per_eval not in (None, 1):
            raise ArgumentValueError(
                "`perturbations_per_eval` must be 1 when the forward function returns one value per batch"
            )
        return 1
    raise ArgumentValueError(
        f"the forward function (with `target`) must return one scalar per example or one per batch; "
        f"got {out.numel()} values for {n} examples"
    )


def _shape_result(coefs: Tensor, xs: tuple[Tensor, ...], masks: Masks, groups: int, return_input_shape: bool,
                  dtype: torch.dtype) -> tuple[Tensor, ...] | Tensor:
    coefs = coefs.to(dtype)
    if not return_input_shape:
        return coefs
    if groups == 1 and xs[0].shape[0] > 1:
        return tuple(spread(coefs.transpose(0, 1), m[0:1], (1,)) for m in masks)
    return tuple(spread(coefs.transpose(0, 1), m, (groups,)) for m in masks)


def _result_dtype(xs: tuple[Tensor, ...]) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


@dataclass(frozen=True)
class LimeHooks:
    """The user-supplied parts of the LIME recipe (see :class:`LimeBase`)."""

    perturb_func: Callable
    similarity_func: Callable
    perturb_interpretable_space: bool
    from_interp_rep_transform: Callable | None
    to_interp_rep_transform: Callable | None

    @classmethod
    def of(cls, lime: LimeBase) -> LimeHooks:
        """The hooks a LimeBase instance holds now (they may be set after construction)."""
        return cls(
            lime.perturb_func, lime.similarity_func, lime.perturb_interpretable_space,
            lime.from_interp_rep_transform, lime.to_interp_rep_transform,
        )


def lime_base(
    forward_func: Callable,
    inputs: Any,
    call: Call,
    hooks: LimeHooks,
    model: Model,
    n_samples: int,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Lime Base",
    **kwargs: Any,
) -> Tensor:
    """The general LIME recipe as a pure function (the algorithm behind :class:`LimeBase`).

    Draws ``n_samples`` samples with ``hooks.perturb_func(inputs, **kwargs)``
    (``inputs`` as the user gave them), maps each between the interpretable
    and the input space, weights it with ``hooks.similarity_func``, evaluates
    the model on all of them in chunks (with ``call``'s target and
    arguments), fits ``model`` and returns its ``representation()``.
    """
    perturb = hooks.perturb_func
    generator = perturb(inputs, **kwargs) if inspect.isgeneratorfunction(perturb) else None
    interp, model_inputs, sims = [], [], []
    for _ in range(n_samples):
        try:
            sample = next(generator) if generator is not None else perturb(inputs, **kwargs)
        except StopIteration:
            warnings.warn("Generator completed prior to given n_samples iterations!", stacklevel=3)
            break
        if hooks.perturb_interpretable_space:
            z, x = sample, hooks.from_interp_rep_transform(sample, inputs, **kwargs)
        else:
            z, x = hooks.to_interp_rep_transform(sample, inputs, **kwargs), sample
        sim = hooks.similarity_func(inputs, x, z, **kwargs)
        interp.append(torch.as_tensor(z).reshape(1, -1) if torch.as_tensor(z).dim() < 2 else z)
        model_inputs.append(as_tuple(x))
        sims.append(torch.as_tensor(sim, dtype=torch.float32).flatten())
    if not model_inputs:
        raise ArgumentValueError("`n_samples` must be at least 1")
    initial = initial_output(forward_func, call)
    if initial.numel() != 1:
        raise ArgumentValueError(
            "the forward function (with `target`) must return one value per perturbed input; "
            f"got {initial.numel()} values"
        )
    outputs = torch.zeros(len(model_inputs), dtype=torch.float32)

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        return tuple(torch.cat(parts) for parts in zip(*model_inputs[start:stop])), None

    for start, stop, rows, _ in evaluate_perturbations(
        forward_func, call, len(model_inputs), make, initial, perturbations_per_eval, show_progress, desc
    ):
        outputs[start:stop] = rows.reshape(-1).float().cpu()
    data = TensorDataset(torch.cat(interp).float().cpu(), outputs, torch.cat(sims).float().cpu())
    model.fit(DataLoader(data, batch_size=len(model_inputs)))
    return model.representation()


# --------------------------------------------------------------------- classes
class LimeBase(PerturbationAttribution):
    """The general LIME recipe with user-supplied sampling, similarity and transforms.

    ``perturb_func(inputs, **kwargs)`` (a function or a generator function)
    draws a sample, in the interpretable space when
    ``perturb_interpretable_space`` (then ``from_interp_rep_transform``
    maps it to model inputs) or in the input space (then
    ``to_interp_rep_transform`` maps it to the interpretable space).
    ``similarity_func(inputs, perturbed, interpretable, **kwargs)`` weights
    it. The model outputs on all samples, evaluated in batches, are fitted
    by ``interpretable_model``; ``attribute`` returns its representation.

    Example:
        >>> import torch
        >>> from attribuo.attr import LimeBase
        >>> from attribuo.attr.perturbation.linear_models import SkLearnLinearRegression
        >>> model = lambda x: x.sum(1)
        >>> lime = LimeBase(model, SkLearnLinearRegression(), lambda *a, **k: 1.0,
        ...                 lambda x, **k: torch.bernoulli(torch.full((1, 3), 0.5)), True,
        ...                 lambda z, x, **k: z * x, None)
        >>> lime.attribute(torch.tensor([[1.0, 2.0, 3.0]]), n_samples=40).shape
        torch.Size([1, 3])
    """

    _multiply_by_inputs = False

    def __init__(
        self,
        forward_func: Callable,
        interpretable_model: Model,
        similarity_func: Callable,
        perturb_func: Callable,
        perturb_interpretable_space: bool,
        from_interp_rep_transform: Callable | None,
        to_interp_rep_transform: Callable | None,
    ) -> None:
        super().__init__(forward_func)
        self.interpretable_model = interpretable_model
        self.similarity_func = similarity_func
        self.perturb_func = perturb_func
        self.perturb_interpretable_space = perturb_interpretable_space
        self.from_interp_rep_transform = from_interp_rep_transform
        self.to_interp_rep_transform = to_interp_rep_transform
        if perturb_interpretable_space and from_interp_rep_transform is None:
            raise ArgumentValueError(
                "`from_interp_rep_transform` is needed when sampling in the interpretable space"
            )
        if not perturb_interpretable_space and to_interp_rep_transform is None:
            raise ArgumentValueError(
                "`to_interp_rep_transform` is needed when sampling in the input space"
            )

    def attribute(
        self,
        inputs: TensorOrTuple,
        target: Any = None,
        additional_forward_args: Any = None,
        n_samples: int = 50,
        perturbations_per_eval: int | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> Tensor:
        """Fit the interpretable model around ``inputs``; returns its ``representation()``."""
        call = parse_call(inputs, target, additional_forward_args)
        return lime_base(
            self.forward_func, inputs, call, LimeHooks.of(self), self.interpretable_model, n_samples,
            perturbations_per_eval, show_progress, self.get_name(), **kwargs,
        )




class Lime(LimeBase):
    """LIME (Ribeiro et al., 2016) over interpretable features given by ``feature_mask``.

    Each sample keeps a random half of the features (the rest take the
    baseline), is weighted by an exponential kernel on cosine distance, and a
    Lasso (``alpha=0.01``) is fitted to the model outputs. Every example of
    the batch gets its own model; with the default hooks all samples of all
    examples are evaluated in large batches and the models are fitted
    together. Seeded like Captum (the same seed draws the same samples).

    Example:
        >>> import torch
        >>> from attribuo.attr import Lime
        >>> model = torch.nn.Linear(4, 2)
        >>> x = torch.rand(3, 4)
        >>> Lime(model).attribute(x, target=1, n_samples=100).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        forward_func: Callable,
        interpretable_model: Model | None = None,
        similarity_func: Callable | None = None,
        perturb_func: Callable | None = None,
    ) -> None:
        super().__init__(
            forward_func,
            SkLearnLasso(alpha=0.01) if interpretable_model is None else interpretable_model,
            get_exp_kernel_similarity_function() if similarity_func is None else similarity_func,
            default_perturb_func if perturb_func is None else perturb_func,
            True,
            default_from_interp_rep_transform,
            None,
        )

    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTuple,
        baselines: Any = None,
        target: Any = None,
        additional_forward_args: Any = None,
        feature_mask: TensorOrTuple | None = None,
        n_samples: int = 25,
        perturbations_per_eval: int | None = None,
        return_input_shape: bool = True,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """One surrogate model per example; coefficients spread over the inputs (or ``[N, F]``)."""
        return self._attribute(inputs, baselines, target, additional_forward_args, feature_mask,
                               n_samples, perturbations_per_eval, return_input_shape, show_progress)

    def _samples(self, groups: int, n_samples: int, count: int, device: torch.device) -> Tensor:
        """Interpretable samples ``[G, S, F]`` (bool), drawn in Captum's order."""
        draws = []
        after_each = self._fit_draws(count)
        for _ in range(groups):
            draws.append(torch.bernoulli(torch.full((n_samples, count), 0.5)))
            if after_each is not None:
                after_each()
        return torch.stack(draws).bool().to(device)

    def _fit_draws(self, count: int) -> Callable[[], None] | None:
        """The random draws of Captum's fit of one surrogate, where ours fits them all at once.

        Captum's per-example fit draws from the global generator (a DataLoader
        seed, then nn.Linear's initialisation); drawing the same between
        examples gives every example Captum's samples under a seed and leaves
        the generator where Captum leaves it.
        """
        if not callable(getattr(self.interpretable_model, "fit_batch", None)):
            return None

        def draws() -> None:
            torch.empty((), dtype=torch.int64).random_()
            torch.empty(1, count).uniform_()
            torch.empty(1).uniform_()

        return draws

    def _weights(self, samples: Tensor) -> Tensor | ExpKernelSimilarity:
        return self.similarity_func

    def _fast(self) -> bool:
        return self.perturb_func is default_perturb_func and isinstance(self.similarity_func, ExpKernelSimilarity)

    def _attribute(self, inputs, baselines, target, additional_forward_args, feature_mask, n_samples,
                   perturbations_per_eval, return_input_shape, show_progress, **kwargs):
        positive_int(n_samples, "n_samples")
        call = parse_call(inputs, target, additional_forward_args)
        xs = call.inputs
        base = perturbation_baselines(xs, baselines)
        masks, count = construct_feature_mask(feature_mask, xs)
        if count > 10000:
            warnings.warn(
                f"fitting an interpretable model with {count} features is slow; group features "
                "with `feature_mask`", stacklevel=3,
            )
        groups = _groups(self.forward_func, call, perturbations_per_eval)
        dtype = _result_dtype(xs)
        if groups == 0:  # an empty batch: no example to fit a model to
            coefs = torch.zeros((0, count), dtype=dtype, device=xs[0].device)
        elif self._fast():
            # drawing coalitions for a small model is thousands of tiny ops too: one thread
            # for them as for the forwards (see _engine/threads.py)
            with serial_threads(is_small_work(self.forward_func, xs, n_samples)):
                samples = self._samples(groups, n_samples, count, xs[0].device)
                coefs = surrogate_coefficients(
                    self.forward_func, call, base, masks, samples, self.interpretable_model,
                    self._weights(samples), perturbations_per_eval, show_progress, self.get_name(),
                )
        else:
            coefs = self._per_group(call, base, masks, count, groups, n_samples,
                                    perturbations_per_eval, show_progress, kwargs)
        result = _shape_result(coefs, xs, masks, groups, return_input_shape, dtype)
        return call.result(result) if return_input_shape else result

    def _per_group(self, call, base, masks, count, groups, n_samples, per_eval, show_progress, kwargs):
        # user-supplied hooks: Captum's per-example loop, each example's samples evaluated in batches
        coefs = []
        hooks = LimeHooks.of(self)
        for g in range(groups):
            sub = call.take(g, g + 1) if groups > 1 else call
            pick = (lambda t, g=g: t[g:g + 1]) if groups > 1 else (lambda t: t)
            sub_masks = tuple(pick(m) if m.shape[0] > 1 else m for m in masks)
            rep = lime_base(
                self.forward_func, sub.result(sub.inputs), sub, hooks, self.interpretable_model,
                n_samples, per_eval, show_progress, self.get_name(),
                baselines=sub.result(tuple(pick(b) for b in base)),
                feature_mask=sub.result(sub_masks), num_interp_features=count, **kwargs,
            )
            coefs.append(rep.reshape(-1))
        return torch.stack(coefs)
