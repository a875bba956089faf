"""Layer and neuron classes against Captum 0.9.0, on a CNN and an embedding + MLP text model.

Every layer and neuron class runs with the same arguments through both
libraries (seeded alike where random), at a conv layer and a linear layer,
attributing to the layer's output and its input; the text model runs with
integer token ids (classes that do not differentiate the inputs) and with
float embeddings (all classes).
"""

import numpy as np
import pytest
import torch
from models import TwoInputModel, seeded
from models.layer import cnn, text_model, tokens

import attribuo.attr as A

captum_attr = pytest.importorskip("captum.attr")

pytestmark = pytest.mark.filterwarnings("ignore")

F64 = torch.float64


def _assert_same(ours, theirs):
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            _assert_same(o, t)
        return
    assert isinstance(ours, torch.Tensor)
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-7)


def _both(call):
    results = []
    for lib in (A, captum_attr):
        torch.manual_seed(11)
        np.random.seed(11)
        results.append(call(lib))
    _assert_same(*results)


def _layer_calls(x, b, dist, t):
    return {
        "LayerActivation": lambda M, m, lay, ui: M.LayerActivation(m, lay).attribute(
            x, attribute_to_layer_input=ui),
        "LayerGradientXActivation": lambda M, m, lay, ui: M.LayerGradientXActivation(m, lay).attribute(
            x, t, attribute_to_layer_input=ui),
        "LayerGradient": lambda M, m, lay, ui: M.LayerGradientXActivation(
            m, lay, multiply_by_inputs=False).attribute(x, t, attribute_to_layer_input=ui),
        "InternalInfluence": lambda M, m, lay, ui: M.InternalInfluence(m, lay).attribute(
            x, b, t, n_steps=12, attribute_to_layer_input=ui),
        "LayerConductance": lambda M, m, lay, ui: M.LayerConductance(m, lay).attribute(
            x, b, t, n_steps=12, return_convergence_delta=True, attribute_to_layer_input=ui),
        "LayerIntegratedGradients": lambda M, m, lay, ui: M.LayerIntegratedGradients(m, lay).attribute(
            x, b, t, n_steps=12, return_convergence_delta=True, attribute_to_layer_input=ui),
        "LayerGradientShap": lambda M, m, lay, ui: M.LayerGradientShap(m, lay).attribute(
            x, dist, n_samples=5, stdevs=0.1, target=t, return_convergence_delta=True,
            attribute_to_layer_input=ui),
        "LayerDeepLift": lambda M, m, lay, ui: M.LayerDeepLift(m, lay).attribute(
            x, b, t, return_convergence_delta=True, attribute_to_layer_input=ui),
        "LayerDeepLiftShap": lambda M, m, lay, ui: M.LayerDeepLiftShap(m, lay).attribute(
            x, dist, t, return_convergence_delta=True, attribute_to_layer_input=ui),
        "LayerFeatureAblation": lambda M, m, lay, ui: M.LayerFeatureAblation(m, lay).attribute(
            x, None, t, attribute_to_layer_input=ui),
        # Captum's LayerFeaturePermutation selects `target` twice (an error for 2-D
        # outputs), so it is compared without one; tests/attr covers targets.
        "LayerFeaturePermutation": lambda M, m, lay, ui: M.LayerFeaturePermutation(m, lay).attribute(x),
    }


