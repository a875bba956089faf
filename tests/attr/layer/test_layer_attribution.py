"""Layer attribution: closed forms, completeness, chunking, result forms and misuse."""

import pytest
import torch
from models.layer import cnn, text_model, tokens
from torch import nn

import attribuo.attr as A
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import LayerAttribution
from attribuo.demo import ToyModel

F64 = torch.float64


def _two_linear(seed=0):
    """Linear -> Linear: every layer method has a closed form at the first layer."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()


def _x(n=5, d=3, seed=1):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ closed forms
def test_closed_forms_on_linear_model():
    model = _two_linear()
    x, b = _x(), 0.3 * _x(seed=2)
    first, w = model[0], model[1].weight[1]
    y, y0 = first(x).detach(), first(b).detach()
    expected_change = (y - y0) * w
    for cls in (A.LayerIntegratedGradients, A.LayerDeepLift):
        got = cls(model, first).attribute(x, b, target=1)
        torch.testing.assert_close(got, expected_change)
    # conductance sums differences between consecutive points; trapezoid points span [0, 1]
    got = A.LayerConductance(model, first).attribute(x, b, target=1, method="riemann_trapezoid")
    torch.testing.assert_close(got, expected_change)
    torch.testing.assert_close(A.InternalInfluence(model, first).attribute(x, b, target=1), w.expand(5, 4))
    torch.testing.assert_close(A.LayerGradientXActivation(model, first).attribute(x, 1), y * w)
    torch.testing.assert_close(
        A.LayerGradientXActivation(model, first, multiply_by_inputs=False).attribute(x, 1), w.expand(5, 4)
    )
    torch.testing.assert_close(A.LayerActivation(model, first).attribute(x), y)
    # ablating neuron j of the first layer (to 0) removes y_j * w_j from the output
    torch.testing.assert_close(A.LayerFeatureAblation(model, first).attribute(x, target=1), y * w)


def test_layer_input_is_the_previous_output():
    model = _two_linear()
    x = _x()
    for cls in (A.LayerConductance, A.LayerIntegratedGradients, A.InternalInfluence):
        at_input = cls(model, model[1]).attribute(x, target=0, attribute_to_layer_input=True)
        at_output = cls(model, model[0]).attribute(x, target=0)
        torch.testing.assert_close(at_input, at_output)


# ------------------------------------------------------------------ completeness
@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_layer_conductance_delta_shrinks_with_n_steps(method):
    model = ToyModel()
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(123))
    lc = A.LayerConductance(model, model.lin1)
    deltas = [
        lc.attribute(x, torch.zeros(2, 3), target=0, n_steps=n, method=method,
                     return_convergence_delta=True)[1].abs().max().item()
        for n in (4, 16, 64, 256)
    ]
    assert deltas[0] > 1e-3
    assert all(a > b for a, b in zip(deltas, deltas[1:])), deltas
    assert deltas[-1] < deltas[0] / 20


def test_layer_conductance_delta_is_its_definition():
    model = cnn()
    x, b = torch.rand(3, 1, 8, 8, dtype=F64), torch.zeros(3, 1, 8, 8, dtype=F64)
    attr, delta = A.LayerConductance(model, model.conv2).attribute(
        x, b, target=[0, 1, 3], n_steps=20, return_convergence_delta=True)
    with torch.no_grad():
        out, out0 = model(x), model(b)
    rows = torch.arange(3)
    change = out[rows, [0, 1, 3]] - out0[rows, [0, 1, 3]]
    torch.testing.assert_close(delta, attr.flatten(1).sum(1) - change)


def test_layer_integrated_gradients_on_token_ids_is_complete():
    model = text_model()
    x, pad = tokens(), torch.zeros(4, 5, dtype=torch.long)
    attr, delta = A.LayerIntegratedGradients(model, model.emb).attribute(
        x, pad, target=2, n_steps=200, return_convergence_delta=True)
    assert attr.shape == (4, 5, 6) and attr.dtype == F64
    with torch.no_grad():
        change = model(x)[:, 2] - model(pad)[:, 2]
    torch.testing.assert_close(attr.flatten(1).sum(1) - change, delta)
    assert delta.abs().max() < 1e-2


def test_layer_deeplift_shap_on_token_ids_is_mean_of_layer_deeplift():
    model = text_model()
    x, dist = tokens(), tokens(3, seed=9)
    ours, delta = A.LayerDeepLiftShap(model, model.fc1).attribute(
        x, dist, target=1, return_convergence_delta=True)
    per_baseline = [A.LayerDeepLift(model, model.fc1).attribute(x, dist[j:j + 1].expand(4, 5), target=1)
                    for j in range(3)]
    torch.testing.assert_close(ours, torch.stack(per_baseline).mean(0))
    assert delta.shape == (12,) and delta.abs().max() < 1e-10


# ------------------------------------------------------------------ chunking
@pytest.mark.parametrize("size", [1, 4, 7, None])
def test_results_do_not_depend_on_chunking(size, monkeypatch):
    model = cnn()
    x, b = torch.rand(3, 1, 8, 8, dtype=F64), 0.1 * torch.ones(3, 1, 8, 8, dtype=F64)
    kw = dict(target=[0, 2, 1], n_steps=10)
    reference = {
        cls: cls(model, model.conv2).attribute(x, b, **kw)
        for cls in (A.LayerConductance, A.InternalInfluence, A.LayerIntegratedGradients)
    }
    nc = A.NeuronConductance(model, model.conv2).attribute(x, (1, 3, 3), b, **kw)
    if size is None:  # a tiny memory budget forces one step per chunk
        monkeypatch.setenv("ATTRIBUO_MEMORY_BUDGET_MB", "0.00001")
    for cls, expected in reference.items():
        got = cls(model, model.conv2).attribute(x, b, internal_batch_size=size, **kw)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got = A.NeuronConductance(model, model.conv2).attribute(
        x, (1, 3, 3), b, internal_batch_size=size, **kw)
    torch.testing.assert_close(got, nc, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ result forms
class TupleLayer(nn.Module):
    def forward(self, x):
        return x[:, :2] * 2.0, x[:, 2:].tanh()


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 5)
        self.split = TupleLayer()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        a, b = self.split(self.pre(x))
        return self.head(torch.cat([a, b.sin()], 1))


def test_tuple_output_layer():
    torch.manual_seed(0)
    model = TupleModel().double()
    x = _x()
    acts = A.LayerActivation(model, model.split).attribute(x)
    assert isinstance(acts, tuple) and [a.shape for a in acts] == [(5, 2), (5, 3)]
    # gradients w.r.t. both parts, by hand
    a, b = (t.detach().requires_grad_() for t in acts)
    out = model.head(torch.cat([a, b.sin()], 1))[:, 1].sum()
    ga, gb = torch.autograd.grad(out, (a, b))
    got = A.LayerGradientXActivation(model, model.split).attribute(x, 1)
    torch.testing.assert_close(got, (ga * a, gb * b))
    attr, delta = A.LayerIntegratedGradients(model, model.split).attribute(
        x, target=1, n_steps=100, return_convergence_delta=True)
    assert isinstance(attr, tuple) and delta.abs().max() < 1e-4


def test_list_of_layers_gives_a_list():
    model = _two_linear()
    x = _x()
    acts = A.LayerActivation(model, [model[0], model[1]]).attribute(x)
    assert isinstance(acts, list) and len(acts) == 2
    torch.testing.assert_close(acts[1], model(x).detach())
    gxa = A.LayerGradientXActivation(model, [model[0], model[1]]).attribute(x, 0)
    torch.testing.assert_close(gxa[0], A.LayerGradientXActivation(model, model[0]).attribute(x, 0))


def test_float64_in_float64_out():
    model = _two_linear()
    out = A.LayerConductance(model, model[0]).attribute(_x(), target=0)
    assert out.dtype == F64


# ------------------------------------------------------------------ model shapes
class InplaceAfterLayer(nn.Module):
    def __init__(self, inplace):
        super().__init__()
        self.fc1 = nn.Linear(3, 6)
        self.act = nn.ReLU(inplace=inplace)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)) * 1.5)


@pytest.mark.parametrize("cls", [A.LayerActivation, A.LayerGradientXActivation, A.LayerConductance,
                                 A.LayerIntegratedGradients, A.InternalInfluence, A.LayerDeepLift,
                                 A.LayerFeatureAblation])
@pytest.mark.parametrize("ui", [False, True], ids=["out", "in"])
def test_inplace_operation_after_layer(cls, ui):
    torch.manual_seed(0)
    plain = InplaceAfterLayer(False).double()
    inplace = InplaceAfterLayer(True).double()
    inplace.load_state_dict(plain.state_dict())
    x = _x() - 0.5
    layer = "act" if ui else "fc1"
    kw = {} if cls is A.LayerActivation else {"target": 1}
    want = cls(plain, getattr(plain, layer)).attribute(x, attribute_to_layer_input=ui, **kw)
    got = cls(inplace, getattr(inplace, layer)).attribute(x, attribute_to_layer_input=ui, **kw)
    torch.testing.assert_close(got, want)
    if cls is A.LayerActivation:  # the values before the in-place ReLU, negatives included
        torch.testing.assert_close(got, plain.fc1(x).detach())
        assert (got < 0).any()


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.fc(x))


@pytest.mark.parametrize("cls", [A.LayerActivation, A.LayerConductance, A.LayerIntegratedGradients,
                                 A.LayerFeatureAblation, A.NeuronGradient])
def test_reused_layer_is_a_clear_error(cls):
    model = Reused()
    kw = {} if cls is A.LayerActivation else {"target": 0}
    if cls is A.NeuronGradient:
        kw = {"neuron_selector": 0}
    with pytest.raises(ArgumentValueError, match="more than once"):
        cls(model, model.fc).attribute(torch.rand(2, 3), **kw)
    assert not model.fc._forward_hooks and not model.fc._forward_pre_hooks


def test_layer_not_called_and_bad_layer():
    model = _two_linear()
    with pytest.raises(ArgumentValueError, match="not called"):
        A.LayerConductance(model, nn.Linear(3, 3)).attribute(_x(), target=0)
    with pytest.raises(ArgumentTypeError, match="`layer`"):
        A.LayerActivation(model, "fc1").attribute(_x())
    with pytest.raises(ArgumentTypeError, match="LayerConductance takes one `layer`"):
        A.LayerConductance(model, [model[0], model[1]]).attribute(_x(), target=0)
    with pytest.raises(ArgumentValueError, match="`grad_kwargs`"):
        A.LayerIntegratedGradients(model, model[0]).attribute(_x(), target=0, grad_kwargs={"create_graph": True})
    with pytest.raises(ArgumentTypeError, match="floating-point"):
        A.LayerConductance(model, model[0]).attribute(torch.ones(2, 3, dtype=torch.long), target=0)


def test_layer_feature_permutation_with_target_permutes_rows():
    model = _two_linear()
    x = _x(n=6)
    torch.manual_seed(4)
    got = A.LayerFeaturePermutation(model, model[0]).attribute(x, target=1)
    torch.manual_seed(4)
    selected = A.LayerFeaturePermutation(lambda t: model(t)[:, 1], model[0]).attribute(x)
    torch.testing.assert_close(got, selected)
    # linear head: the drop for neuron j is w_j * (y_j - y_perm(j))
    y = model[0](x).detach()
    w = model[1].weight[1].detach()
    for j in range(4):
        diff = got[:, j] / w[j]
        assert torch.isin(torch.round(y[:, j] - diff, decimals=8), torch.round(y[:, j], decimals=8)).all()


def test_no_state_left_behind():
    model = cnn()
    model.train()
    model.conv1.weight.requires_grad_(False)
    x = torch.rand(2, 1, 8, 8, dtype=F64)
    x0 = x.clone()
    for cls in (A.LayerConductance, A.LayerIntegratedGradients, A.LayerDeepLift, A.LayerGradientShap):
        args = (x, torch.zeros(3, 1, 8, 8, dtype=F64)) if cls is A.LayerGradientShap else (x,)
        cls(model, model.conv2).attribute(*args, target=0)
        with pytest.raises(ValueError):
            cls(model, model.conv2).attribute(*args, target=9)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert torch.equal(x, x0) and not x.requires_grad


def test_interpolate():
    layer_attr = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = LayerAttribution.interpolate(layer_attr, (4, 4))
    assert up.shape == (1, 1, 4, 4) and torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`interpolate_dims`"):
        LayerAttribution.interpolate(layer_attr, (4, 4, 4))
