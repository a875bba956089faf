"""DeepLift and DeepLiftShap: slow references, completeness, spellings, errors, state."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from models.deeplift import ACTIVATIONS, DeepMLP, PoolNet, SoftmaxNet, seeded
from torch import nn

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import DeepLift, DeepLiftShap, Saliency

# (activation, spelling) pairs that exist in torch
SPELLED = [
    (act, sp)
    for act in ACTIVATIONS
    for sp in ("modules", "reused", "functional", "tensor_method", "inplace")
    if not (sp == "tensor_method" and act not in ("relu", "sigmoid", "tanh"))
    and not (sp == "inplace" and act == "softplus")
]


def _x(n=4, d=5, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64), 0.5 * torch.randn(n, d, dtype=torch.float64)


def _reference_mlp(model: DeepMLP, x, x0, target, act_name):
    """Rescale multipliers of a 3-layer MLP, one example and one layer at a time."""
    act = ACTIVATIONS[act_name][1]
    layers = [model.fc1, model.fc2, model.fc3]
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        h, h0, ratios = x[i], x0[i], []
        for k, fc in enumerate(layers):
            z, z0 = fc(h), fc(h0)
            if k == 2:
                break
            a, a0 = act(z), act(z0)
            ratios.append((a - a0) / (z - z0))  # no unit has z == z0 here
            h, h0 = a, a0
        g = model.fc3.weight[target]
        g = model.fc2.weight.t() @ (g * ratios[1])
        out[i] = model.fc1.weight.t() @ (g * ratios[0])
    return out


@pytest.mark.parametrize("act, spelling", SPELLED)
def test_matches_slow_reference_for_every_spelling(act, spelling):
    model = seeded(DeepMLP(act, spelling))
    x, x0 = _x()
    with torch.no_grad():
        expected = _reference_mlp(model, x, x0, 2, act) * (x - x0)
    attr, delta = DeepLift(model).attribute(x, x0, target=2, return_convergence_delta=True)
    torch.testing.assert_close(attr, expected, atol=1e-12, rtol=1e-10)
    assert delta.abs().max() < 1e-10


def test_one_nonlinearity_closed_form():
    # F(x) = w . sigmoid(W x + b): the multiplier is W^T (w * rescale(z, z0)).
    torch.manual_seed(1)
    W, b, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x, x0 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    z, z0 = x @ W.t() + b, x0 @ W.t() + b
    m = (torch.sigmoid(z) - torch.sigmoid(z0)) / (z - z0)
    expected = (m * w) @ W * (x - x0)
    for forward in (lambda t: torch.sigmoid(t @ W.t() + b) @ w, lambda t: (t @ W.t() + b).sigmoid() @ w):
        torch.testing.assert_close(DeepLift(forward).attribute(x, x0), expected, atol=1e-12, rtol=1e-10)


POOL_NETS = [
    (dims, functional, order)
    for dims in (1, 2, 3)
    for functional in (False, True)
    for order in ("relu_pool", "separated")
]


@pytest.mark.parametrize("dims, functional, order", POOL_NETS)
def test_completeness_on_pool_networks_float32(dims, functional, order):
    torch.manual_seed(dims)
    model = seeded(PoolNet(dims, functional=functional, order=order)).float()
    x = torch.randn(6, *PoolNet.input_shape(dims))
    x0 = 0.3 * torch.randn_like(x)
    _, delta = DeepLift(model).attribute(x, x0, target=[0, 1, 2, 0, 1, 2], return_convergence_delta=True)
    assert delta.abs().max() < 1e-5


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("spelling", ["modules", "reused", "functional", "inplace"])
def test_completeness_float32(act, spelling):
    model = seeded(DeepMLP(act, spelling)).float()
    x, x0 = (t.float() for t in _x(16))
    _, delta = DeepLift(model).attribute(x, x0, target=0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-5


def _pool_reference(x, x0, w, kernel, stride):
    """Per window: the rise over the reference's max goes to the input's arg-max,
    the drop below it to the reference's arg-max (contributions accumulate)."""
    out = torch.zeros_like(x)
    length = x.shape[-1]
    for n in range(x.shape[0]):
        for j, start in enumerate(range(0, length - kernel + 1, stride)):
            i = start + int(x[n, 0, start:start + kernel].argmax())
            i0 = start + int(x0[n, 0, start:start + kernel].argmax())
            y, y0 = x[n, 0, i], x0[n, 0, i0]
            top = torch.maximum(y, y0)
            out[n, 0, i] += w[j] * (top - y0)
            out[n, 0, i0] += w[j] * (y - top)
    return out


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1), (3, 2)])
def test_max_pool_matches_reference_with_overlapping_windows(kernel, stride):
    torch.manual_seed(2)
    x, x0 = torch.randn(3, 1, 9, dtype=torch.float64), torch.randn(3, 1, 9, dtype=torch.float64)
    n_out = (9 - kernel) // stride + 1
    w = torch.randn(n_out, dtype=torch.float64)

    def forward(t):
        return F.max_pool1d(t, kernel, stride).flatten(1) @ w

    attr, delta = DeepLift(forward).attribute(x, x0, return_convergence_delta=True)
    torch.testing.assert_close(attr, _pool_reference(x, x0, w, kernel, stride), atol=1e-12, rtol=0)
    assert delta.abs().max() < 1e-12


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1)])
def test_max_pool_falls_back_to_the_gradient_where_input_equals_baseline(kernel, stride):
    torch.manual_seed(6)
    x = torch.randn(3, 1, 9, dtype=torch.float64)
    x0 = torch.where(torch.rand_like(x) < 0.5, x, torch.randn_like(x))  # ties at about half the positions
    n_out = (9 - kernel) // stride + 1
    w = torch.randn(n_out, dtype=torch.float64)

    def forward(t):
        return F.max_pool1d(t, kernel, stride).flatten(1) @ w

    multipliers = DeepLift(forward, multiply_by_inputs=False).attribute(x, x0)
    tie = x == x0
    gradient = Saliency(forward).attribute(x, abs=False)
    rescaled = _pool_reference(x, x0, w, kernel, stride) / torch.where(tie, 1.0, x - x0)
    torch.testing.assert_close(multipliers, torch.where(tie, gradient, rescaled), atol=1e-12, rtol=0)