def _neuron_calls(x, b, dist, t):
    return {
        "NeuronGradient": lambda M, m, lay, s, ui: M.NeuronGradient(m, lay).attribute(
            x, s, attribute_to_neuron_input=ui),
        "NeuronIntegratedGradients": lambda M, m, lay, s, ui: M.NeuronIntegratedGradients(m, lay).attribute(
            x, s, b, n_steps=12, attribute_to_neuron_input=ui),
        "NeuronConductance": lambda M, m, lay, s, ui: M.NeuronConductance(m, lay).attribute(
            x, s, b, t, n_steps=12, attribute_to_neuron_input=ui),
        "NeuronGradientShap": lambda M, m, lay, s, ui: M.NeuronGradientShap(m, lay).attribute(
            x, s, dist, n_samples=5, stdevs=0.1, attribute_to_neuron_input=ui),
        "NeuronDeepLift": lambda M, m, lay, s, ui: M.NeuronDeepLift(m, lay).attribute(
            x, s, b, attribute_to_neuron_input=ui),
        "NeuronDeepLiftShap": lambda M, m, lay, s, ui: M.NeuronDeepLiftShap(m, lay).attribute(
            x, s, dist, attribute_to_neuron_input=ui),
        "NeuronGuidedBackprop": lambda M, m, lay, s, ui: M.NeuronGuidedBackprop(m, lay).attribute(
            x, s, attribute_to_neuron_input=ui),
        "NeuronDeconvolution": lambda M, m, lay, s, ui: M.NeuronDeconvolution(m, lay).attribute(
            x, s, attribute_to_neuron_input=ui),
        "NeuronFeatureAblation": lambda M, m, lay, s, ui: M.NeuronFeatureAblation(m, lay).attribute(
            x, s, b, attribute_to_neuron_input=ui),
    }


# ---------------------------------------------------------------------------- CNN
def _cnn():
    model = cnn()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 8, 8, generator=g, dtype=F64)
    b = 0.2 * torch.rand(3, 1, 8, 8, generator=g, dtype=F64)
    dist = torch.rand(4, 1, 8, 8, generator=g, dtype=F64)
    return model, x, b, dist, torch.tensor([0, 2, 1])


CNN_SITES = [("conv1", False), ("conv1", True), ("fc", False), ("fc", True)]
LAYER_NAMES = list(_layer_calls(None, None, None, None))
NEURON_NAMES = list(_neuron_calls(None, None, None, None))


@pytest.mark.parametrize("site", CNN_SITES, ids=lambda s: f"{s[0]}-{'in' if s[1] else 'out'}")
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_cnn_layer(name, site):
    layer_name, ui = site
    if name == "LayerFeaturePermutation" and ui:
        pytest.skip("LayerFeaturePermutation has no attribute_to_layer_input")
    model, x, b, dist, t = _cnn()
    call = _layer_calls(x, b, dist, t)[name]
    _both(lambda M: call(M, model, getattr(model, layer_name), ui))


# a selector per site, and the other selector forms at the conv output
CNN_SELECTORS = [
    ("conv1", False, (1, 2, 3)),
    ("conv1", False, (1, slice(2, 4), slice(0, 3))),
    ("conv1", False, lambda y: y[:, 2, 3, 1]),
    ("conv1", True, (0, 4, 4)),
    ("fc", False, 2),
    ("fc", True, 17),
]


@pytest.mark.parametrize("case", range(len(CNN_SELECTORS)))
@pytest.mark.parametrize("name", NEURON_NAMES)
def test_cnn_neuron(name, case):
    layer_name, ui, selector = CNN_SELECTORS[case]
    model, x, b, dist, t = _cnn()
    call = _neuron_calls(x, b, dist, t)[name]
    _both(lambda M: call(M, model, getattr(model, layer_name), selector, ui))


# ---------------------------------------------------------------------- text model
# Classes that never differentiate or interpolate the inputs, so token ids work.
# (Captum's LayerDeepLiftShap fails on integer inputs; tests/attr/layer/test_layer_attribution.py
# checks attribuo's against its definition there.)
TOKEN_LAYER_NAMES = [
    "LayerActivation", "LayerGradientXActivation", "LayerGradient", "LayerIntegratedGradients",
    "LayerDeepLift", "LayerFeatureAblation", "LayerFeaturePermutation",
]
TEXT_SITES = [("emb", False), ("fc1", False), ("fc1", True)]


def _token_args():
    model = text_model()
    x = tokens()
    b = torch.zeros_like(x)  # padding token 0
    dist = tokens(3, seed=9)
    return model, x, b, dist, [2, 0, 1, 1]


