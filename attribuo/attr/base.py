"""Base classes of every attribution method (Captum's public hierarchy)."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._engine.baselines import full_baselines
from .._engine.call import Call, completeness_delta, parse_call
from .._engine.errors import ArgumentValueError
from .._engine.forward import forward_futures, outside_inference_mode
from .._engine.inputs import as_tuple


def _wrap_attribute(cls: type) -> None:
    # Every ``attribute`` leaves ``torch.inference_mode`` for its own duration (gradients
    # need it off). The wrapper also gives Captum's ``Cls.attribute.__wrapped__``: Captum
    # decorates ``attribute`` for logging, and code written for it reads the undecorated
    # signature there.
    fn = cls.__dict__.get("attribute")
    if isinstance(fn, types.FunctionType) and not getattr(fn, "outside_inference_mode", False):
        if getattr(cls, "_futures_contract", False):
            fn = _rejecting_futures(fn)
        cls.attribute = outside_inference_mode(fn)
        inherited = getattr(cls, "attribute_future", None)
        custom = inherited is not None and not getattr(inherited, "_generated", False) \
            and inherited is not Attribution.attribute_future
        if not custom:  # the same arguments as ``attribute``, as in Captum
            cls.attribute_future = _future_with_signature(inspect.signature(fn))


def _rejecting_futures(attribute: Callable) -> Callable:
    @functools.wraps(attribute)
    def run(self: Attribution, *args: Any, **kwargs: Any) -> Any:
        with forward_futures(required=False):
            return attribute(self, *args, **kwargs)

    return run


def _future_with_signature(signature: inspect.Signature) -> Callable:
    def attribute_future(self: Attribution, *args: Any, **kwargs: Any) -> torch.futures.Future:
        return Attribution.attribute_future(self, *args, **kwargs)

    attribute_future.__signature__ = signature.replace(return_annotation=torch.futures.Future)  # type: ignore[attr-defined]
    attribute_future.__doc__ = Attribution.attribute_future.__doc__
    attribute_future._generated = True  # type: ignore[attr-defined]
    return attribute_future


class Attribution:
    """Root of all attribution methods.

    Subclasses define ``attribute(inputs, ...)``; results have the form of
    ``inputs`` (a tensor for a tensor, a tuple for a tuple).

    Example:
        >>> from attribuo.attr import Saliency
        >>> Saliency.get_name()
        'Saliency'
    """

    attribute: Callable
    compute_convergence_delta: Callable
    # what multiplies_by_inputs and has_convergence_delta() report; subclasses set them
    _multiply_by_inputs: bool = False
    _convergence_delta: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_attribute(cls)

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(
                f"`forward_func` must be a callable or an nn.Module, got {type(forward_func).__name__}"
            )
        self.forward_func = forward_func

    # Captum's FeatureAblation and kin: attribute_future needs a forward function returning
    # futures and attribute one returning values (misuse raises at once)
    _futures_contract: bool = False

    def attribute_future(self, *args: Any, **kwargs: Any) -> torch.futures.Future:
        """Run ``attribute`` and return its result as a completed ``torch.Future``.

        Errors are delivered through the future (``future.wait()`` raises
        them). Methods where Captum implements ``attribute_future``
        (FeatureAblation, FeaturePermutation, the Shapley methods) follow its
        contract: the forward function must return ``torch.futures.Future``
        objects, and a wrong kind of forward raises at once.
        """
        if self._futures_contract:
            with forward_futures(required=True):
                result = self.attribute(*args, **kwargs)
            done = torch.Future([])  # exactly the type Captum's attribute_future returns
            done.set_result(result)
            return done
        future: torch.futures.Future = torch.futures.Future()
        try:
            future.set_result(self.attribute(*args, **kwargs))
        except Exception as error:  # delivered to whoever waits on the future
            future.set_exception(error)
        return future

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether attributions are multiplied by (inputs - baselines)."""
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        """Whether this method can return a convergence delta."""
        return self._convergence_delta

    @classmethod
    def get_name(cls) -> str:
        """The class name with spaces before capitals: ``'Integrated Gradients'``."""
        name = cls.__name__
        return "".join(
            " " + ch if i > 0 and ch.isupper() else ch for i, ch in enumerate(name)
        )


