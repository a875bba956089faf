"""attribuo's Quantus-style metrics against Quantus 0.6 on the same calls.

The "Captum" columns of these rows hold Quantus. A small CNN (two 3x3
convolutions) on 16 RGB 16x16 images (one channel for IROF and ROAD,
which Quantus 0.6 cannot run on three), Saliency attributions given to
both; metrics that explain again get the same attribuo Saliency as
Quantus' ``explain_func``, so only the metric's own work differs. Quantus
already evaluates all N examples in one forward per step, so on CPU the
forward passes bound the gain of the faithfulness metrics; the floor column
of a row, where given, is those forwards alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from attribuo import metrics
from attribuo.attr import Saliency

from .harness import Case

N = 16


def _cnn(channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)).eval()


def _explain_numpy(model, inputs, targets, **kwargs):
    x = torch.as_tensor(inputs)
    return Saliency(model).attribute(x, target=torch.as_tensor(targets)).detach().numpy()


def _explain_numpy_pixels(model, inputs, targets, **kwargs):
    return _explain_numpy(model, inputs, targets).sum(1, keepdims=True)


def _quantus(cls, model, x, y, a, **call):

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                       a_batch=None if a is None else a.numpy(), device="cpu", **call)

    if not hasattr(np, "trapz"):  # numpy 2 removed it; Quantus 0.6 still calls it
        np.trapz = np.trapezoid
    return run


def cases() -> list[Case]:
    import quantus

    q = dict(disable_warnings=True, display_progressbar=False)
    torch.manual_seed(0)
    rgb, grey = _cnn(3), _cnn(1)
    x = torch.rand(N, 3, 16, 16)
    xg = torch.rand(N, 1, 16, 16)
    y = torch.randint(0, 10, (N,))
    a = Saliency(rgb).attribute(x, target=y)
    a_px = a.sum(1, keepdim=True)
    ag = Saliency(grey).attribute(xg, target=y)
    masks = torch.zeros(N, 1, 16, 16)
    masks[:, :, 4:10, 3:12] = 1

    def loc(name, qcls, ours, **kw):
        quant = quantus.__dict__[qcls](**q, **kw)
        run_q = _quantus(quant, rgb, x, y, a_px, s_batch=masks.numpy())
        return Case(f"[vs Quantus] {name}", lambda: ours(rgb, x, a_px, y, masks=masks, **kw), run_q,
                    repeats=20, memory=False)

    def plain(name, qcls, ours, model=rgb, inputs=x, attrs=a, qkw=None, okw=None, repeats=5, **call):
        quant = quantus.__dict__[qcls](**q, **(qkw or {}))
        run_q = _quantus(quant, model, inputs, y, attrs, **call)
        return Case(f"[vs Quantus] {name}", lambda: ours(model, inputs, attrs, y, **(okw or {})), run_q,
                    repeats=repeats, memory=False)

    def again(name, qcls, ours, qkw=None, okw=None, repeats=3):
        quant = quantus.__dict__[qcls](**q, **(qkw or {}))
        run_q = _quantus(quant, rgb, x, y, a_px, explain_func=_explain_numpy_pixels)
        explain = lambda m, inputs, target: Saliency(m).attribute(inputs, target=target).sum(1, keepdim=True)  # noqa: E731
        return Case(f"[vs Quantus] {name}", lambda: ours(rgb, x, explain, y, **(okw or {})), run_q,
                    repeats=repeats, memory=False)

    return [
        plain("pixel_flipping (one feature per value, 768 steps)", "PixelFlipping", metrics.pixel_flipping,
              repeats=3),
        plain("region_perturbation (patch 4)", "RegionPerturbation", metrics.region_perturbation,
              qkw={"patch_size": 4, "regions_evaluation": 16}, okw={"patch_size": 4, "regions_evaluation": 16}),
        plain("selectivity (patch 4)", "Selectivity", metrics.selectivity, qkw={"patch_size": 4},
              okw={"patch_size": 4}),
        plain("irof (slic, 1 channel)", "IROF", metrics.irof, model=grey, inputs=xg, attrs=ag,
              qkw={"perturb_baseline": 0.0}, okw={"perturb_baseline": 0.0}),
        plain("road (50 percentages, 1 channel)", "ROAD", metrics.road, model=grey, inputs=xg, attrs=ag,
              qkw={"noise": 0.0}, okw={"noise": 0.0}, repeats=3),
        plain("faithfulness_correlation (100 runs)", "FaithfulnessCorrelation", metrics.faithfulness_correlation),
        plain("faithfulness_estimate (768 steps)", "FaithfulnessEstimate", metrics.faithfulness_estimate,
              repeats=3),
        plain("monotonicity_correlation (100 samples, 16 per step)", "MonotonicityCorrelation",
              metrics.monotonicity_correlation, qkw={"features_in_step": 16, "nr_samples": 100},
              okw={"features_in_step": 16, "nr_samples": 100}, repeats=3),
        plain("sufficiency", "Sufficiency", metrics.sufficiency),
        loc("pointing_game", "PointingGame", metrics.pointing_game),
        loc("top_k_intersection (k=50)", "TopKIntersection", metrics.top_k_intersection, k=50),
        loc("relevance_mass_accuracy", "RelevanceMassAccuracy", metrics.relevance_mass_accuracy),
        loc("relevance_rank_accuracy", "RelevanceRankAccuracy", metrics.relevance_rank_accuracy),
        loc("attribution_localisation", "AttributionLocalisation", metrics.attribution_localisation),
        loc("auc", "AUC", metrics.auc),
        plain("sparseness", "Sparseness", metrics.sparseness, repeats=20),
        plain("complexity", "Complexity", metrics.complexity, repeats=20),
        plain("effective_complexity", "EffectiveComplexity", metrics.effective_complexity, repeats=20),
        again("max_sensitivity (20 samples)", "MaxSensitivity", metrics.max_sensitivity,
              qkw={"nr_samples": 20}, okw={"nr_samples": 20}),
        again("avg_sensitivity (20 samples)", "AvgSensitivity", metrics.avg_sensitivity,
              qkw={"nr_samples": 20}, okw={"nr_samples": 20}),
        again("local_lipschitz_estimate (20 samples)", "LocalLipschitzEstimate", metrics.local_lipschitz_estimate,
              qkw={"nr_samples": 20}, okw={"nr_samples": 20}),
        again("continuity (28 steps)", "Continuity", metrics.continuity),
        again("relative_input_stability (20 samples)", "RelativeInputStability",
              metrics.relative_input_stability, qkw={"nr_samples": 20}, okw={"nr_samples": 20}),
        again("relative_output_stability (20 samples)", "RelativeOutputStability",
              metrics.relative_output_stability, qkw={"nr_samples": 20}, okw={"nr_samples": 20}),
        plain("completeness", "Completeness", metrics.completeness, repeats=10),
        plain("non_sensitivity (768 features)", "NonSensitivity", metrics.non_sensitivity, repeats=3),
        again("mprt (same explainer)", "MPRT", metrics.mprt, okw={"seed": 42}),
        again("efficient_mprt (same explainer)", "EfficientMPRT", metrics.efficient_mprt, okw={"seed": 42}),
        again("random_logit (same explainer)", "RandomLogit", metrics.random_logit,
              qkw={"num_classes": 10}, okw={"seed": 0}),
    ]
