"""Interpretable inputs: what an LLM attribution perturbs, and how that maps to model inputs.

An interpretable input pairs a model input (a prompt string, token ids, an
image) with a small float/int tensor ``x'`` of shape ``[1, n_itp_features]``
whose entries say whether each interpretable feature (a word, a token, an
image segment) is present (1) or absent (0). Perturbation methods work on
``x'``; :meth:`InterpretableInput.to_model_input` turns a perturbed ``x'``
back into something the model consumes. Used by
:class:`attribuo.attr.LLMAttribution` and :class:`attribuo.attr.LLMGradientAttribution`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..._engine.errors import ArgumentTypeError, ArgumentValueError


def scatter_by_mask(itp_attr: Tensor, index: Tensor) -> Tensor:
    """Spread attributions of interpretable features onto raw elements.

    ``itp_attr`` has shape ``[*out, n_itp_features]``; ``index`` gives, for
    each raw element (any shape), the interpretable feature it belongs to.
    The result has shape ``[*out, *index.shape]``.

    Example:
        >>> scatter_by_mask(torch.tensor([[1.0, 2.0]]), torch.tensor([1, 0, 1]))
        tensor([[2., 1., 2.]])
    """
    flat = itp_attr.index_select(-1, index.reshape(-1).to(itp_attr.device, torch.long))
    return flat.reshape(*itp_attr.shape[:-1], *index.shape)


def _single_row(perturbed_tensor: Tensor, cls: str) -> Tensor:
    # these inputs build one model input (a string, an image) per interpretable row
    if perturbed_tensor.dim() != 2 or perturbed_tensor.shape[0] != 1:
        raise ArgumentValueError(
            f"`perturbed_tensor` of a {cls} must have shape [1, n_itp_features], "
            f"got {tuple(perturbed_tensor.shape)}; pass one row at a time"
        )
    return perturbed_tensor[0]


class InterpretableInput(ABC):
    """Adapter between a model input and its interpretable (presence/absence) form.

    Subclasses set ``n_itp_features`` and ``values`` (one label per feature,
    used as ``input_tokens`` of results) and define :meth:`to_tensor` and
    :meth:`to_model_input`; :meth:`format_attr` maps attributions of the
    interpretable features back onto the raw features when they differ.

    Example:
        >>> class Words(InterpretableInput):
        ...     def __init__(self, words):
        ...         self.values, self.n_itp_features = words, len(words)
        ...     def to_tensor(self):
        ...         return torch.ones(1, self.n_itp_features)
        ...     def to_model_input(self, perturbed_tensor=None):
        ...         keep = [True] * len(self.values) if perturbed_tensor is None else perturbed_tensor[0]
        ...         return " ".join(w for w, k in zip(self.values, keep) if k)
        >>> Words(["a", "b"]).to_model_input(torch.tensor([[0, 1]]))
        'b'
    """

    n_itp_features: int
    values: list[str]

    @abstractmethod
    def to_tensor(self) -> Tensor:
        """The unperturbed interpretable tensor, shape ``[1, n_itp_features]``."""

    @abstractmethod
    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Any:
        """The model input for ``perturbed_tensor`` (the original input when None)."""

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions of the interpretable features in their final form (identity here)."""
        return itp_attr


def _as_list(value: Any, keys: list[str], name: str, what: str) -> list:
    """A list (or, when ``keys`` are set, a dict over them) as a list in key order."""
    if keys:
        if not isinstance(value, dict):
            raise ArgumentTypeError(
                f"`{name}` must be a dict{what} when `values` is a dict, got {type(value).__name__}"
            )
        missing = [k for k in keys if k not in value]
        if missing:
            raise ArgumentValueError(f"`{name}` lacks the keys {missing} of `values`")
        return [value[k] for k in keys]
    if not isinstance(value, list):
        raise ArgumentTypeError(
            f"`{name}` must be a list{what} when `values` is a list, got {type(value).__name__}"
        )
    return list(value)


