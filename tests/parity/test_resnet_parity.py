"""GuidedBackprop, Deconvolution and LayerConductance on a residual BN CNN against Captum 0.9.0.

The benchmark's model (``benchmarks/bench_resnet.py``) at small images,
where attribuo's fast paths (native ReLU with an adjusted backward node,
the cached activation probe, in-place conductance sums) must give Captum's
numbers.
"""

import pytest
import torch

import attribuo.attr as A
from benchmarks.bench_resnet import resnet

captum_attr = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def model():
    return resnet()


@pytest.mark.parametrize("name", ["GuidedBackprop", "Deconvolution"])
@pytest.mark.parametrize("batch", [1, 3])
def test_modified_relu_methods_match_captum(model, name, batch):
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32)
    ours = getattr(A, name)(model).attribute(x, target=3)
    theirs = getattr(captum_attr, name)(model).attribute(x, target=3)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("block", [(1, 0), (2, 1)])
@pytest.mark.parametrize("batch", [1, 2])
def test_layer_conductance_matches_captum(model, block, batch):
    layer = model.stages[block[0]][block[1]]
    torch.manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32)
    for _ in range(2):  # the second call runs on the cached probe
        ours, d_ours = A.LayerConductance(model, layer).attribute(
            x, target=3, n_steps=20, return_convergence_delta=True)
        theirs, d_theirs = captum_attr.LayerConductance(model, layer).attribute(
            x, target=3, n_steps=20, return_convergence_delta=True)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
        torch.testing.assert_close(d_ours, d_theirs, atol=1e-5, rtol=0)
