"""Blur IG: the blur against scipy, a slow reference from the paper, completeness, chunking, errors."""

import numpy as np
import pytest
import torch
from models import SmallCNN, seeded
from scipy import ndimage
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr.gradient.blur_ig import PADDINGS, BlurIntegratedGradients, gaussian_blur


def _cnn():
    return seeded(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 7 * 9, 2))).double()


def _images(n=2, seed=0):
    return torch.tensor(np.random.default_rng(seed).random((n, 2, 9, 11)))


@pytest.mark.parametrize("padding", PADDINGS)
def test_blur_is_scipys_gaussian_filter(padding):
    x = _images(3)
    for sigma in (0.0, 0.01, 0.4, 1.0, 2.7, 6.0, 30.0):  # radius 0 up to far past the image size
        got = gaussian_blur(x, sigma, padding)
        want = np.stack([ndimage.gaussian_filter(im, sigma=(0, sigma, sigma), mode=padding) for im in x.numpy()])
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    per_image = gaussian_blur(x, torch.tensor([0.5, 2.0, 9.0]), padding)
    for i, sigma in enumerate((0.5, 2.0, 9.0)):
        torch.testing.assert_close(per_image[i], gaussian_blur(x[i : i + 1], sigma, padding)[0])


def test_blur_keeps_the_dtype_and_other_truncations_match_scipy():
    x = _images(1).float()
    assert gaussian_blur(x, 1.5).dtype == torch.float32
    want = ndimage.gaussian_filter(x[0].double().numpy(), sigma=(0, 2.0, 2.0), mode="reflect", truncate=2.0)
    np.testing.assert_allclose(gaussian_blur(x.double(), 2.0, "reflect", truncate=2.0)[0].numpy(), want, atol=1e-12)


def _reference(model, x, target, max_sigma, steps, grad_step, padding):
    """Xu et al. (2020): gradients along sigma_k = k max_sigma / steps times d blur / d sigma, negated."""
    out = np.zeros(x.shape)
    sigmas = [k * max_sigma / steps for k in range(steps + 1)]

    def blur(im, s):
        return im if s == 0 else ndimage.gaussian_filter(im, sigma=(0, s, s), mode=padding)

    for i, image in enumerate(x.numpy()):
        for k in range(steps):
            point = blur(image, sigmas[k])
            slope = (blur(image, sigmas[k] + grad_step) - point) / grad_step
            p = torch.tensor(point).unsqueeze(0).requires_grad_()
            (g,) = torch.autograd.grad(model(p)[0, target], p)
            out[i] += (sigmas[k + 1] - sigmas[k]) * slope * g[0].numpy()
    return torch.tensor(-out)


@pytest.mark.parametrize("padding", ["constant", "reflect"])
def test_matches_the_slow_reference(padding):
    model, x = _cnn(), _images()
    got = BlurIntegratedGradients(model).attribute(x, target=1, max_sigma=6.0, n_steps=15, grad_step=0.05, padding=padding)
    want = _reference(model, x, 1, 6.0, 15, 0.05, padding)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_completeness_against_the_blurred_start():
    model, x = _cnn(), _images(3, seed=1)
    blur = BlurIntegratedGradients(model)
    deltas = [blur.attribute(x, target=0, max_sigma=8.0, n_steps=n, return_convergence_delta=True)[1].abs().max()
              for n in (10, 80)]
    change = (model(x)[:, 0] - model(gaussian_blur(x, 8.0))[:, 0]).abs().max()
    assert deltas[1] < 0.02 * change and deltas[1] < deltas[0] / 3
    attr, delta = blur.attribute(x, target=0, max_sigma=8.0, n_steps=10, idgi=True, return_convergence_delta=True)
    assert delta.abs().max() < 1e-12
    torch.testing.assert_close(attr.sum((1, 2, 3)), (model(x)[:, 0] - model(gaussian_blur(x, 8.0))[:, 0]).detach())


def test_linear_model_attributes_the_removed_blur():
    # F = w . x: the attribution of a pixel is w times what the blur took from it, up to the quadrature
    w = torch.tensor(np.random.default_rng(2).normal(size=(2, 9, 11)))
    x = _images(2, seed=3)

    def model(t):
        return (t * w).sum((1, 2, 3)).unsqueeze(1)

    attr = BlurIntegratedGradients(model).attribute(x, target=0, max_sigma=3.0, n_steps=300, grad_step=1e-4)
    torch.testing.assert_close(attr, w * (x - gaussian_blur(x, 3.0)), rtol=0, atol=0.02)


@pytest.mark.parametrize("sampling", ["uniform", "adaptive"])
def test_batch_and_chunk_size_do_not_matter(sampling):
    model, x = _cnn(), _images(3, seed=4)
    blur = BlurIntegratedGradients(model)
    kwargs = {"target": 1, "max_sigma": 5.0, "n_steps": 12, "step_sampling": sampling}
    full = blur.attribute(x, **kwargs)
    for size in (1, 7):
        torch.testing.assert_close(blur.attribute(x, internal_batch_size=size, **kwargs), full, rtol=1e-10, atol=1e-12)
    alone = torch.cat([blur.attribute(x[i : i + 1], **kwargs) for i in range(3)])
    torch.testing.assert_close(alone, full, rtol=1e-10, atol=1e-12)


def test_grids_shared_or_per_example_and_adaptive_completeness():
    model, x = _cnn(), _images(2, seed=5)
    blur = BlurIntegratedGradients(model)
    grid = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0], dtype=torch.float64)
    shared = blur.attribute(x, target=0, max_sigma=6.0, step_sampling=grid)
    torch.testing.assert_close(shared, blur.attribute(x, target=0, max_sigma=6.0, step_sampling=grid.expand(2, -1)))
    _, delta = blur.attribute(x, target=0, max_sigma=6.0, step_sampling="adaptive", idgi=True,
                              return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_tuple_inputs_and_float32():
    cnn = seeded(SmallCNN())

    def model(a, b):
        return cnn(a + b)

    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    (ga, gb), delta = BlurIntegratedGradients(model).attribute(
        (a, b), target=1, max_sigma=3.0, n_steps=20, return_convergence_delta=True
    )
    assert ga.dtype == torch.float32 and ga.shape == a.shape and gb.shape == b.shape
    # the delta is measured against both inputs blurred
    change = model(a, b)[:, 1] - model(gaussian_blur(a, 3.0), gaussian_blur(b, 3.0))[:, 1]
    torch.testing.assert_close(delta, (ga.sum((1, 2, 3)) + gb.sum((1, 2, 3)) - change).detach())


def test_bad_arguments():
    blur = BlurIntegratedGradients(_cnn())
    x = _images()
    with pytest.raises(ArgumentValueError, match="inputs"):
        blur.attribute(x[:, 0], target=0)
    for kwargs, match in [
        ({"padding": "zeros"}, "padding"), ({"max_sigma": 0}, "max_sigma"), ({"grad_step": -1.0}, "grad_step"),
        ({"n_steps": 0}, "n_steps"), ({"step_sampling": torch.tensor([0.2, 1.0])}, "step_sampling"),
    ]:
        with pytest.raises(ArgumentValueError, match=match):
            blur.attribute(x, target=0, **kwargs)
    with pytest.raises(ArgumentTypeError, match="max_sigma"):
        blur.attribute(x, target=0, max_sigma="large")
    with pytest.raises(ArgumentValueError, match="sigma"):
        gaussian_blur(x, -1.0)
