"""TCAV: Testing with Concept Activation Vectors (Kim et al., https://arxiv.org/abs/1711.11279).

For each layer and each set of concepts a linear classifier is trained to
tell the concepts apart from the layer's activations on their examples;
its weight rows are the concept activation vectors (CAVs). The TCAV score
of a concept is then how the model's layer sensitivity (by default the
gradient of the target output w.r.t. the layer) lines up with the CAV:
``sign_count`` is the fraction of inputs with a positive dot product and
``magnitude`` the mean dot product (Captum 0.9.0's definition).

Activations come from one forward per concept batch that records every
layer at once and stops after the last (engine sites); with the default
sensitivity all layers' gradients come from one backward.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .._engine.inputs import as_tuple
from .._engine.sites import site_values
from ..attr.layer import LayerGradientXActivation
from .cav import CAV, concepts_to_str
from .classifier import Classifier, DefaultClassifier
from .concept import Concept, ConceptInterpreter

Scores = dict[str, dict[str, dict[str, Tensor]]]


class LabelledDataset(Dataset):
    """Batches of activations paired with the label of the concept they belong to.

    ``datasets[k]`` is a list of ``[batch, features]`` activation tensors of
    the concept labelled ``labels[k]``; item ``i`` is ``(batch, labels)``,
    batches in order, concept after concept.

    Example:
        >>> import torch
        >>> from attribuo.concept.tcav import LabelledDataset
        >>> ds = LabelledDataset([[torch.zeros(2, 3)], [torch.ones(1, 3)]], [4, 7])
        >>> len(ds), ds[1][1].tolist()
        (2, [7])
    """

    def __init__(self, datasets: list[list[Tensor]], labels: list[int]) -> None:
        if len(datasets) != len(labels):
            raise ArgumentValueError(
                f"`datasets` has {len(datasets)} entries but `labels` has {len(labels)}"
            )
        self.items = [(batch, label) for data, label in zip(datasets, labels) for batch in data]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        batch, label = self.items[i]
        return batch, torch.full((batch.shape[0],), label, dtype=torch.long, device=batch.device)

    def __len__(self) -> int:
        return len(self.items)


def _module_named(model: nn.Module, name: str) -> nn.Module:
    found: Any = model
    for part in name.split("."):
        if not hasattr(found, part):
            raise ArgumentValueError(f"`layers`: the model has no submodule named {name!r}")
        found = getattr(found, part)
    if not isinstance(found, nn.Module):
        raise ArgumentValueError(f"`layers`: {name!r} is a {type(found).__name__}, not a module")
    return found


def _flat(values: tuple[Tensor, ...]) -> Tensor:
    """A layer's value(s) as one ``[batch, features]`` matrix."""
    return torch.cat([v.reshape(v.shape[0], -1) for v in values], dim=1)


def _check_sets(experimental_sets: Any) -> list[list[Concept]]:
    if not isinstance(experimental_sets, (list, tuple)) or not experimental_sets:
        raise ArgumentTypeError("`experimental_sets` must be a non-empty list of lists of Concepts")
    for concepts in experimental_sets:
        if not isinstance(concepts, (list, tuple)) or not concepts:
            raise ArgumentTypeError(
                "`experimental_sets` must be a list of non-empty lists of Concepts, "
                f"found {concepts!r}"
            )
        for c in concepts:
            if not isinstance(c, Concept):
                raise ArgumentTypeError(
                    f"`experimental_sets` must hold Concept objects, found {type(c).__name__}"
                )
        ids = [c.id for c in concepts]
        if len(set(ids)) != len(ids):
            raise ArgumentValueError(f"`experimental_sets`: the set {concepts} repeats a concept id")
    return [list(s) for s in experimental_sets]