@pytest.mark.parametrize("site", TEXT_SITES, ids=lambda s: f"{s[0]}-{'in' if s[1] else 'out'}")
@pytest.mark.parametrize("name", TOKEN_LAYER_NAMES)
def test_text_tokens_layer(name, site):
    layer_name, ui = site
    if name == "LayerFeaturePermutation" and ui:
        pytest.skip("LayerFeaturePermutation has no attribute_to_layer_input")
    model, x, b, dist, t = _token_args()
    call = _layer_calls(x, b, dist, t)[name]
    _both(lambda M: call(M, model, getattr(model, layer_name), ui))


@pytest.mark.parametrize("site", [("emb", False, (2, 3)), ("fc1", False, 4), ("fc1", True, 7)])
def test_text_tokens_neuron_ablation(site):
    layer_name, ui, selector = site
    model, x, b, dist, t = _token_args()
    call = _neuron_calls(x, b, dist, t)["NeuronFeatureAblation"]
    _both(lambda M: call(M, model, getattr(model, layer_name), selector, ui))


def _embedded_args():
    model, x, _, dist, t = _token_args()
    with torch.no_grad():
        return model, model.emb(x), torch.zeros(4, 5, 6, dtype=F64), model.emb(dist), t


@pytest.mark.parametrize("ui", [False, True], ids=["out", "in"])
@pytest.mark.parametrize("name", [n for n in LAYER_NAMES if n not in TOKEN_LAYER_NAMES] + ["LayerDeepLift"])
def test_text_embedded_layer(name, ui):
    model, x, b, dist, t = _embedded_args()
    call = _layer_calls(x, b, dist, t)[name]
    _both(lambda M: call(M, model, model.fc1, ui))


@pytest.mark.parametrize("site", [(False, 4), (True, 7)], ids=["out", "in"])
@pytest.mark.parametrize("name", NEURON_NAMES)
def test_text_embedded_neuron(name, site):
    ui, selector = site
    model, x, b, dist, t = _embedded_args()
    call = _neuron_calls(x, b, dist, t)[name]
    _both(lambda M: call(M, model, model.fc1, selector, ui))


# ------------------------------------------------------------ lists of layers
# Captum needs the listed layers not to feed each other (else it fails on an
# unused gradient), so the list cases use the parallel branches of a two-input model.
@pytest.mark.parametrize("name", ["LayerActivation", "LayerGradientXActivation", "LayerIntegratedGradients"])
@pytest.mark.parametrize("ui", [False, True], ids=["out", "in"])
def test_list_of_layers(name, ui):
    model = seeded(TwoInputModel()).double()
    g = torch.Generator().manual_seed(6)
    xs = (torch.rand(3, 4, generator=g, dtype=F64), torch.rand(3, 3, generator=g, dtype=F64))
    bs = tuple(0.1 * torch.ones_like(x) for x in xs)
    call = _layer_calls(xs, bs, None, [0, 2, 1])[name]
    _both(lambda M: call(M, model, [model.a, model.b], ui))


def test_list_of_one_embedding_layer():
    model, x, b, _, t = _token_args()
    _both(lambda M: M.LayerIntegratedGradients(model, [model.emb]).attribute(
        x, b, t, n_steps=12, return_convergence_delta=True))


@pytest.mark.parametrize("method", ["riemann_left", "riemann_trapezoid", "gausslegendre"])
def test_path_methods_and_internal_batch_size(method):
    model, x, b, _, t = _cnn()
    for name in ("LayerConductance", "InternalInfluence", "LayerIntegratedGradients"):
        _both(lambda M, name=name: getattr(M, name)(model, model.conv2).attribute(
            x, b, t, n_steps=9, method=method, internal_batch_size=7))
    _both(lambda M: M.NeuronConductance(model, model.conv2).attribute(
        x, (1, 2, 2), b, t, n_steps=9, method=method, internal_batch_size=7))
