"""PartitionShap against shap's PartitionExplainer on the same MLP, clustering and max_evals.

shap's timing sits in the harness's "Captum" column (shap is the reference
implementation here; Captum has no partition explainer). Both explain the
same model output (output 0) with shap's masker holding one background row
equal to our ``baselines`` and the same correlation linkage, so the values
agree (see tests/attr/perturbation/test_partition_shap.py). shap runs its
model through a numpy wrapper, as any shap user of a torch model does.

Cases: 32 features (max_evals=500 is below the full recursion: the budgeted
best-first search) at batch 1 and 16; 12 features (500 covers the full
recursion: exact Owen values in one batched pass); 100 features at batch 4.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from .harness import Case


def _mlp(features: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)).eval()


def _clustering(features: int) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage

    data = np.random.RandomState(features).randn(200, features)
    return linkage(data.T, "average", metric="correlation")


def cases() -> list[Case]:
    warnings.filterwarnings("ignore")
    import shap

    from attribuo.attr.perturbation.partition_shap import PartitionShap

    out = []
    for features, batch in ((32, 1), (32, 16), (12, 16), (100, 4)):
        model = _mlp(features)
        z = _clustering(features)
        g = torch.Generator().manual_seed(features + batch)
        x = torch.randn(batch, features, generator=g)
        base = torch.randn(1, features, generator=g)
        x_np = x.numpy()

        def f(a: np.ndarray, model: nn.Module = model) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(a).float())[:, 0].numpy()

        theirs = shap.PartitionExplainer(f, shap.maskers.Partition(base.numpy(), clustering=z))
        ours = PartitionShap(model)
        out.append(
            Case(
                f"PartitionShap MLP{features} batch {batch}, max_evals=500 (Captum column: shap {shap.__version__})",
                lambda ours=ours, x=x, base=base, z=z: ours.attribute(
                    x, baselines=base, target=0, hierarchy=z, max_evals=500
                ),
                lambda theirs=theirs, x_np=x_np: theirs(x_np, max_evals=500, silent=True),
                repeats=3,
                memory=False,  # shap's numpy work is invisible to the torch memory tracker
            )
        )
    return out