@pytest.mark.parametrize("spelling", ["module", "F", "torch", "indices"])
def test_max_pool_spellings_agree(spelling):
    torch.manual_seed(4)
    x, x0 = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(27, dtype=torch.float64)
    pools = {
        "module": nn.MaxPool2d(2),
        "F": lambda t: F.max_pool2d(t, 2),
        "torch": lambda t: torch.max_pool2d(t, 2),
        "indices": lambda t: F.max_pool2d(t, kernel_size=2, return_indices=True)[0],
    }
    reference = DeepLift(lambda t: torch.tanh(nn.MaxPool2d(2)(t)).flatten(1) @ w).attribute(x, x0)
    attr = DeepLift(lambda t: torch.tanh(pools[spelling](t)).flatten(1) @ w).attribute(x, x0)
    torch.testing.assert_close(attr, reference, atol=1e-12, rtol=0)


def test_softmax_functional_equals_module():
    torch.manual_seed(0)
    module, functional = seeded(SoftmaxNet()), seeded(SoftmaxNet(functional=True))
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(
        DeepLift(module).attribute(x, target=1), DeepLift(functional).attribute(x, target=1)
    )


def test_baseline_equal_to_input_gives_the_gradient():
    # Where x == x0 every rule falls back to the ordinary derivative.
    model = seeded(DeepMLP("tanh"))
    x, _ = _x()
    multipliers = DeepLift(model, multiply_by_inputs=False).attribute(x, x.clone(), target=1)
    torch.testing.assert_close(multipliers, Saliency(model).attribute(x, target=1, abs=False))


def test_multiply_by_inputs_and_custom_functions():
    model = seeded(DeepMLP("sigmoid"))
    x, x0 = _x()
    full = DeepLift(model).attribute(x, x0, target=0)
    m = DeepLift(model, multiply_by_inputs=False).attribute(x, x0, target=0)
    torch.testing.assert_close(m * (x - x0), full)
    assert not DeepLift(model, multiply_by_inputs=False).multiplies_by_inputs
    one = DeepLift(model).attribute(x, x0, target=0, custom_attribution_func=lambda mm: (mm[0] + 1,))
    torch.testing.assert_close(one, m + 1)
    two = DeepLift(model).attribute(x, x0, target=0, custom_attribution_func=lambda mm, xs: (mm[0] * xs[0],))
    torch.testing.assert_close(two, m * x)
    three = DeepLift(model).attribute(
        x, x0, target=0, custom_attribution_func=lambda mm, xs, bs: (mm[0] * (xs[0] - bs[0]),)
    )
    torch.testing.assert_close(three, full)