class TextTemplateInput(InterpretableInput):
    """Text built from a template whose slots are the interpretable features.

    Args:
        template: a format string (``"{} likes {}"``, or with names when
            ``values`` is a dict) or a function of the slot values.
        values: the slot values, a list or a dict.
        baselines: the value of an absent slot (same form as ``values``, or
            a function returning it); empty strings by default.
        mask: groups slots into features (same form as ``values``, one id
            per slot; equal ids are perturbed together and share their
            attribution).

    Example:
        >>> inp = TextTemplateInput("{} feels {} today", ["He", "sad"], baselines=["It", "fine"])
        >>> inp.to_tensor()
        tensor([[1., 1.]])
        >>> inp.to_model_input(torch.tensor([[0, 1]]))
        'It feels sad today'
    """

    def __init__(
        self,
        template: str | Callable[..., str],
        values: list[str] | dict[str, str],
        baselines: list[str] | dict[str, str] | Callable[[], Any] | None = None,
        mask: list[int] | dict[str, int] | None = None,
    ) -> None:
        if isinstance(values, dict):
            self.dict_keys: list[str] = list(values)
            self.values = [values[k] for k in self.dict_keys]
        elif isinstance(values, list):
            self.dict_keys = []
            self.values = list(values)
        else:
            raise ArgumentTypeError(f"`values` must be a list or a dict, got {type(values).__name__}")
        self.n_features = len(self.values)

        if baselines is None:
            baselines = [""] * self.n_features  # an absent slot is removed
        elif not callable(baselines):
            baselines = _as_list(baselines, self.dict_keys, "baselines", " or a callable")
            if len(baselines) != self.n_features:
                raise ArgumentValueError(
                    f"`baselines` has {len(baselines)} entries for {self.n_features} values"
                )
        self.baselines = baselines

        self.mask = mask
        if mask is None:
            self.n_itp_features = self.n_features
        else:
            ids = _as_list(mask, self.dict_keys, "mask", "")
            if len(ids) != self.n_features:
                raise ArgumentValueError(f"`mask` has {len(ids)} entries for {self.n_features} values")
            # features are numbered 0.. in the order of their ids
            position = {mid: i for i, mid in enumerate(sorted(set(ids)))}
            self.formatted_mask = [position[mid] for mid in ids]
            self.n_itp_features = len(position)

        self.template = template
        if isinstance(template, str):
            self.format_fn = template.format
        elif callable(template):
            self.format_fn = template
        else:
            raise ArgumentTypeError(
                f"`template` must be a str or a callable, got {type(template).__name__}"
            )

    def to_tensor(self) -> Tensor:
        return torch.ones(1, self.n_itp_features)

    def _baseline_values(self) -> list[str]:
        if not callable(self.baselines):
            return self.baselines
        produced = _as_list(self.baselines(), self.dict_keys, "baselines()", "")
        if len(produced) != self.n_features:
            raise ArgumentValueError(
                f"`baselines()` returned {len(produced)} entries for {self.n_features} values"
            )
        return produced

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> str:
        slots = list(self.values)
        if perturbed_tensor is not None:
            present = _single_row(perturbed_tensor, type(self).__name__).tolist()
            fill = self._baseline_values()
            for i in range(self.n_features):
                feature = i if self.mask is None else self.formatted_mask[i]
                if not present[feature]:
                    slots[i] = fill[i]
        if self.dict_keys:
            return self.format_fn(**dict(zip(self.dict_keys, slots)))
        return self.format_fn(*slots)

    def format_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions per slot: grouped slots share their feature's value."""
        if self.mask is None:
            return itp_attr
        return scatter_by_mask(itp_attr, torch.tensor(self.formatted_mask))


