"""The CAM family against each paper's formula, written out plainly, plus properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models.lrp_cam import SmallCNN
from torch import nn

import attribuo.attr as A
from attribuo._engine.errors import ArgumentValueError
from attribuo.attr import (
    EigenCam,
    GradCamPlusPlus,
    HiResCam,
    LayerAttribution,
    LayerCam,
    LayerGradCam,
    ScoreCam,
    XGradCam,
)
from attribuo.attr.cam import token_grid

TARGET = torch.tensor([0, 2, 1])


def _setup(seed=0):
    model = SmallCNN(seed=seed)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return model, x


def _acts_and_grads(model, x, target):
    acts = model.features(x).detach().requires_grad_()
    y = model.classify(acts)[torch.arange(x.shape[0]), target]
    (grads,) = torch.autograd.grad(y.sum(), acts)
    return acts.detach(), grads


# ---------------------------------------------------------- paper formulas
def ref_gradcam(model, x, target):
    A, G = _acts_and_grads(model, x, target)
    N, C, H, W = A.shape
    cam = torch.zeros(N, 1, H, W, dtype=A.dtype)
    for n in range(N):
        for c in range(C):
            w = G[n, c].sum() / (H * W)  # alpha_c = 1/Z sum_ij dy/dA_ij
            cam[n, 0] += w * A[n, c]
    return cam  # Captum's LayerGradCam: no ReLU by default


def ref_gradcam_pp(model, x, target):
    A, G = _acts_and_grads(model, x, target)
    N, C, H, W = A.shape
    cam = torch.zeros(N, 1, H, W, dtype=A.dtype)
    for n in range(N):
        for c in range(C):
            total = A[n, c].sum()
            w = 0.0
            for i in range(H):
                for j in range(W):
                    g = G[n, c, i, j]
                    den = 2 * g**2 + total * g**3
                    alpha = g**2 / den if den != 0 else 0.0
                    w = w + alpha * max(g, 0.0)
            cam[n, 0] += w * A[n, c]
    return cam.clamp(min=0)


def ref_xgradcam(model, x, target):
    A, G = _acts_and_grads(model, x, target)
    N, C, H, W = A.shape
    cam = torch.zeros(N, 1, H, W, dtype=A.dtype)
    for n in range(N):
        for c in range(C):
            total = A[n, c].sum()
            w = (A[n, c] * G[n, c]).sum() / total if total != 0 else 0.0
            cam[n, 0] += w * A[n, c]
    return cam.clamp(min=0)


def ref_hirescam(model, x, target):
    A, G = _acts_and_grads(model, x, target)
    return sum(G[:, c : c + 1] * A[:, c : c + 1] for c in range(A.shape[1])).clamp(min=0)


def ref_layercam(model, x, target):
    A, G = _acts_and_grads(model, x, target)
    return sum(G[:, c : c + 1].clamp(min=0) * A[:, c : c + 1] for c in range(A.shape[1])).clamp(min=0)


def ref_scorecam(model, x, target):
    with torch.no_grad():
        A = model.features(x)
        N, C = A.shape[:2]
        cam = torch.zeros((N, 1) + A.shape[2:], dtype=A.dtype)
        for n in range(N):
            scores = []
            for c in range(C):
                up = F.interpolate(A[n : n + 1, c : c + 1], size=x.shape[2:], mode="bilinear")
                lo, hi = up.min(), up.max()
                mask = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
                scores.append(model(x[n : n + 1] * mask)[0, target[n]])
            weights = torch.softmax(torch.stack(scores), 0)
            for c in range(C):
                cam[n, 0] += weights[c] * A[n, c]
    return cam.clamp(min=0)


def ref_eigencam(model, x, target):
    with torch.no_grad():
        A = model.features(x)
    N, C, H, W = A.shape
    cams = []
    for n in range(N):
        M = A[n].reshape(C, H * W).T  # positions x channels
        _, _, Vh = torch.linalg.svd(M, full_matrices=False)
        proj = M @ Vh[0]
        if proj.sum() < 0:
            proj = -proj
        cams.append(proj.reshape(1, 1, H, W))
    return torch.cat(cams).clamp(min=0)


VARIANTS = {
    LayerGradCam: ref_gradcam,
    GradCamPlusPlus: ref_gradcam_pp,
    XGradCam: ref_xgradcam,
    HiResCam: ref_hirescam,
    LayerCam: ref_layercam,
    ScoreCam: ref_scorecam,
    EigenCam: ref_eigencam,
}


@pytest.mark.parametrize("cls", list(VARIANTS), ids=lambda c: c.__name__)
def test_variant_matches_its_paper_formula(cls):
    model, x = _setup()
    got = cls(model, model.relu2).attribute(x, target=TARGET)
    torch.testing.assert_close(got, VARIANTS[cls](model, x, TARGET))
    assert got.abs().sum() > 0


@pytest.mark.parametrize("cls", list(VARIANTS), ids=lambda c: c.__name__)
def test_results_do_not_depend_on_batch_size(cls):
    model, x = _setup(seed=1)
    whole = cls(model, model.relu2).attribute(x, target=TARGET)
    one_by_one = torch.cat(
        [cls(model, model.relu2).attribute(x[i : i + 1], target=int(TARGET[i])) for i in range(x.shape[0])]
    )
    torch.testing.assert_close(whole, one_by_one)


GRADIENT_VARIANTS = [LayerGradCam, GradCamPlusPlus, XGradCam, HiResCam, LayerCam]


@pytest.mark.parametrize("cls", GRADIENT_VARIANTS, ids=lambda c: c.__name__)
def test_a_channel_the_target_ignores_gets_no_weight(cls):
    model, x = _setup(seed=2)
    with torch.no_grad():
        model.head.weight[1, 0] = 0.0  # class 1 never reads channel 0
    per_channel = cls(model, model.relu2).attribute(x, target=1, attr_dim_summation=False, relu_attributions=False)
    assert per_channel.shape == (3, 4, 6, 6)
    assert torch.equal(per_channel[:, 0], torch.zeros_like(per_channel[:, 0]))
    assert per_channel[:, 1:].abs().sum() > 0


def test_score_cam_chunking_does_not_change_results():
    model, x = _setup(seed=3)
    results = [ScoreCam(model, model.relu2, internal_batch_size=k).attribute(x, target=TARGET) for k in (1, 3, None)]
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], results[2])


def test_upsampling_to_input_uses_layer_interpolation():
    model, x = _setup()
    cam = LayerCam(model, model.relu2)
    small = cam.attribute(x, target=TARGET)
    big = cam.attribute(x, target=TARGET, upsample_to_input=True, interpolate_mode="bilinear")
    assert big.shape == (3, 1, 8, 8)
    torch.testing.assert_close(big, LayerAttribution.interpolate(small, (8, 8), "bilinear"))


class _TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.block = nn.Linear(5, 6)
        self.head = nn.Linear(6, 3)
        self.double()

    def forward(self, tokens):
        h = torch.tanh(self.block(tokens))
        return self.head(h[:, 0] + h[:, 1:].mean(1) ** 2)


def test_token_maps_are_reshaped_to_a_grid():
    model = _TinyViT()
    x = torch.randn(2, 1 + 9, 5, dtype=torch.float64)
    got = LayerGradCam(model, model.block, reshape_transform=token_grid()).attribute(x, target=2)
    acts = model.block(x).detach().requires_grad_()
    y = model.head(torch.tanh(acts)[:, 0] + torch.tanh(acts)[:, 1:].mean(1) ** 2)[:, 2]
    (grads,) = torch.autograd.grad(y.sum(), acts)
    A = acts.detach()[:, 1:].reshape(2, 3, 3, 6)
    G = grads[:, 1:].reshape(2, 3, 3, 6)
    want = (A * G.mean((1, 2), keepdim=True)).sum(-1).unsqueeze(1)
    assert got.shape == (2, 1, 3, 3)
    torch.testing.assert_close(got, want)
    with pytest.raises(ArgumentValueError, match="grid"):
        token_grid(skip_tokens=0)(torch.zeros(1, 10, 2))


def test_layer_grad_cam_options():
    model, x = _setup()
    cam = LayerGradCam(model, model.relu2)
    plain = cam.attribute(x, target=TARGET)
    torch.testing.assert_close(cam.attribute(x, target=TARGET, relu_attributions=True), plain.clamp(min=0))
    per_channel = cam.attribute(x, target=TARGET, attr_dim_summation=False)
    torch.testing.assert_close(per_channel.sum(1, keepdim=True), plain)
    # the input of relu2 is the output of conv2: same map up to the ReLU in between
    to_input = cam.attribute(x, target=TARGET, attribute_to_layer_input=True)
    assert to_input.shape == plain.shape
    assert plain.dtype == torch.float64


def test_unsupported_interpolation_and_targets_are_named():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match="interpolate_mode.*trilinear"):
        A.LayerGradCam(model, model[0]).attribute(x, target=0, upsample_to_input=True, interpolate_mode="trilinear")
    with pytest.warns(UserWarning, match="could not be resized"):  # Captum's behaviour: warn, empty
        assert A.GuidedGradCam(model, model[0]).attribute(x, target=0, interpolate_mode="cubic").numel() == 0
    with pytest.raises(ValueError, match="`target` index 5"):  # EigenCam ignores target, but checks it
        A.EigenCam(model, model[1]).attribute(x, target=5)
    assert A.EigenCam(model, model[1]).attribute(x, target=1).shape == (2, 1, 4, 4)