def test_shap_is_the_mean_of_deeplift_over_baselines():
    model = seeded(DeepMLP("elu"))
    x, _ = _x(3)
    dist = torch.randn(4, 5, dtype=torch.float64)
    attr, delta = DeepLiftShap(model).attribute(x, dist, target=[0, 2, 1], return_convergence_delta=True)
    per_baseline, deltas = [], []
    for j in range(4):
        a, d = DeepLift(model).attribute(x, dist[j:j + 1], target=[0, 2, 1], return_convergence_delta=True)
        per_baseline.append(a)
        deltas.append(d)
    torch.testing.assert_close(attr, torch.stack(per_baseline).mean(0))
    # one delta per pair, input-major: pair i * B + j is input i with baseline j
    torch.testing.assert_close(delta, torch.stack(deltas, dim=1).reshape(-1))
    assert delta.shape == (12,) and delta.abs().max() < 1e-10


def test_shap_tuple_inputs_callable_baselines_and_extra_args():
    torch.manual_seed(0)
    w1, w2 = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)

    def forward(a, b, scale):
        return torch.relu(a @ w1 + b @ w2).unsqueeze(1) * scale

    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    scale = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    dist = (torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))
    attr, delta = DeepLiftShap(forward).attribute(
        (a, b), lambda inputs: dist, target=0, additional_forward_args=(scale,), return_convergence_delta=True
    )
    assert isinstance(attr, tuple) and attr[0].shape == a.shape and attr[1].shape == b.shape
    assert delta.abs().max() < 1e-10
    # the scale of example 1 is 3x that of example 0: its pairs must use it
    out = forward(a.repeat_interleave(3, 0), b.repeat_interleave(3, 0), scale.repeat_interleave(3, 0))
    out0 = forward(dist[0].repeat(2, 1), dist[1].repeat(2, 1), scale.repeat_interleave(3, 0))
    total = (out - out0).reshape(2, 3).mean(1)
    torch.testing.assert_close(attr[0].sum(1) + attr[1].sum(1), total)


def test_results_do_not_depend_on_the_batch():
    model = seeded(PoolNet(2))
    torch.manual_seed(3)
    x = torch.randn(4, *PoolNet.input_shape(2), dtype=torch.float64)
    x0 = torch.randn_like(x)
    batch = DeepLift(model).attribute(x, x0, target=[0, 1, 2, 0])
    single = torch.cat([DeepLift(model).attribute(x[i:i + 1], x0[i:i + 1], target=t) for i, t in enumerate([0, 1, 2, 0])])
    torch.testing.assert_close(batch, single, atol=1e-12, rtol=0)


def test_baseline_forms_and_dtype():
    model = seeded(DeepMLP("relu"))
    x, _ = _x()
    zeros = DeepLift(model).attribute(x, target=0)
    assert zeros.dtype == torch.float64
    torch.testing.assert_close(DeepLift(model).attribute(x, 0, target=0), zeros)
    torch.testing.assert_close(DeepLift(model).attribute(x, torch.zeros(5), target=0), zeros)
    torch.testing.assert_close(DeepLift(model).attribute(x, torch.zeros(1, 5), target=0), zeros)


def test_scalar_output_for_the_whole_batch():
    model = seeded(DeepMLP("tanh"))
    x, x0 = _x()
    attr = DeepLift(lambda t: model(t)[:, 1].sum()).attribute(x, x0)
    with torch.no_grad():
        torch.testing.assert_close(attr.sum(), model(x)[:, 1].sum() - model(x0)[:, 1].sum())


def test_warns_once_naming_uncovered_nonlinearities():
    def forward(t):
        h = F.hardtanh(t)
        h = F.hardtanh(h) + torch.sin(h)
        return torch.relu(h).sum(1)

    x = torch.randn(3, 4)
    with pytest.warns(UserWarning) as record:
        DeepLift(forward).attribute(x)
    messages = [str(r.message) for r in record if "Rescale" in str(r.message)]
    assert len(messages) == 1
    assert "F.hardtanh" in messages[0] and "torch.sin" in messages[0] and "relu" not in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeepLift(seeded(PoolNet(2)).float()).attribute(torch.randn(2, 2, 6, 6), target=0)


def test_warns_when_a_tensor_cannot_be_paired():
    w = torch.randn(3)

    def forward(t):  # the non-linearity sees [features, 2 * batch]: dim 0 is not the batch
        return torch.sigmoid(t.t()).t() @ w

    with pytest.warns(UserWarning, match="could not pair"):
        DeepLift(forward).attribute(torch.randn(2, 3))


def test_state_is_restored_and_inputs_untouched():
    model = seeded(DeepMLP("relu", "inplace"))
    model.train()
    model.fc2.weight.requires_grad_(False)
    x, x0 = _x()
    x_copy, x0_copy = x.clone(), x0.clone()
    DeepLiftShap(model).attribute(x, torch.stack([x0[0], x0[1]]), target=0)
    DeepLift(model).attribute(x, x0, target=0)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc2.weight.requires_grad and model.fc1.weight.requires_grad
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())
    assert torch.equal(x, x_copy) and torch.equal(x0, x0_copy)
    assert not x.requires_grad and not x0.requires_grad


