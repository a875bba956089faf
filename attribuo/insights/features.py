"""Feature descriptions for Insights: how one model input is built, baselined and shown.

Each model input (one tensor of the batch) is described by a feature. The
feature knows how to turn raw data into model input (``input_transforms``),
how to build a reference input (``baseline_transforms``), and how to turn an
attribution into JSON that the page draws (``visualize``). The constructor
arguments follow Captum's ``captum.insights.features``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentTypeError, ArgumentValueError

FeatureOutput = namedtuple("FeatureOutput", "name base modified type contribution")
"""What ``visualize`` returns: feature name, the data to show (``base``), the
attribution to draw over it (``modified``), the feature type and the feature's
share of the net attribution (``contribution``, in [-1, 1])."""

Transforms = Callable | Sequence[Callable] | None


def format_transforms(transforms: Transforms, name: str) -> list[Callable]:
    """``None`` -> ``[]``, one callable -> ``[callable]``, a list stays a list (checked)."""
    if transforms is None:
        return []
    if callable(transforms):
        return [transforms]
    if isinstance(transforms, (list, tuple)) and all(callable(t) for t in transforms):
        return list(transforms)
    raise ArgumentTypeError(f"`{name}` must be a callable, a list of callables or None")


def _scaled(values: Tensor, scale: Tensor) -> list[float]:
    """``values / scale`` as plain floats; all zeros when the scale is zero."""
    values = values.detach().to(torch.float64).cpu()
    if float(scale) == 0.0:
        return [0.0] * values.numel()
    return (values / float(scale)).reshape(-1).tolist()


class BaseFeature:
    """Base class of all Insights features; subclasses define the visualization.

    Args:
        name: label shown on the page, e.g. ``"Photo"``.
        baseline_transforms: callables that build a baseline from one
            (transformed) example; only the first is used. ``None`` means a
            zero baseline.
        input_transforms: callables applied in order to one raw example to
            give the model's input (normalisation, embedding, ...).
        visualization_transform: callable applied to the raw example to give
            what the page shows (e.g. token ids to words).

    Example:
        >>> class Scalar(BaseFeature):
        ...     @staticmethod
        ...     def visualization_type():
        ...         return "scalar"
        >>> Scalar("x", None, None, None).baseline_transforms
        []
    """

    def __init__(
        self,
        name: str,
        baseline_transforms: Transforms,
        input_transforms: Transforms,
        visualization_transform: Callable | None,
    ) -> None:
        if not isinstance(name, str):
            raise ArgumentTypeError(f"`name` must be a string, got {type(name).__name__}")
        if visualization_transform is not None and not callable(visualization_transform):
            raise ArgumentTypeError("`visualization_transform` must be callable or None")
        self.name = name
        self.baseline_transforms = format_transforms(baseline_transforms, "baseline_transforms")
        self.input_transforms = format_transforms(input_transforms, "input_transforms")
        self.visualization_transform = visualization_transform

    @staticmethod
    def visualization_type() -> str:
        """The type tag the page dispatches on (``"image"``, ``"text"``, ...)."""
        raise NotImplementedError

    def visualize(self, attribution: Tensor, data: Tensor, contribution_frac: float) -> FeatureOutput:
        """JSON-ready description of one example's ``data`` and its ``attribution``."""
        raise NotImplementedError


