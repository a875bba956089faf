"""The attribution methods the Insights page offers, with their arguments.

Each entry names its class in ``attribuo.attr``; the class is looked up
when a request arrives, so a method appears on the page as soon as the
library has it. Every argument carries its kind, default and range; the
page builds its form from :func:`describe_methods` and the server checks
each request with :meth:`MethodSpec.parse_arguments`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


class RequestError(ValueError):
    """A request the server refuses (answered with HTTP 400 and this message)."""


@dataclass(frozen=True)
class Param:
    """One argument of an attribution method as the page shows and the server checks it.

    ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"enum"`` (one of
    ``choices``) or ``"shape"`` (integers separated by commas or spaces, one
    group per input separated by ``;``; empty means automatic).

    Example:
        >>> Param("n_steps", "int", 25, minimum=2, maximum=300).parse(50)
        50
    """

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def describe(self) -> dict[str, Any]:
        """JSON description: the page renders an input from it."""
        return {
            "name": self.name,
            "type": self.kind,
            "default": self.default,
            "min": self.minimum,
            "max": self.maximum,
            "choices": list(self.choices),
            "help": self.help,
        }

    def parse(self, value: Any) -> Any:
        """Checked Python value of a JSON ``value``; :class:`RequestError` if it is unusable."""
        where = f"argument `{self.name}`"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise RequestError(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind == "enum":
            if value not in self.choices:
                raise RequestError(f"{where} must be one of {list(self.choices)}, got {value!r}")
            return value
        if self.kind == "shape":
            return parse_shape(value, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(f"{where} must be a number, got {value!r}")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise RequestError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise RequestError(f"{where} must be finite, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise RequestError(f"{where} must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise RequestError(f"{where} must be <= {self.maximum}, got {value}")
        return value


def parse_shape(value: Any, where: str) -> tuple[tuple[int, ...], ...] | None:
    """``"1,3,3"`` -> ``((1, 3, 3),)``; ``"1 2 2; 4"`` -> ``((1, 2, 2), (4,))``; ``""`` -> None.

    Only the ASCII digits 0-9 count as digits; anything else is a :class:`RequestError`
    naming ``where``.

    Example:
        >>> parse_shape("1,2,2", "argument `strides`")
        ((1, 2, 2),)
    """
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string of integers such as '1,3,3', got {value!r}")
    if len(value) > 200:
        raise RequestError(f"{where} is too long")
    if not value.strip():
        return None
    groups = []
    for part in value.split(";"):
        items = part.replace(",", " ").split()
        # isdigit() alone lets '¹' or '٣' through, which int() then refuses
        if not items or not all(i.isascii() and i.isdigit() for i in items):
            raise RequestError(
                f"{where} must be positive integers written with the digits 0-9 and "
                f"separated by commas (one group per input, groups separated by ';'), "
                f"got {value!r}"
            )
        numbers = tuple(int(i) for i in items)
        if any(n < 1 or n > 100_000 for n in numbers):
            raise RequestError(f"{where} entries must be between 1 and 100000, got {value!r}")
        groups.append(numbers)
    return tuple(groups)


Shapes = list[tuple[int, ...]]
Kinds = list[str]  # each input's feature type ("image", "text", "general", ...)


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method on the page: its class (by name), label and arguments.

    ``wraps`` names the method a ``NoiseTunnel`` entry wraps. ``prepare``
    (optional) completes and checks the parsed arguments against the shapes
    of one example's inputs (without the batch dimension).
    """

    id: str
    label: str
    class_name: str
    params: tuple[Param, ...] = ()
    wraps: str | None = None
    prepare: Callable[[dict[str, Any], Shapes, Kinds], dict[str, Any]] | None = field(
        default=None, compare=False
    )
    applies: Callable[[Any], bool] | None = field(default=None, compare=False)
    needs: str = ""  # what a model must be for ``applies``, said when it is not

    def suits(self, model: Any) -> bool:
        """Whether the method works on ``model`` (transformer methods need attention layers)."""
        return self.applies is None or self.applies(model)

    def classes(self) -> tuple[type, type | None] | None:
        """The classes from ``attribuo.attr`` now, or None while the library lacks one."""
        module = importlib.import_module("attribuo.attr")
        cls = getattr(module, self.class_name, None)
        inner = getattr(module, self.wraps, None) if self.wraps else None
        if cls is None or (self.wraps and inner is None):
            return None
        return cls, inner

    def available(self) -> bool:
        return self.classes() is not None

    def build(self, model: Callable) -> Any:
        """An instance of the method for ``model``."""
        found = self.classes()
        if found is None:
            raise RequestError(f"method `{self.id}` is not available in this version of attribuo")
        cls, inner = found
        return cls(inner(model)) if inner is not None else cls(model)

    def takes_baselines(self) -> bool:
        """Whether ``attribute`` (of the wrapped method, for NoiseTunnel) accepts ``baselines``."""
        found = self.classes()
        if found is None:
            return False
        cls = found[1] or found[0]
        return "baselines" in inspect.signature(cls.attribute).parameters

    def parse_arguments(self, arguments: Any, shapes: Shapes | None = None,
                        kinds: Kinds | None = None) -> dict[str, Any]:
        """Checked keyword arguments for ``attribute``; defaults fill what is missing."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RequestError("`arguments` must be a JSON object")
        known = {p.name: p for p in self.params}
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise RequestError(
                f"method `{self.id}` has no argument {unknown[0]!r}; it takes {sorted(known)}"
            )
        parsed = {
            name: p.parse(arguments[name]) if name in arguments else p.parse(p.default)
            for name, p in known.items()
        }
        if self.prepare is not None and shapes is not None:
            parsed = self.prepare(parsed, shapes, kinds or ["other"] * len(shapes))
        return parsed

    def describe(self, models: list[Any] | None = None) -> dict[str, Any]:
        out = {
            "id": self.id,
            "label": self.label,
            "arguments": [p.describe() for p in self.params],
        }
        if models is not None:
            out["models"] = [i for i, m in enumerate(models) if self.suits(m)]
        return out


def _occlusion_prepare(args: dict[str, Any], shapes: Shapes, kinds: Kinds) -> dict[str, Any]:
    """Fill the automatic window and check sizes.

    The automatic window is a quarter of each spatial side with all channels
    of an image, and one whole token (all its embedding values) of text.
    """
    windows = args.get("sliding_window_shapes")
    if windows is None:
        windows = tuple(_auto_window(s, k) for s, k in zip(shapes, kinds))
    windows = _per_input(windows, shapes, "sliding_window_shapes")
    for w, s in zip(windows, shapes):
        if any(a > b for a, b in zip(w, s)):
            raise RequestError(
                f"argument `sliding_window_shapes` {w} is larger than the input {s}"
            )
    strides = args.get("strides")
    if strides is not None:
        strides = _per_input(strides, shapes, "strides")
    return {**args, "sliding_window_shapes": windows, "strides": strides}


def _auto_window(shape: tuple[int, ...], kind: str = "other") -> tuple[int, ...]:
    if kind == "text" and len(shape) >= 2:  # tokens x embedding: one token at a time
        return (1,) + tuple(shape[1:])
    if len(shape) >= 3:  # channels first: occlude all channels together
        return (shape[0],) + tuple(max(1, -(-d // 4)) for d in shape[1:])
    return tuple(max(1, -(-d // 4)) for d in shape)


def _ablation_prepare(args: dict[str, Any], shapes: Shapes, kinds: Kinds) -> dict[str, Any]:
    """One feature per token of a text input (not per embedding value); elsewhere per value."""
    if not any(k == "text" and len(s) >= 2 for s, k in zip(shapes, kinds)):
        return args
    masks, offset = [], 0
    for shape, kind in zip(shapes, kinds):
        if kind == "text" and len(shape) >= 2:
            ids = torch.arange(shape[0]).reshape((1, shape[0]) + (1,) * (len(shape) - 1))
            mask = ids.expand((1,) + tuple(shape))
        else:
            mask = torch.arange(math.prod(shape)).reshape((1,) + tuple(shape))
        masks.append(mask + offset)
        offset += int(mask.max()) + 1
    return {**args, "feature_mask": tuple(masks)}


def feature_groups(args: dict[str, Any], shapes: Shapes) -> int:
    """Features a FeatureAblation call ablates: its mask's groups, else every value."""
    masks = args.get("feature_mask")
    if masks is None:
        return sum(math.prod(s) for s in shapes)
    return sum(int(m.unique().numel()) for m in masks)