class TextTokenInput(InterpretableInput):
    """Text whose interpretable features are its tokens.

    The model input is the token id tensor ``tokenizer.encode(text,
    return_tensors="pt")``; an absent token is replaced by ``baselines`` (a
    token id, or a token string converted with the tokenizer). Tokens in
    ``skip_tokens`` (ids or strings, e.g. the start-of-sequence token) are
    never perturbed and get no attribution.

    Example:
        >>> class Chars:  # a tokenizer: one id per character, 0 = start
        ...     def encode(self, text, return_tensors=None, add_special_tokens=True):
        ...         return torch.tensor([[0] + [ord(c) for c in text]])
        ...     def convert_ids_to_tokens(self, ids):
        ...         return ["<s>" if i == 0 else chr(i) for i in ids]
        >>> inp = TextTokenInput("ab", Chars(), baselines=1, skip_tokens=[0])
        >>> inp.values, inp.to_model_input(torch.tensor([[0, 1]]))
        (['a', 'b'], tensor([[ 0,  1, 98]]))
    """

    def __init__(
        self,
        text: str,
        tokenizer: Any,
        baselines: int | str = 0,
        skip_tokens: list[int] | list[str] | None = None,
    ) -> None:
        if not isinstance(text, str):
            raise ArgumentTypeError(f"`text` must be a str, got {type(text).__name__}")
        ids = tokenizer.encode(text, return_tensors="pt")
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
            raise ArgumentValueError(
                "`tokenizer.encode(text, return_tensors='pt')` must return a [1, n_tokens] tensor"
            )
        self.inp_tensor = ids
        self.itp_tensor = ids
        self.itp_mask: Tensor | None = None
        if skip_tokens:
            if isinstance(skip_tokens[0], str):
                skip_tokens = list(tokenizer.convert_tokens_to_ids(list(skip_tokens)))
            skipped = torch.tensor(list(skip_tokens), dtype=ids.dtype)
            self.itp_mask = ~torch.isin(ids, skipped)
            self.itp_tensor = ids[self.itp_mask].unsqueeze(0)
        self.skip_tokens = skip_tokens
        self.tokenizer = tokenizer
        self.values = list(tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist()))
        self.n_itp_features = len(self.values)
        if isinstance(baselines, bool) or not isinstance(baselines, (int, str)):
            raise ArgumentTypeError(
                f"`baselines` must be a token id (int) or a token (str), got {type(baselines).__name__}"
            )
        self.baselines = (
            baselines if isinstance(baselines, int)
            else tokenizer.convert_tokens_to_ids([baselines])[0]
        )

    def to_tensor(self) -> Tensor:
        return torch.ones_like(self.itp_tensor)

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Tensor:
        """Token ids, one row per row of ``perturbed_tensor`` (entries != 1 are replaced)."""
        if perturbed_tensor is None:
            return self.inp_tensor
        if perturbed_tensor.dim() != 2 or perturbed_tensor.shape[1] != self.n_itp_features:
            raise ArgumentValueError(
                f"`perturbed_tensor` must have shape [n, {self.n_itp_features}], "
                f"got {tuple(perturbed_tensor.shape)}"
            )
        device = perturbed_tensor.device
        itp = self.itp_tensor.to(device).expand(perturbed_tensor.shape[0], -1)
        ids = torch.where(perturbed_tensor != 1, torch.full_like(itp, self.baselines), itp)
        if self.itp_mask is None:
            return ids
        full = self.inp_tensor.to(device).expand(ids.shape[0], -1).clone()
        full[self.itp_mask.to(device).expand_as(full)] = ids.reshape(-1)
        return full