class GradientAttribution(Attribution):
    """Base of the gradient-based methods; provides the completeness delta.

    Example:
        >>> import torch
        >>> from attribuo.attr import IntegratedGradients
        >>> model = torch.nn.Linear(3, 2)
        >>> x = torch.rand(4, 3)
        >>> attr = IntegratedGradients(model).attribute(x, target=0)
        >>> delta = IntegratedGradients(model).compute_convergence_delta(attr, 0.0, x, target=0)
    """

    def compute_convergence_delta(
        self,
        attributions: Tensor | tuple[Tensor, ...],
        start_point: Any,
        end_point: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Per example: sum of attributions minus ``F(end_point) - F(start_point)``.

        ``start_point`` takes every form ``baselines`` does (None, a number,
        a tensor per input, or one example's shape).
        """
        call = parse_call(end_point, target, additional_forward_args, name="end_point")
        start = full_baselines(call.inputs, start_point, "start_point")
        # Layer methods attribute to a layer, so the number of attribution
        # tensors need not match the number of inputs; only the batch must.
        attrs = as_tuple(attributions, "attributions")
        for i, a in enumerate(attrs):
            if a.shape[0] != call.batch:
                raise ArgumentValueError(
                    f"`attributions[{i}]` has {a.shape[0]} examples but `end_point` has {call.batch}"
                )
        return completeness_delta(self.forward_func, attrs, start, call)

    def _with_delta(
        self,
        result: Any,
        attributions: tuple[Tensor, ...],
        starts: tuple[Tensor, ...],
        call: Call,
        return_convergence_delta: bool,
    ) -> Any:
        """``result``, or ``(result, delta)`` when the delta is asked for.

        ``attributions`` is the flat tuple behind ``result`` (the inputs' or
        a layer's), ``starts`` the path's start for ``call``'s inputs.
        """
        if not return_convergence_delta:
            return result
        delta = self.compute_convergence_delta(attributions, starts, call.inputs, call.target, call.args)
        return result, delta


class PerturbationAttribution(Attribution):
    """Base of the perturbation-based methods (ablation, occlusion, Shapley, LIME)."""

    _multiply_by_inputs = True


class InternalAttribution(Attribution):
    """Shared base of layer and neuron attribution: a model plus a layer."""

    def __init__(
        self,
        forward_func: Callable,
        layer: torch.nn.Module | list[torch.nn.Module],
        device_ids: list[int] | None = None,
    ) -> None:
        super().__init__(forward_func)
        self.layer = layer
        self.device_ids = device_ids


class LayerAttribution(InternalAttribution):
    """Attribution to the neurons of a layer; results have the layer's shape.

    Example:
        >>> import torch
        >>> from attribuo.attr import LayerAttribution
        >>> LayerAttribution.interpolate(torch.ones(1, 2, 4, 4), (8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """

    @staticmethod
    def interpolate(
        layer_attribution: Tensor,
        interpolate_dims: int | tuple[int, ...],
        interpolate_mode: str = "nearest",
    ) -> Tensor:
        """Resize a 3-D, 4-D or 5-D layer attribution to ``interpolate_dims``.

        Dims 0 (examples) and 1 (channels) are kept; the rest are resized with
        ``torch.nn.functional.interpolate`` in ``interpolate_mode``.
        """
        if not isinstance(layer_attribution, Tensor) or layer_attribution.dim() not in (3, 4, 5):
            raise ArgumentValueError(
                "`layer_attribution` must be a 3-D, 4-D or 5-D tensor [examples, channels, ...]"
            )
        spatial = layer_attribution.dim() - 2
        check_interpolate_mode(interpolate_mode)
        dims_of_mode = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}
        if dims_of_mode.get(interpolate_mode, spatial) != spatial:
            raise ArgumentValueError(
                f"`interpolate_mode` {interpolate_mode!r} resizes {dims_of_mode[interpolate_mode]}-D maps, "
                f"but this attribution has {spatial} spatial dims; use 'nearest' or "
                f"{ {1: 'linear', 2: 'bilinear', 3: 'trilinear'}[spatial]!r}"
            )
        if isinstance(interpolate_dims, tuple) and len(interpolate_dims) != spatial:
            raise ArgumentValueError(
                f"`interpolate_dims` must have {spatial} entries for a "
                f"{layer_attribution.dim()}-D attribution, got {interpolate_dims}"
            )
        return F.interpolate(layer_attribution, interpolate_dims, mode=interpolate_mode)


INTERPOLATE_MODES = ("nearest", "nearest-exact", "area", "linear", "bilinear", "bicubic", "trilinear")


def check_interpolate_mode(mode: Any) -> None:
    """``mode`` must be one of torch's interpolation modes (an error naming ``interpolate_mode``)."""
    if mode not in INTERPOLATE_MODES:
        raise ArgumentValueError(f"`interpolate_mode` must be one of {INTERPOLATE_MODES}, got {mode!r}")


class NeuronAttribution(InternalAttribution):
    """Attribution of one neuron of a layer (``neuron_selector``) to the inputs."""