def _per_input(groups: tuple[tuple[int, ...], ...], shapes: Shapes, name: str) -> tuple:
    if len(groups) != len(shapes):
        raise RequestError(
            f"argument `{name}` has {len(groups)} group(s) but the model takes "
            f"{len(shapes)} input(s); separate groups with ';'"
        )
    for g, s in zip(groups, shapes):
        if len(g) != len(s):
            raise RequestError(
                f"argument `{name}` group {g} must have {len(s)} entries, one per "
                f"dimension of an input of shape {s}"
            )
    return groups


_NT = (
    Param("nt_type", "enum", "smoothgrad", choices=("smoothgrad", "smoothgrad_sq", "vargrad"),
          help="how the noisy attributions are combined"),
    Param("nt_samples", "int", 10, minimum=1, maximum=100, help="noisy copies per example"),
    Param("stdevs", "float", 0.2, minimum=0.0, maximum=100.0,
          help="standard deviation of the Gaussian noise"),
)
_IG = (
    Param("n_steps", "int", 25, minimum=2, maximum=300, help="steps of the path integral"),
    Param("method", "enum", "gausslegendre",
          choices=("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                   "riemann_trapezoid"),
          help="integration rule"),
)
def has_attention(model: Any) -> bool:
    """A transformer: some submodule is an attention layer (Hugging Face or torch)."""
    if not isinstance(model, torch.nn.Module):
        return False
    return any(isinstance(m, torch.nn.MultiheadAttention) or type(m).__name__.endswith("Attention")
               for m in model.modules())


_TRANSFORMER = {"applies": has_attention, "needs": "a transformer (a model with attention layers)"}
_PER_EVAL = Param("perturbations_per_eval", "int", 16, minimum=1, maximum=512,
                  help="perturbed copies evaluated per forward pass")

METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("IntegratedGradients", "Integrated Gradients", "IntegratedGradients", _IG),
    MethodSpec("Saliency", "Saliency", "Saliency",
               (Param("abs", "bool", True, help="absolute value of the gradient"),)),
    MethodSpec("InputXGradient", "Input X Gradient", "InputXGradient"),
    MethodSpec("DeepLift", "DeepLift", "DeepLift"),
    MethodSpec("GradientShap", "Gradient SHAP", "GradientShap", (
        Param("n_samples", "int", 10, minimum=1, maximum=200, help="random samples per example"),
        Param("stdevs", "float", 0.0, minimum=0.0, maximum=100.0,
              help="standard deviation of the noise added to each sample"),
    )),
    MethodSpec("Occlusion", "Occlusion", "Occlusion", (
        Param("sliding_window_shapes", "shape", "",
              help="window per input, e.g. 1,2,2 (empty: a quarter of each side)"),
        Param("strides", "shape", "", help="step of the window, e.g. 1,1,1 (empty: 1)"),
        _PER_EVAL,
    ), prepare=_occlusion_prepare),
    MethodSpec("FeatureAblation", "Feature Ablation", "FeatureAblation", (_PER_EVAL,),
               prepare=_ablation_prepare),
    MethodSpec("GuidedBackprop", "Guided Backprop", "GuidedBackprop"),
    MethodSpec("Deconvolution", "Deconvolution", "Deconvolution"),
    MethodSpec("NoiseTunnel[Saliency]", "NoiseTunnel (Saliency)", "NoiseTunnel", _NT,
               wraps="Saliency"),
    MethodSpec("NoiseTunnel[InputXGradient]", "NoiseTunnel (Input X Gradient)", "NoiseTunnel",
               _NT, wraps="InputXGradient"),
    MethodSpec("NoiseTunnel[IntegratedGradients]", "NoiseTunnel (Integrated Gradients)",
               "NoiseTunnel", _NT + (Param("n_steps", "int", 10, minimum=2, maximum=100,
                                           help="steps of the path integral"),),
               wraps="IntegratedGradients"),
    MethodSpec("IDGI", "IDGI", "IDGI", (
        Param("n_steps", "int", 25, minimum=2, maximum=300, help="steps of the path"),)),
    MethodSpec("GuidedIntegratedGradients", "Guided Integrated Gradients", "GuidedIntegratedGradients", (
        Param("n_steps", "int", 50, minimum=2, maximum=300, help="steps of the adaptive path"),
        Param("fraction", "float", 0.25, minimum=0.01, maximum=1.0,
              help="share of features moved at each step"),
    )),
    MethodSpec("BlurIntegratedGradients", "Blur Integrated Gradients", "BlurIntegratedGradients", (
        Param("n_steps", "int", 25, minimum=2, maximum=300, help="steps in scale space"),
        Param("max_sigma", "float", 50.0, minimum=0.1, maximum=500.0,
              help="blur of the path's start (Gaussian sigma, pixels)"),
    )),
    MethodSpec("XRAI", "XRAI (regions)", "XRAI", (
        Param("n_steps", "int", 25, minimum=2, maximum=300,
              help="steps of the Integrated Gradients it ranks regions by"),)),
    MethodSpec("RISE", "RISE (random masks)", "RISE", (
        Param("n_masks", "int", 1000, minimum=10, maximum=8000, help="random masks"),
        Param("grid_size", "int", 7, minimum=2, maximum=32, help="cells per side of a mask"),
        Param("seed", "int", 0, minimum=0, maximum=2**31 - 1, help="seed of the masks"),
    )),
    MethodSpec("SobolAttribution", "Sobol attribution", "SobolAttribution", (
        Param("grid_size", "int", 4, minimum=2, maximum=11, help="cells per side of the grid"),
        Param("nb_design", "int", 32, minimum=2, maximum=256, help="quasi-Monte-Carlo designs"),
    )),
    MethodSpec("PartitionShap", "Partition SHAP (Owen values)", "PartitionShap", (
        Param("max_evals", "int", 500, minimum=3, maximum=5000, help="model evaluations per example"),)),
    MethodSpec("AttnLRP", "AttnLRP (transformers)", "AttnLRP", **_TRANSFORMER),
    MethodSpec("AttentionRelevance", "Chefer relevance (transformers)", "AttentionRelevance",
               **_TRANSFORMER),
    MethodSpec("AttentionRollout", "Attention rollout (transformers)", "AttentionRollout",
               **_TRANSFORMER),
)


def find_method(name: Any) -> MethodSpec:
    """The registry entry called ``name`` (its id or its label); :class:`RequestError` if none."""
    if not isinstance(name, str):
        raise RequestError(f"`method` must be a string, got {name!r}")
    for spec in METHODS:
        if name in (spec.id, spec.label):
            return spec
    raise RequestError(f"unknown method {name!r}; known: {[m.id for m in METHODS]}")


def describe_methods(models: list[Any] | None = None) -> list[dict[str, Any]]:
    """The methods available now, each with its arguments, for the page's form.

    With ``models``, only methods that suit at least one of them, each
    listing the indices of the models it suits.
    """
    specs = [spec for spec in METHODS if spec.available()]
    if models is not None:
        specs = [spec for spec in specs if any(spec.suits(m) for m in models)]
    return [spec.describe(models) for spec in specs]
