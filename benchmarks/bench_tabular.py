"""Tabular perturbation methods at batch 1 and batch 16, 20 and 100 features, side by side with Captum.

An MLP (features -> 64 -> 64 -> 3); Lime and KernelShap with 200 samples
(and 1000 for Lime at batch 1), ShapleyValueSampling with 10 samples,
FeatureAblation. Captum at its defaults; a benchmark that used only batch 16
hid a Lime that was 10x slower than Captum on one example.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .harness import Case


def _mlp(features: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)).eval()


def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    import captum.attr as ca

    import attribuo.attr as aa

    out = []
    runs = [
        ("Lime", {"n_samples": 200}), ("KernelShap", {"n_samples": 200}),
        ("ShapleyValueSampling", {"n_samples": 10}), ("FeatureAblation", {}),
    ]
    for features in (20, 100):
        model = _mlp(features)
        for batch in (1, 16):
            x = torch.randn(batch, features, generator=torch.Generator().manual_seed(batch))
            target = torch.arange(batch) % 3
            for name, kwargs in runs:
                if name == "KernelShap" and features == 100 and batch == 16:
                    kwargs = {"n_samples": 100}  # Captum takes ~10 s at 200
                ours, theirs = getattr(aa, name)(model), getattr(ca, name)(model)
                label = ", ".join(f"{k}={v}" for k, v in kwargs.items())
                out.append(
                    Case(
                        f"{name} MLP{features} batch {batch}{', ' + label if label else ''}",
                        lambda ours=ours, x=x, t=target, kw=kwargs: ours.attribute(x, target=t, **kw),
                        lambda theirs=theirs, x=x, t=target, kw=kwargs: theirs.attribute(x, target=t, **kw),
                        repeats=3,
                    )
                )
        lime_ours, lime_theirs = aa.Lime(model), ca.Lime(model)
        one = torch.randn(1, features)
        out.append(
            Case(
                f"Lime MLP{features} batch 1, n_samples=1000",
                lambda lime=lime_ours, one=one: lime.attribute(one, target=0, n_samples=1000),
                lambda lime=lime_theirs, one=one: lime.attribute(one, target=0, n_samples=1000),
                repeats=3,
            )
        )
    return out