def test_tuple_in_tuple_out_and_future():
    torch.manual_seed(0)

    def forward(a, b):
        return torch.tanh(a.sum(1, keepdim=True) - b.sum(1, keepdim=True))

    a, b = torch.randn(2, 3), torch.randn(2, 2)
    attr = DeepLift(forward).attribute((a, b), target=0)
    assert isinstance(attr, tuple) and len(attr) == 2
    future = DeepLift(forward).attribute_future((a, b), target=0)
    torch.testing.assert_close(future.wait(), attr)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m, x: DeepLiftShap(m).attribute(x, torch.zeros(1, 5, dtype=torch.float64)), ArgumentValueError),
        (lambda m, x: DeepLiftShap(m).attribute(x, torch.zeros(3, 4, dtype=torch.float64)), ArgumentValueError),
        (lambda m, x: DeepLiftShap(m).attribute(x, 0.0), ArgumentTypeError),
        (lambda m, x: DeepLift(m, eps=-1.0), ArgumentValueError),
        (lambda m, x: DeepLift(m).attribute([x], target=0), ArgumentTypeError),
        (lambda m, x: DeepLift(m).attribute(x.long(), target=0), ArgumentTypeError),
        (lambda m, x: DeepLift(m).attribute(x, torch.zeros(2, 2), target=0), ArgumentValueError),
        (lambda m, x: DeepLift(m).attribute(x, target=7), ArgumentValueError),
        (lambda m, x: DeepLift(m).attribute(x, target=0, custom_attribution_func=lambda a, b, c, d: a),
         ArgumentValueError),
        (lambda m, x: DeepLift(m).attribute(x, target=0, custom_attribution_func=lambda a: a[0].sum()),
         ArgumentValueError),
        (lambda m, x: DeepLift(m).attribute(x, target=0, custom_attribution_func=lambda a: [a[0]]),
         ArgumentTypeError),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error):
    model = seeded(DeepMLP("relu"))
    x, _ = _x()
    with pytest.raises(error) as info:
        call(model, x)
    assert "`" in str(info.value)  # the message names the argument
    assert isinstance(info.value, AssertionError)  # Captum-compatible


def test_non_contiguous_layouts():
    model = seeded(PoolNet(2)).to(memory_format=torch.channels_last)
    torch.manual_seed(8)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    x0 = torch.randn_like(x)
    plain = DeepLift(seeded(PoolNet(2))).attribute(x, x0, target=1)
    cl = DeepLift(model).attribute(
        x.to(memory_format=torch.channels_last), x0.to(memory_format=torch.channels_last), target=1
    )
    torch.testing.assert_close(cl, plain, atol=1e-12, rtol=0)
    w = torch.randn(5, 4, dtype=torch.float64)

    def forward(t):  # the activations see permuted, non-contiguous tensors
        return (torch.relu(torch.sigmoid(t.permute(0, 2, 1)) - 0.5) * w).sum((1, 2))

    t = torch.randn(3, 4, 5, dtype=torch.float64)
    _, delta = DeepLift(forward).attribute(t, torch.randn_like(t), return_convergence_delta=True)
    assert delta.abs().max() < 1e-12


def test_softmax_delta_compares_with_separate_forwards_of_inputs_and_baselines():
    # Captum's test_softmax_classification_batch_zero_baseline: saturated float32 softmax,
    # where a joint forward of inputs and baselines rounds differently from separate ones
    class Saturated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1, self.lin2, self.lin3 = (torch.nn.Linear(a, b) for a, b in ((40, 20), (20, 20), (20, 10)))
            for lin in (self.lin1, self.lin2, self.lin3):
                lin.weight = torch.nn.Parameter(torch.ones_like(lin.weight))

        def forward(self, x):
            return torch.softmax(self.lin3(torch.relu(self.lin2(torch.relu(self.lin1(x))))), dim=1)

    torch.manual_seed(1234)
    model = Saturated()
    x = torch.arange(0.0, 120.0).reshape(3, 40)
    attr, delta = DeepLift(model).attribute(x, 0, target=torch.tensor([2, 2, 2]), return_convergence_delta=True)
    with torch.no_grad():
        change = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    torch.testing.assert_close(delta, attr.sum(1) - change, rtol=0, atol=0)
    assert bool((delta.abs() < 0.003).all())
