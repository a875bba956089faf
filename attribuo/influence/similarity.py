"""SimilarityInfluence: training examples whose layer activations resemble the inputs'."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import format_additional_args, positive_int
from .._engine.sites import site_values
from .base import DataInfluence, check_k, module_by_name


def euclidean_distance(test: Tensor, train: Tensor) -> Tensor:
    """Pairwise Euclidean distances ``(n_test, n_train)`` between flattened rows.

    Example:
        >>> import torch
        >>> euclidean_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([[5.]])
    """
    return torch.cdist(test.reshape(len(test), -1)[None], train.reshape(len(train), -1)[None])[0]


def cosine_similarity(test: Tensor, train: Tensor, replace_nan: float = 0) -> Tensor:
    """Pairwise cosine similarity ``(n_test, n_train)`` between flattened rows.

    A pair in which either row is all zeros (cosine undefined) gets ``replace_nan``.

    Example:
        >>> import torch
        >>> cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]]), -2)
        tensor([[ 1., -2.]])
    """
    test = test.reshape(len(test), -1)
    train = train.reshape(len(train), -1)
    test_norm = torch.linalg.vector_norm(test, dim=1, keepdim=True)
    train_norm = torch.linalg.vector_norm(train, dim=1, keepdim=True)
    sim = (test / test_norm.where(test_norm != 0, 1)) @ (train / train_norm.where(train_norm != 0, 1)).T
    undefined = (test_norm == 0) | (train_norm.T == 0)
    return sim.masked_fill(undefined, replace_nan)


class SimilarityInfluence(DataInfluence):
    """Rank training examples by the similarity of their activations at ``layers``.

    Activations of ``influence_src_dataset`` (batched by ``batch_size``; a
    batch that is a tuple or list contributes its first element as the model
    input) are computed once per layer and cached under
    ``activation_dir/model_id``. ``similarity_direction="max"`` ranks the
    largest similarity first (cosine), ``"min"`` the smallest (distances).
    For cosine similarity, pairs with an all-zero activation get
    ``replace_nan`` (default -2 for "max", 2 for "min", so they rank last)
    and are listed under the key ``"zero_acts-<layer>"`` with a warning.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attribuo.influence import SimilarityInfluence
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> src = TensorDataset(torch.randn(10, 3), torch.zeros(10))
        >>> sim = SimilarityInfluence(model, "1", src, tempfile.mkdtemp(), batch_size=4)
        >>> idx, scores = sim.influence(torch.randn(2, 3), top_k=3)["1"]
        >>> idx.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        module: nn.Module,
        layers: str | list[str],
        influence_src_dataset: Dataset,
        activation_dir: str,
        model_id: str = "",
        similarity_metric: Callable = cosine_similarity,
        similarity_direction: str = "max",
        batch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ArgumentTypeError(f"`module` must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers or not all(isinstance(s, str) for s in self.layers):
            raise ArgumentValueError(f"`layers` must be a module name or a list of them, got {layers!r}")
        self.layer_modules = [module_by_name(module, s, "layers") for s in self.layers]
        if similarity_direction not in ("max", "min"):
            raise ArgumentValueError(
                f"`similarity_direction` must be 'max' or 'min', got {similarity_direction!r}"
            )
        positive_int(batch_size, "batch_size")
        if not callable(similarity_metric):
            raise ArgumentTypeError("`similarity_metric` must be callable")
        self.similarity_direction = similarity_direction
        self.influence_src_dataset = influence_src_dataset
        self.activation_dir = activation_dir
        self.model_id = model_id
        self.batch_size = batch_size
        self._cosine = similarity_metric is cosine_similarity
        if self._cosine:
            self.replace_nan = kwargs.get("replace_nan", -2 if similarity_direction == "max" else 2)
            similarity_metric = partial(cosine_similarity, replace_nan=self.replace_nan)
        self.similarity_metric = similarity_metric
        self.influence_src_dataloader = DataLoader(influence_src_dataset, batch_size, shuffle=False)

    # -- activations ----------------------------------------------------

    def _activations(self, inputs: Any, args: tuple[Any, ...] = ()) -> list[Tensor]:
        feats = inputs if isinstance(inputs, tuple) else (inputs,)
        with torch.no_grad():
            records = site_values(self.module, self.layer_modules, feats, args, stop=True)
        return [r.values[0] for r in records]

    def _folder(self, layer: str) -> str:
        return os.path.join(self.activation_dir, self.model_id, "src", layer)

    def _source_activations(self, load_from_disk: bool) -> list[list[Tensor]]:
        """Per layer, the list of per-batch activations of the source dataset."""
        folders = [self._folder(layer) for layer in self.layers]
        cached = [sorted(glob.glob(os.path.join(f, "*.pt")), key=lambda p: int(os.path.basename(p)[:-3]))
                  for f in folders]
        if load_from_disk and all(cached):
            return [[torch.load(p) for p in files] for files in cached]
        per_layer: list[list[Tensor]] = [[] for _ in self.layers]
        for batch in self.influence_src_dataloader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for store, act in zip(per_layer, self._activations(x)):
                store.append(act)
        for folder, acts in zip(folders, per_layer):
            os.makedirs(folder, exist_ok=True)
            for old in glob.glob(os.path.join(folder, "*.pt")):
                os.remove(old)
            for i, act in enumerate(acts):
                torch.save(act, os.path.join(folder, f"{i}.pt"))
        return per_layer

    # -- ranking --------------------------------------------------------

    def influence(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor, ...],
        top_k: int = 1,
        additional_forward_args: Any = None,
        load_src_from_disk: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Per layer name, ``(indices, similarities)`` of the ``top_k`` most similar source examples.

        Keys ``"zero_acts-<layer>"`` hold ``[input index, source index]`` rows
        of pairs whose cosine similarity was undefined.
        """
        try:
            check_k(top_k)
        except ArgumentValueError:
            raise ArgumentValueError(f"`top_k` must be a positive int, got {top_k!r}") from None
        test_acts = self._activations(inputs, format_additional_args(additional_forward_args))
        largest = self.similarity_direction == "max"
        result: dict[str, Any] = {}
        for layer, test, src in zip(self.layers, test_acts, self._source_activations(load_src_from_disk)):
            sims = []
            for chunk in src:
                sim = self.similarity_metric(test, chunk)
                if not isinstance(sim, Tensor) or tuple(sim.shape) != (len(test), len(chunk)):
                    raise ArgumentValueError(
                        "`similarity_metric` must return a (n_inputs, n_src_batch) tensor, got "
                        f"{getattr(sim, 'shape', type(sim).__name__)}"
                    )
                sims.append(sim)
            sim = torch.cat(sims, dim=1)
            values, indices = torch.topk(sim, min(top_k, sim.shape[1]), dim=1, largest=largest)
            result[layer] = (indices, values)
            if self._cosine:
                flat_src = torch.cat(src).reshape(sim.shape[1], -1)
                zero = (test.reshape(len(test), -1).abs().sum(1, keepdim=True) == 0) | (
                    flat_src.abs().sum(1)[None] == 0
                )
                if zero.any():
                    warnings.warn(
                        f"Layer {layer} has all-zero activations for some inputs or source examples; "
                        f"their cosine similarity is undefined and set to {self.replace_nan}. The "
                        f"[input index, source index] pairs are under 'zero_acts-{layer}'.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    result[f"zero_acts-{layer}"] = zero.nonzero()
        return result