class TCAV(ConceptInterpreter):
    """Concept sensitivity scores of a model's predictions, per layer and concept set.

    Arguments as in Captum: ``layers`` names one or several submodules
    (dotted paths such as ``"features.3"``); ``classifier`` separates the
    concepts (default :class:`DefaultClassifier`, trained with
    ``classifier_kwargs`` such as ``test_split_ratio``);
    ``layer_attr_method`` gives the layer sensitivities (default: the plain
    layer gradient, ``LayerGradientXActivation(model, None,
    multiply_by_inputs=False)``; any layer method, e.g.
    ``LayerIntegratedGradients(model, None)``, works; its ``layer`` is set
    to each layer in turn); ``attribute_to_layer_input`` uses layer inputs
    instead of outputs for both activations and sensitivities. Trained CAVs
    are saved under ``save_path/model_id/`` (created if missing) and reused
    by later calls with the same concept ids and layer, also from other
    TCAV objects -- pass ``force_train=True`` to :meth:`compute_cavs`, or a
    new ``model_id``, after changing the model. Concept activations are kept
    in memory, not written to disk.

    Example:
        >>> import tempfile, torch
        >>> from attribuo.concept import TCAV, Concept
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> up = Concept(0, "up", [torch.rand(10, 3) + 1])
        >>> down = Concept(1, "down", [-torch.rand(10, 3) - 1])
        >>> tcav = TCAV(model, ["0"], save_path=tempfile.mkdtemp())
        >>> scores = tcav.interpret(torch.rand(4, 3), [[up, down]], target=0)
        >>> sorted(scores["0-1"]["0"])
        ['magnitude', 'sign_count']
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | list[str],
        model_id: str = "default_model_id",
        classifier: Classifier | None = None,
        layer_attr_method: Any = None,
        attribute_to_layer_input: bool = False,
        save_path: str = "./cav/",
        **classifier_kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        ConceptInterpreter.__init__(self, model)
        names = [layers] if isinstance(layers, str) else layers
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ArgumentTypeError("`layers` must be a layer name or a non-empty list of layer names (str)")
        self.layers: list[str] = list(names)
        self._layer_modules = {name: _module_named(model, name) for name in self.layers}
        if not isinstance(model_id, str) or not model_id:
            raise ArgumentValueError("`model_id` must be a non-empty str (it names the CAV folder)")
        for method in ("train_and_eval", "weights", "classes"):
            if classifier is not None and not callable(getattr(classifier, method, None)):
                raise ArgumentTypeError(f"`classifier` must be a Classifier; it has no `{method}` method")
        if layer_attr_method is not None and not callable(getattr(layer_attr_method, "attribute", None)):
            raise ArgumentTypeError("`layer_attr_method` must be a layer attribution object (with `attribute`)")
        self.model_id = model_id
        self.concepts: set[Concept] = set()
        self.classifier = DefaultClassifier() if classifier is None else classifier
        self.classifier_kwargs = classifier_kwargs
        self.cavs: dict[str, dict[str, CAV]] = defaultdict(dict)
        self._default_attr = LayerGradientXActivation(model, None, multiply_by_inputs=False)
        self.layer_attr_method = self._default_attr if layer_attr_method is None else layer_attr_method
        self.attribute_to_layer_input = bool(attribute_to_layer_input)
        self.save_path = save_path
        # flattened activation batches per (concept id, layer name)
        self._activations: dict[tuple[int, str], list[Tensor]] = {}
        CAV.create_cav_dir_if_missing(save_path, model_id)

    # ------------------------------------------------------------ activations
    def generate_all_activations(self) -> None:
        """Compute the activations of every known concept at every layer."""
        for concept in self.concepts:
            self.generate_activation(self.layers, concept)

    def generate_activation(self, layers: str | list[str], concept: Concept) -> None:
        """Compute ``concept``'s activations at ``layers`` (one forward per batch for all layers)."""
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names:
            return
        modules = [
            self._layer_modules[n] if n in self._layer_modules else _module_named(self.model, n)
            for n in names
        ]
        if concept.data_iter is None:
            raise ArgumentValueError(f"concept {concept!r} has no `data_iter` to compute activations from")
        batches: list[list[Tensor]] = [[] for _ in names]
        with torch.no_grad():
            for examples in concept.data_iter:
                xs = as_tuple(tuple(examples) if isinstance(examples, list) else examples, "data_iter")
                records = site_values(self.model, modules, xs, (), self.attribute_to_layer_input, stop=True)
                for store, record in zip(batches, records):
                    store.append(_flat(record.values).detach())
        if not batches[0]:
            raise ArgumentValueError(f"the `data_iter` of concept {concept!r} gave no batches")
        for name, store in zip(names, batches):
            self._activations[(concept.id, name)] = store
            # also on disk, where Captum keeps them (save_path/av/model_id/concept/layer/batch.pt)
            folder = os.path.join(self.save_path, "av", self.model_id, concept.identifier, name)
            os.makedirs(folder, exist_ok=True)
            for i, batch in enumerate(store):
                torch.save(batch, os.path.join(folder, f"{i}.pt"))

    def generate_activations(self, concept_layers: dict[Concept, list[str]]) -> None:
        """Compute activations for each concept at the layers ``concept_layers`` lists for it."""
        for concept, names in concept_layers.items():
            self.generate_activation(names, concept)

    # ------------------------------------------------------------------- CAVs
    def load_cavs(self, concepts: list[Concept]) -> tuple[list[str], dict[Concept, list[str]]]:
        """Load saved CAVs of ``concepts``; return the layers still to train and the
        activations (concept -> layers) still to compute for them."""
        key = concepts_to_str(concepts)
        missing_layers: list[str] = []
        missing_acts: dict[Concept, list[str]] = defaultdict(list)
        for layer in self.layers:
            cav = CAV.load(self.save_path, self.model_id, concepts, layer)
            if cav is not None:
                self.cavs[key][layer] = cav
            if not self.cavs.get(key, {}).get(layer):
                missing_layers.append(layer)
                for concept in concepts:
                    if (concept.id, layer) not in self._activations:
                        missing_acts[concept].append(layer)
        return missing_layers, missing_acts

    def compute_cavs(
        self,
        experimental_sets: list[list[Concept]],
        force_train: bool = False,
        processes: int | None = None,
    ) -> dict[str, dict[str, CAV]]:
        """Train (or load) the CAVs of each concept set at each layer; ``{ids: {layer: CAV}}``.

        ``processes`` is accepted for Captum compatibility; training runs in
        this process, one set after another, which gives the same CAVs.
        """
        sets = _check_sets(experimental_sets)
        if processes is not None and (not isinstance(processes, int) or isinstance(processes, bool)):
            raise ArgumentTypeError(f"`processes` must be an int or None, got {type(processes).__name__}")
        known = {c.id: c for c in self.concepts}
        for concepts in sets:
            for c in concepts:
                if known.setdefault(c.id, c) is not c:
                    raise ArgumentValueError(
                        f"`experimental_sets`: two different Concept objects have id {c.id}; "
                        "reuse the same Concept instance for the same concept"
                    )
        self.concepts.update(known.values())
        if force_train:
            self.generate_all_activations()
        to_train: dict[str, list[str]] = {}
        for concepts in sets:
            key = concepts_to_str(concepts)
            if force_train:
                to_train[key] = list(self.layers)
            else:
                to_train[key], missing = self.load_cavs(concepts)
                self.generate_activations(missing)
        for concepts in sets:
            self._train(concepts, to_train[concepts_to_str(concepts)])
        return self.cavs

    def _train(self, concepts: list[Concept], layers: list[str]) -> None:
        key = concepts_to_str(concepts)
        for layer in layers:
            data = LabelledDataset(
                [self._activations[(c.id, layer)] for c in concepts], [c.id for c in concepts]
            )
            stats = self.classifier.train_and_eval(
                DataLoader(data, batch_size=None), **self.classifier_kwargs
            ) or {}
            weights = self.classifier.weights()
            classes = self.classifier.classes()
            if weights is None or len(weights) == 0:
                raise ArgumentValueError("`classifier.weights()` returned no weights")
            if classes is None or len(classes) == 0:
                raise ArgumentValueError("`classifier.classes()` returned no classes")
            classes = [int(c) for c in (classes.tolist() if hasattr(classes, "tolist") else classes)]
            cav = CAV(concepts, layer, {"weights": weights, "classes": classes, **stats},
                      self.save_path, self.model_id)
            cav.save()
            self.cavs[key][layer] = cav

    # ---------------------------------------------------------------- scores
    def _sensitivities(self, inputs: Any, target: Any, additional_forward_args: Any,
                       kwargs: dict[str, Any]) -> dict[str, Tensor]:
        """Each layer's attributions for ``inputs`` as ``[inputs, features]``."""
        method = self.layer_attr_method
        common = dict(target=target, additional_forward_args=additional_forward_args,
                      attribute_to_layer_input=self.attribute_to_layer_input, **kwargs)
        modules = [self._layer_modules[name] for name in self.layers]
        if method is self._default_attr:
            # plain gradients of all layers come from one backward pass
            method.layer = modules
            results = method.attribute(inputs, **common)
        else:
            results = []
            for module in modules:
                method.layer = module
                results.append(method.attribute(inputs, **common))
        return {name: _flat(as_tuple(r, "layer attributions")) for name, r in zip(self.layers, results)}

    def interpret(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        experimental_sets: list[list[Concept]],
        target: Any = None,
        additional_forward_args: Any = None,
        processes: int | None = None,
        **kwargs: Any,
    ) -> Scores:
        """TCAV scores ``{ids: {layer: {"sign_count": [C], "magnitude": [C]}}}``.

        Entries follow the order of the concepts in each set. ``kwargs`` go
        to the layer attribution method (e.g. ``n_steps``);
        ``attribute_to_layer_input`` belongs to the constructor.
        """
        if "attribute_to_layer_input" in kwargs:
            raise ArgumentValueError(
                "`attribute_to_layer_input` is a TCAV constructor argument (it applies to both "
                "activations and attributions); do not pass it to `interpret`"
            )
        sets = _check_sets(experimental_sets)
        self.compute_cavs(sets, processes=processes)
        sens = self._sensitivities(inputs, target, additional_forward_args, kwargs)
        scores: Scores = defaultdict(dict)
        for layer in self.layers:
            attribs = sens[layer]
            # every set's CAV rows, in the order of its concepts, in one matrix
            rows = [self._cav_rows(concepts, layer, attribs) for concepts in sets]
            dots = attribs @ torch.cat(rows).T  # [inputs, all concepts of all sets]
            sign_count = (dots > 0).to(dots.dtype).mean(0)
            magnitude = dots.mean(0)
            start = 0
            for concepts in sets:
                stop = start + len(concepts)
                scores[concepts_to_str(concepts)][layer] = {
                    "sign_count": sign_count[start:stop], "magnitude": magnitude[start:stop]
                }
                start = stop
        return scores

    def _cav_rows(self, concepts: list[Concept], layer: str, attribs: Tensor) -> Tensor:
        stats = self.cavs[concepts_to_str(concepts)][layer].stats or {}
        weights = torch.as_tensor(stats["weights"]).detach().to(attribs.device, attribs.dtype)
        classes = stats["classes"]
        classes = [int(c) for c in (classes.tolist() if hasattr(classes, "tolist") else classes)]
        if weights.dim() != 2 or weights.shape[1] != attribs.shape[1]:
            raise ArgumentValueError(
                f"the CAV of {concepts} at layer {layer!r} has shape {tuple(weights.shape)}; "
                f"expected [classes, {attribs.shape[1]}] (a stale CAV file? use force_train)"
            )
        missing = [c.id for c in concepts if c.id not in classes]
        if missing:
            raise ArgumentValueError(f"the CAV of {concepts} at layer {layer!r} has no row for ids {missing}")
        return weights[[classes.index(c.id) for c in concepts]]