class ImageFeature(BaseFeature):
    """An image input in NCHW (or CHW) layout; 1 channel is grey, 3 channels RGB.

    The page draws the image and, over it, a heat map of the attribution
    summed over channels, scaled by its largest absolute value (red is
    positive, blue negative).

    Example:
        >>> import torch
        >>> f = ImageFeature("Digit", baseline_transforms=None, input_transforms=None)
        >>> out = f.visualize(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 1.0)
        >>> out.modified["values"]
        [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        name: str,
        baseline_transforms: Transforms,
        input_transforms: Transforms,
        visualization_transform: Callable | None = None,
    ) -> None:
        super().__init__(name, baseline_transforms, input_transforms, visualization_transform)

    @staticmethod
    def visualization_type() -> str:
        return "image"

    def visualize(self, attribution: Tensor, data: Tensor, contribution_frac: float) -> FeatureOutput:
        if self.visualization_transform is not None:
            data = self.visualization_transform(data)
        image = _chw(data, "data")
        attr = _chw(attribution, "attribution").to(torch.float64)
        if image.shape[0] not in (1, 3):
            raise ArgumentValueError(
                f"ImageFeature `{self.name}` needs 1 (grey) or 3 (RGB) channels, "
                f"got {image.shape[0]}"
            )
        height, width = image.shape[1:]
        heat = attr.sum(0)
        if heat.shape != (height, width):
            raise ArgumentValueError(
                f"attribution of `{self.name}` has spatial shape {tuple(heat.shape)}, "
                f"the image has {(height, width)}"
            )
        base = {
            "width": width,
            "height": height,
            "channels": image.shape[0],
            "pixels": _to_bytes(image).permute(1, 2, 0).reshape(-1).tolist(),
        }
        scale = heat.abs().max()
        modified = {"width": width, "height": height, "values": _scaled(heat, scale),
                    "scale": float(scale)}
        return FeatureOutput(self.name, base, modified, self.visualization_type(),
                             contribution_frac)


def _chw(t: Any, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ArgumentTypeError(f"`{name}` of an image must be a tensor, got {type(t).__name__}")
    t = t.detach().cpu()
    while t.dim() > 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ArgumentValueError(f"`{name}` of an image must be CHW or 1xCHW, got {tuple(t.shape)}")
    return t


def _to_bytes(image: Tensor) -> Tensor:
    """Pixel values as 0..255 integers: uint8 kept, floats in [0, 1] scaled, else min-max."""
    if image.dtype == torch.uint8:
        return image.to(torch.int64)
    image = image.to(torch.float64)
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        image = (image - lo) / (hi - lo) if hi > lo else torch.zeros_like(image)
    return (image * 255.0).round().clamp(0, 255).to(torch.int64)


class TextFeature(BaseFeature):
    """A sequence input shown as tokens coloured by their attribution.

    ``visualization_transform`` maps the raw example to its tokens (a list of
    strings, or one string split on whitespace). Attributions of more than one
    dimension per token (embeddings) are summed over the last dimension and
    scaled to [-100, 100] by the largest absolute value.

    Example:
        >>> import torch
        >>> f = TextFeature("Review", None, None, lambda ids: ["good", "film"])
        >>> f.visualize(torch.tensor([[2.0, -1.0]]), torch.tensor([[4, 7]]), 1.0).modified
        [100.0, -50.0]
    """

    def __init__(
        self,
        name: str,
        baseline_transforms: Transforms,
        input_transforms: Transforms,
        visualization_transform: Callable,
    ) -> None:
        super().__init__(name, baseline_transforms, input_transforms, visualization_transform)

    @staticmethod
    def visualization_type() -> str:
        return "text"

    def visualize(self, attribution: Tensor, data: Any, contribution_frac: float) -> FeatureOutput:
        tokens = self.visualization_transform(data) if self.visualization_transform else data
        if isinstance(tokens, str):
            tokens = tokens.split()
        elif isinstance(tokens, Tensor):
            tokens = [str(v) for v in tokens.reshape(-1).tolist()]
        tokens = [str(t) for t in tokens]
        attr = attribution.detach()
        if attr.dim() > 0 and attr.shape[0] == 1:
            attr = attr[0]
        if attr.dim() > 1:
            attr = attr.reshape(attr.shape[0], -1).sum(1)
        attr = attr.reshape(-1).to(torch.float64)
        modified = [100.0 * v for v in _scaled(attr, attr.abs().max())]
        return FeatureOutput(self.name, tokens, modified, self.visualization_type(),
                             contribution_frac)


class GeneralFeature(BaseFeature):
    """A dense or sparse vector input, shape (N, C), shown as one bar per category.

    Bars are the attribution scaled by its L2 norm, times 100.

    Example:
        >>> import torch
        >>> f = GeneralFeature("Vitals", ["pulse", "temp"])
        >>> f.visualize(torch.tensor([[3.0, 4.0]]), torch.tensor([[60.0, 37.0]]), 1.0).modified
        [60.0, 80.0]
    """

    def __init__(self, name: str, categories: list[str]) -> None:
        super().__init__(name, None, None, None)
        if not isinstance(categories, (list, tuple)) or not all(
            isinstance(c, str) for c in categories
        ):
            raise ArgumentTypeError("`categories` must be a list of strings")
        self.categories = list(categories)

    @staticmethod
    def visualization_type() -> str:
        return "general"

    def visualize(self, attribution: Tensor, data: Tensor, contribution_frac: float) -> FeatureOutput:
        attr = attribution.detach().reshape(-1).to(torch.float64)
        values = data.detach().reshape(-1).to(torch.float64).tolist()
        if len(values) != len(self.categories) or attr.numel() != len(self.categories):
            raise ArgumentValueError(
                f"GeneralFeature `{self.name}` has {len(self.categories)} categories but "
                f"one example has {len(values)} values"
            )
        modified = [100.0 * v for v in _scaled(attr, attr.norm())]
        base = [f"{c}: {v:.2f}" for c, v in zip(self.categories, values)]
        return FeatureOutput(self.name, base, modified, self.visualization_type(),
                             contribution_frac)


class EmptyFeature(BaseFeature):
    """A model input that is not shown (only its net contribution is reported)."""

    def __init__(
        self,
        name: str = "empty",
        baseline_transforms: Transforms = None,
        input_transforms: Transforms = None,
        visualization_transform: Callable | None = None,
    ) -> None:
        super().__init__(name, baseline_transforms, input_transforms, visualization_transform)

    @staticmethod
    def visualization_type() -> str:
        return "empty"

    def visualize(self, attribution: Tensor, data: Tensor, contribution_frac: float) -> FeatureOutput:
        return FeatureOutput(self.name, None, None, self.visualization_type(), contribution_frac)
