"""Captum's internal module paths, resolved to attribuo's public packages.

Code written for Captum often imports from internal paths such as
``captum.attr._core.layer.layer_integrated_gradients``. After swapping
``captum`` for ``attribuo`` those imports keep working: every module under
the prefixes below is created on demand and looks its names up in the
matching public package (``attribuo.attr`` and friends).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

# (prefix of the Captum-style path, public package the names come from); longest first
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("attribuo.attr._utils.visualization", "attribuo.attr.visualization"),
    ("attribuo.attr._utils.lrp_rules", "attribuo.attr.relevance.rules"),
    ("attribuo.attr._utils.stat", "attribuo.attr.utils.stat"),
    ("attribuo.attr._utils.summarizer", "attribuo.attr.utils.summarizer"),
    ("attribuo.attr._utils.class_summarizer", "attribuo.attr.utils.summarizer"),
    ("attribuo.attr._utils.baselines", "attribuo.attr.utils.baselines"),
    # module-level Lime helpers (get_exp_kernel_similarity_function, default_perturb_func, ...)
    ("attribuo.attr._core.lime", "attribuo.attr.perturbation.lime"),
    ("attribuo.attr._core.feature_permutation", "attribuo.attr.perturbation.feature_permutation"),
    ("attribuo.attr._core.llm_attr", "attribuo.attr.text.llm_attr"),
    ("attribuo.attr._core.remote_provider", "attribuo.attr.text.remote"),
    ("attribuo.attr._utils.interpretable_input", "attribuo.attr.text.interpretable_input"),
    # InputRole and the default reducer live in the submodule
    ("attribuo.attr._core.dataloader_attr", "attribuo.attr.perturbation.dataloader_attr"),
    # modules whose helpers Captum code imports too (names not found there come from attribuo.attr)
    ("attribuo.attr._core.noise_tunnel", "attribuo.attr.gradient.noise_tunnel"),
    ("attribuo.attr._core.gradient_shap", "attribuo.attr.gradient.gradient_shap"),
    ("attribuo.attr._core.layer.layer_gradient_shap", "attribuo.attr.layer.gradient_shap"),
    ("attribuo.attr._core.deep_lift", "attribuo.attr.gradient.deeplift"),
    ("attribuo.attr._models.base", "attribuo.attr.text.embeddings"),
    ("attribuo.attr._utils", "attribuo.attr"),
    ("attribuo.attr._core", "attribuo.attr"),
    ("attribuo.attr._models", "attribuo.attr"),
    # module-level helpers (e.g. default_perturb_func) live in the submodules
    ("attribuo.metrics._core.sensitivity", "attribuo.metrics.sensitivity"),
    ("attribuo.metrics._core.infidelity", "attribuo.metrics.infidelity"),
    ("attribuo.metrics._core", "attribuo.metrics"),
    ("attribuo.robust._core", "attribuo.robust"),
    ("attribuo.concept._core", "attribuo.concept"),
    ("attribuo.influence._core", "attribuo.influence"),
    # Captum's linear_model package (SkLearnLasso & co. for Lime) is one module here
    ("attribuo._utils.models", "attribuo.attr.perturbation.linear_models"),
    ("attribuo._utils", "attribuo.attr.perturbation.linear_models"),
    # attribuo 0.1's flat module paths, before the families became packages
    *(
        (f"attribuo.attr.{old}", f"attribuo.attr.{new}")
        for old, new in (
            ("lrp_rules", "relevance.rules"),
            ("lrp_composites", "relevance"),
            ("lrp", "relevance"),
            ("guided", "gradient.guided_backprop"),
            ("guided_gradcam", "cam.guided_grad_cam"),
            ("integrated_gradients", "gradient.integrated_gradients"),
            ("gradient_shap", "gradient.gradient_shap"),
            ("noise_tunnel", "gradient.noise_tunnel"),
            ("deeplift", "gradient.deeplift"),
            ("feature_ablation", "perturbation.feature_ablation"),
            ("feature_permutation", "perturbation.feature_permutation"),
            ("occlusion", "perturbation.occlusion"),
            ("shapley", "perturbation.shapley"),
            ("lime", "perturbation.lime"),
            ("kernel_shap", "perturbation.kernel_shap"),
            ("dataloader_attr", "perturbation.dataloader_attr"),
            ("layer_path", "layer.path_integrals"),
            ("layer_reference", "layer"),
            ("layer_perturb", "layer.perturbation"),
            ("llm_attr", "text.llm_attr"),
            ("llm_result", "text.llm_result"),
            ("interpretable_input", "text.interpretable_input"),
            ("embeddings", "text.embeddings"),
            ("summarizer", "utils.summarizer"),
            ("stat", "utils.stat"),
            ("baselines_product", "utils.baselines"),
            ("input_layer_wrapper", "utils.input_wrapper"),
        )
    ),
)


# Captum's internal modules under those prefixes (so a misspelt name is an ImportError).
_KNOWN = frozenset(
    """
    attr._core attr._core.deep_lift attr._core.feature_ablation attr._core.feature_permutation
    attr._core.gradient_shap attr._core.guided_backprop_deconvnet attr._core.guided_grad_cam
    attr._core.input_x_gradient attr._core.integrated_gradients attr._core.kernel_shap
    attr._core.layer attr._core.layer.grad_cam attr._core.layer.internal_influence
    attr._core.layer.layer_activation attr._core.layer.layer_conductance
    attr._core.layer.layer_deep_lift attr._core.layer.layer_feature_ablation
    attr._core.layer.layer_feature_permutation attr._core.layer.layer_gradient_shap
    attr._core.layer.layer_gradient_x_activation attr._core.layer.layer_integrated_gradients
    attr._core.layer.layer_lrp attr._core.lime attr._core.lrp attr._core.neuron
    attr._core.neuron.neuron_conductance attr._core.neuron.neuron_deep_lift
    attr._core.neuron.neuron_feature_ablation attr._core.neuron.neuron_gradient
    attr._core.neuron.neuron_gradient_shap attr._core.neuron.neuron_guided_backprop_deconvnet
    attr._core.neuron.neuron_integrated_gradients attr._core.noise_tunnel attr._core.occlusion
    attr._core.saliency attr._core.shapley_value attr._utils attr._utils.attribution
    attr._utils.lrp_rules attr._utils.visualization attr._models attr._models.base
    attr._utils.input_layer_wrapper attr._utils.stat attr._utils.summarizer
    attr._utils.class_summarizer attr._utils.baselines
    attr._core.llm_attr attr._core.remote_provider attr._utils.interpretable_input
    metrics._core metrics._core.infidelity metrics._core.sensitivity
    robust._core robust._core.fgsm robust._core.pgd robust._core.perturbation
    robust._core.metrics robust._core.metrics.attack_comparator
    robust._core.metrics.min_param_perturbation
    concept._core concept._core.cav concept._core.concept concept._core.tcav
    attr._core.dataloader_attr influence._core influence._core.influence
    influence._core.influence_function influence._core.arnoldi_influence_function
    influence._core.tracincp influence._core.tracincp_fast_rand_proj
    influence._core.similarity_influence
    _utils _utils.models _utils.models.linear_model _utils.models.linear_model.model
    _utils.models.linear_model.train _utils.models.model
    """.split()
) | {f"attr.{old}" for old in (
    "lrp_rules lrp_composites lrp guided guided_gradcam integrated_gradients gradient_shap "
    "noise_tunnel deeplift feature_ablation feature_permutation occlusion shapley lime "
    "kernel_shap dataloader_attr layer_path layer_reference layer_perturb llm_attr llm_result "
    "interpretable_input embeddings summarizer stat baselines_product input_layer_wrapper"
).split()}


def _public_package(fullname: str) -> str | None:
    if fullname.removeprefix("attribuo.") not in _KNOWN:
        return None
    for prefix, target in _PREFIXES:
        if fullname == prefix or fullname.startswith(prefix + "."):
            return target
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        target = self.target

        public = ".".join(target.split(".")[:2])  # attribuo.attr, attribuo.metrics, ...

        def __getattr__(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            try:
                return getattr(importlib.import_module(target), name)
            except AttributeError:
                if target == public:
                    raise
                return getattr(importlib.import_module(public), name)

        module.__getattr__ = __getattr__  # type: ignore[attr-defined]
        module.__path__ = []  # so deeper Captum-style paths import too


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        public = _public_package(fullname)
        if public is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(public), is_package=True)


def install() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