class ImageMaskInput(InterpretableInput):
    """An image whose interpretable features are pixel segments.

    Args:
        image: a ``PIL.Image.Image``.
        mask: ``[height, width]`` segment ids (pixels with one id form a
            feature); the whole image is one feature when None.
        mask_list: boolean ``[height, width]`` masks, one per feature
            (they may overlap); takes precedence over ``mask``.
        baseline: RGB value given to the pixels of absent segments.
        processor_fn: turns a (perturbed) image into the model input,
            e.g. a multi-modal LLM's processor; identity by default.

    Example:
        >>> import PIL.Image
        >>> image = PIL.Image.new("RGB", (4, 2), (0, 0, 0))
        >>> mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
        >>> inp = ImageMaskInput(image, mask=mask)
        >>> out = inp.to_model_input(torch.tensor([[1, 0]]))
        >>> out.getpixel((3, 0)), out.getpixel((0, 0))
        ((255, 255, 255), (0, 0, 0))
    """

    def __init__(
        self,
        image: Any,
        mask: Tensor | None = None,
        mask_list: list[Tensor] | None = None,
        baseline: tuple[int, int, int] = (255, 255, 255),
        processor_fn: Callable[[Any], Any] = lambda x: x,
    ) -> None:
        self.image = image
        self.baseline = baseline
        self.processor_fn = processor_fn
        shape = (image.size[1], image.size[0])  # PIL sizes are (width, height)
        if mask_list is not None:
            for i, m in enumerate(mask_list):
                if tuple(m.shape) != shape:
                    raise ArgumentValueError(
                        f"`mask_list[{i}]` has shape {tuple(m.shape)}, the image is {shape}"
                    )
            ids = list(range(len(mask_list)))
            mask = torch.empty(0)
        else:
            if mask is None:
                mask = torch.zeros(shape, dtype=torch.int32)
            elif tuple(mask.shape) != shape:
                raise ArgumentValueError(f"`mask` has shape {tuple(mask.shape)}, the image is {shape}")
            ids = torch.unique(mask).cpu().tolist()
            mask_list = []
        self.mask = mask
        self.mask_list = mask_list
        self.n_itp_features = len(ids)
        self.mask_id_to_idx = {int(mid): i for i, mid in enumerate(ids)}
        self.values = [f"image_feature_{mid}" for mid in ids]
        self.original_model_inputs = processor_fn(image)

    def to_tensor(self) -> Tensor:
        return torch.ones(1, self.n_itp_features)

    def get_mask_list(self) -> list[Tensor]:
        """One boolean ``[height, width]`` mask per feature."""
        return self.mask_list or [self.mask == mid for mid in self.mask_id_to_idx]

    def to_model_input(self, perturbed_tensor: Tensor | None = None) -> Any:
        if perturbed_tensor is None:
            return self.original_model_inputs
        import numpy as np
        import PIL.Image

        present = _single_row(perturbed_tensor, type(self).__name__).tolist()
        pixels = np.array(self.image)
        for feature, region in enumerate(self.get_mask_list()):
            if present[feature] == 0:
                pixels[region.bool().cpu().numpy()] = self.baseline
        return self.processor_fn(PIL.Image.fromarray(pixels.astype("uint8")))

    def plot_mask_overlay(
        self, show: bool = False, border_width: int = 0, show_legends: bool = True
    ) -> tuple[Any, Any] | None:
        """The image with each segment tinted in a random colour, outlined and labelled by its id.

        Drawn by :func:`attribuo.attr.visualization.visualize_mask_overlay`;
        ``(fig, ax)`` unless ``show``.
        """
        import numpy as np

        from ..visualization import visualize_mask_overlay

        return visualize_mask_overlay(np.array(self.image), *self._masks_for_plot(), show, border_width, show_legends)

    def _masks_for_plot(self) -> tuple[list[Any], list[str]]:
        """The features' masks as boolean numpy arrays, and their labels (the mask ids)."""
        return [m.cpu().numpy().astype(bool) for m in self.get_mask_list()], [str(m) for m in self.mask_id_to_idx]

    def format_pixel_attr(self, itp_attr: Tensor) -> Tensor:
        """Attributions per pixel, ``[*out, height, width]`` (overlapping features add up)."""
        masks = torch.stack([m.bool() for m in self.get_mask_list()]).to(itp_attr.device)
        return torch.einsum("...f,fhw->...hw", itp_attr, masks.to(itp_attr.dtype))
