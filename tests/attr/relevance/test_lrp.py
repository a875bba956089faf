"""LRP: conservation, a slow reference on a residual CNN, rules, composites, canonizer, state."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from models.lrp_cam import ResCNN, mlp
from torch import nn

import attribuo.attr as A
from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.attr import LRP, LayerLRP
from attribuo.attr.relevance import (
    DEFAULT_RULES,
    Alpha1_Beta0_Rule,
    Composite,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    EpsilonRule,
    FlatRule,
    GammaRule,
    IdentityRule,
    MergeBatchNorm,
    PropagationRule,
    ZBoxRule,
)


def _x_cnn(n=3, seed=0):
    return torch.randn(n, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _x_mlp(n=4, seed=0):
    return torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------ slow reference
def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _ref_layer(f, x, relevance, eps=1e-9):
    """R_in = x * J^T (R_out / stab(f(x))), J the layer's Jacobian at x (one example)."""
    z = f(x)
    jac = torch.autograd.functional.jacobian(f, x).reshape(z.numel(), x.numel())
    s = (relevance / _stab(z, eps)).reshape(-1)
    return (x.reshape(-1) * (jac.T @ s)).reshape(x.shape)


def _ref_rescnn(model: ResCNN, x: torch.Tensor, target: int) -> torch.Tensor:
    """LRP-epsilon by hand on ResCNN with a functional residual sum, example by example."""
    out = []
    for i in range(x.shape[0]):
        a0 = x[i : i + 1]
        with torch.no_grad():
            z1 = model.conv1(a0)
            b1 = model.bn1(z1)
            h = b1.clamp(min=0)
            z2 = model.conv2(h)
            b2 = model.bn2(z2)
            h2 = b2.clamp(min=0)
            z3 = model.conv3(h2)
            b3 = model.bn3(z3)
            s = b3 + h
            r = s.clamp(min=0)
            p = model.pool(r)
            g = model.avg(p).flatten(1)
            logits = model.fc(g)
        rel = torch.zeros_like(logits)
        rel[0, target] = logits[0, target]
        rel = _ref_layer(model.fc, g, rel).reshape(1, 4, 1, 1)
        rel = _ref_layer(model.avg, p, rel)
        rel = _ref_layer(model.pool, r, rel)  # relu: relevance passes unchanged
        r_b3, r_skip = b3 * rel / _stab(s, 1e-9), h * rel / _stab(s, 1e-9)
        rel = _ref_layer(model.bn3, z3, r_b3)
        rel = _ref_layer(model.conv3, h2, rel)
        rel = _ref_layer(model.bn2, z2, rel)
        rel = _ref_layer(model.conv2, h, rel) + r_skip
        rel = _ref_layer(model.bn1, z1, rel)
        out.append(_ref_layer(model.conv1, a0, rel))
    return torch.cat(out)


def test_residual_sum_matches_slow_reference():
    model = ResCNN()
    x = _x_cnn()
    torch.testing.assert_close(LRP(model).attribute(x, target=2), _ref_rescnn(model, x, 2), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spelling", ["operator", "torch.add", "inplace"])
def test_every_spelling_of_the_residual_sum_gives_the_same_relevance(spelling):
    class Spelled(ResCNN):
        def forward(self, x):
            h = self.relu1(self.bn1(self.conv1(x)))
            r = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(h)))))
            if spelling == "torch.add":
                r = torch.add(r, h)
            elif spelling == "inplace":
                r += h
            else:
                r = r + h
            return self.fc(torch.flatten(self.avg(self.pool(F.relu(r))), 1))

    x = _x_cnn()
    torch.testing.assert_close(LRP(Spelled()).attribute(x, target=0), _ref_rescnn(ResCNN(), x, 0), atol=1e-10, rtol=0)


# ------------------------------------------------------------ conservation
@pytest.mark.parametrize(
    "make,x",
    [(lambda: mlp(bias=False), _x_mlp(6)), (lambda: ResCNN(bias=False, norm=False), _x_cnn(4))],
    ids=["mlp", "residual_cnn"],
)
def test_epsilon_near_zero_conserves_relevance_on_bias_free_relu_nets(make, x):
    model = make()
    attr, delta = LRP(model).attribute(x, target=1, return_convergence_delta=True)
    out = model(x)[:, 1]
    assert delta.shape == (x.shape[0],)
    assert delta.abs().max() < 1e-4
    torch.testing.assert_close(attr.reshape(x.shape[0], -1).sum(1), out.detach(), atol=1e-4, rtol=0)
    # relevance is also conserved at every layer that all paths go through
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    layers += [model.conv1 if isinstance(model, ResCNN) else model[0]]
    _, deltas = LayerLRP(model, layers).attribute(x, target=1, return_convergence_delta=True)
    assert max(d.abs().max() for d in deltas) < 1e-4


def test_large_epsilon_absorbs_relevance():
    model = mlp(bias=False)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.rule = EpsilonRule(epsilon=10.0)
    x = _x_mlp()
    attr = LRP(model).attribute(x, target=0)
    out = model(x)[:, 0]
    assert (attr.sum(1).abs() < out.abs() - 1e-6).all()


# ------------------------------------------------------------ rules
def test_rules_against_hand_formulas_on_one_linear_layer():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    x = torch.rand(2, 4, dtype=torch.float64)
    w, b = layer.weight.detach(), layer.bias.detach()
    z = x @ w.T + b

    def expected(w_, b_, xin, factor):
        zz = xin @ w_.T + b_
        s = torch.zeros_like(zz)
        s[:, 1] = 1 / _stab(zz[:, 1], 1e-9)
        return factor * (s @ w_) * z[:, 1:2]

    cases = {
        EpsilonRule(): expected(w, b, x, x),
        GammaRule(0.5): expected(w + 0.5 * w.clamp(min=0), b, x, x),
        Alpha1_Beta0_Rule(set_bias_to_zero=True): expected(w.clamp(min=0), 0 * b, x, x),
        FlatRule(): expected(torch.ones_like(w), 0 * b, torch.ones_like(x), torch.ones_like(x)),
    }
    for rule, want in cases.items():
        layer.rule = rule
        torch.testing.assert_close(LRP(layer).attribute(x, target=1), want, msg=repr(rule))
    del layer.rule


def test_a_new_rule_is_a_few_lines():
    class WSquare(PropagationRule):
        def modify_parameter(self, name, param):
            return param**2 if name == "weight" else torch.zeros_like(param)

        def modify_input(self, x):
            return torch.ones_like(x)

    torch.manual_seed(1)
    layer = nn.Linear(3, 2).double()
    layer.rule = WSquare()
    x = torch.rand(2, 3, dtype=torch.float64)
    w2 = layer.weight.detach() ** 2
    out = layer(x)[:, 0].detach()
    want = (w2[0] / w2[0].sum()).expand(2, 3) * out[:, None]
    torch.testing.assert_close(LRP(layer).attribute(x, target=0), want)


def test_zbox_rule_matches_formula():
    torch.manual_seed(2)
    layer = nn.Linear(3, 2).double()
    layer.rule = ZBoxRule(low=-1.0, high=2.0)
    x = torch.rand(2, 3, dtype=torch.float64)
    w, b = layer.weight.detach(), layer.bias.detach()
    lo, hi = torch.full_like(x, -1.0), torch.full_like(x, 2.0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    z = x @ w.T + b - lo @ wp.T - hi @ wn.T
    s = 1 / _stab(z[:, 0], 1e-9)
    want = (x * w[0] - lo * wp[0] - hi * wn[0]) * s[:, None] * layer(x)[:, 0:1].detach()
    torch.testing.assert_close(LRP(layer).attribute(x, target=0), want)


def test_identity_rule_passes_relevance_through_batchnorm():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    model[1].running_mean.fill_(0.3)
    model[1].rule = IdentityRule()
    x = torch.rand(3, 3, dtype=torch.float64)
    at_bn_out = LayerLRP(model, model[1]).attribute(x, target=1)
    at_bn_in = LayerLRP(model, model[1]).attribute(x, target=1, attribute_to_layer_input=True)
    torch.testing.assert_close(at_bn_in, at_bn_out)


def test_functional_relu_and_reused_modules_equal_separate_modules():
    base = mlp()

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.l0, self.l3, self.l5 = base[0], base[3], base[5]

        def forward(self, x):
            return self.l5(torch.relu(self.l3(F.relu(self.l0(x)))))

    class Reused(nn.Module):  # one ReLU module called twice
        def __init__(self):
            super().__init__()
            self.l0, self.l3, self.l5, self.act = base[0], base[3], base[5], nn.ReLU()

        def forward(self, x):
            return self.l5(self.act(self.l3(self.act(self.l0(x)))))

    x = _x_mlp()
    want = LRP(base).attribute(x, target=2)
    torch.testing.assert_close(LRP(Functional()).attribute(x, target=2), want)
    torch.testing.assert_close(LRP(Reused()).attribute(x, target=2), want)


# ------------------------------------------------------------ composites, canonizer
def test_epsilon_plus_flat_assigns_by_type_and_position():
    model = ResCNN()
    rules = EpsilonPlusFlat().rules(model)
    assert isinstance(rules[model.conv1], FlatRule)
    assert isinstance(rules[model.conv2], Alpha1_Beta0_Rule) and rules[model.conv2].set_bias_to_zero
    assert isinstance(rules[model.fc], EpsilonRule) and rules[model.fc].STABILITY_FACTOR == 1e-6
    assert isinstance(rules[model.avg], EpsilonRule)
    box = EpsilonGammaBox(-2.0, 2.0).rules(model)
    assert isinstance(box[model.conv1], ZBoxRule) and isinstance(box[model.conv3], GammaRule)
    custom = Composite([(nn.Conv2d, GammaRule)], first_map=[(nn.Conv2d, FlatRule)]).rules(model)
    assert isinstance(custom[model.conv1], FlatRule) and isinstance(custom[model.conv2], GammaRule)
    assert model.fc not in custom


def test_composite_equals_setting_the_rules_by_hand_and_attached_restores():
    model = ResCNN()
    x = _x_cnn()
    got = LRP(model, composite=EpsilonGammaBox(-3.0, 3.0)).attribute(x, target=1)
    model.fc.rule = EpsilonRule(0.5)  # a module's own rule beats the composite
    with EpsilonGammaBox(-3.0, 3.0).attached(model):
        assert isinstance(model.conv1.rule, ZBoxRule) and isinstance(model.fc.rule, EpsilonRule)
        by_hand = LRP(model).attribute(x, target=1)
        assert model.fc.rule.STABILITY_FACTOR == 0.5
    assert not hasattr(model.conv1, "rule") and model.fc.rule.STABILITY_FACTOR == 0.5
    del model.fc.rule
    model.fc.rule = EpsilonRule(1e-6)
    with EpsilonGammaBox(-3.0, 3.0).attached(model):
        torch.testing.assert_close(LRP(model).attribute(x, target=1), got)
    assert not torch.allclose(by_hand, got)


def _folded(model: ResCNN) -> ResCNN:
    folded = copy.deepcopy(model)
    for conv, bn in [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]:
        c, b = getattr(folded, conv), getattr(folded, bn)
        scale = b.weight / torch.sqrt(b.running_var + b.eps)
        with torch.no_grad():
            c.bias.copy_((c.bias - b.running_mean) * scale + b.bias)
            c.weight.mul_(scale.reshape(-1, 1, 1, 1))
        setattr(folded, bn, nn.Identity())
    return folded


def test_merge_batchnorm_equals_a_folded_copy_and_leaves_the_model_alone():
    # with epsilon everywhere merging changes nothing (the rules telescope); gamma shows it
    model = ResCNN()
    x = _x_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    box = EpsilonGammaBox(-3.0, 3.0)
    got = LRP(model, composite=box, canonizers=[MergeBatchNorm()]).attribute(x, target=0)
    torch.testing.assert_close(got, LRP(_folded(model), composite=box).attribute(x, target=0), atol=1e-10, rtol=0)
    assert not torch.allclose(got, LRP(model, composite=box).attribute(x, target=0))
    eps_only = LRP(model, canonizers=[MergeBatchNorm()]).attribute(x, target=0)
    torch.testing.assert_close(eps_only, LRP(model).attribute(x, target=0), atol=1e-7, rtol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(type(getattr(model, n)) is nn.BatchNorm2d for n in ("bn1", "bn2", "bn3"))


# ------------------------------------------------------------ state and errors
def _hook_count(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def test_model_is_unchanged_after_success_and_after_an_error():
    model = ResCNN()
    model.conv2.rule = GammaRule()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x_cnn()
    LRP(model).attribute(x, target=0)
    with pytest.raises(ArgumentValueError):
        LRP(model).attribute(x, target=7)
    assert _hook_count(model) == 0
    assert all(m.training for m in model.modules())
    assert isinstance(model.conv2.rule, GammaRule)
    assert not any(hasattr(m, "activations") for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())


def test_errors_name_the_problem():
    model = mlp()
    model[0].rule = "epsilon"
    with pytest.raises(ArgumentTypeError, match="rule"):
        LRP(model)
    with pytest.raises(ArgumentTypeError, match="LayerNorm"):
        LRP(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))).attribute(torch.rand(2, 3), target=0)
    with pytest.raises(ArgumentValueError, match="target"):
        LRP(mlp()).attribute(_x_mlp())  # three outputs per example, no target
    with pytest.raises(ArgumentTypeError, match="Module"):
        LRP(lambda x: x)


def test_default_rules_extend_by_isinstance():
    class MyLinear(nn.Linear):
        pass

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(MyLinear(3, 2), Scale()).double()
    x = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(ArgumentTypeError, match="Scale"):
        LRP(model).attribute(x, target=0)
    DEFAULT_RULES[Scale] = IdentityRule
    try:
        got = LRP(model).attribute(x, target=0)
    finally:
        del DEFAULT_RULES[Scale]
    # MyLinear inherits Linear's epsilon rule; Scale passes relevance through
    out = model(x)[:, 0].detach()
    w = model[0].weight.detach()
    z = (x @ w.T + model[0].bias.detach())[:, 0]
    torch.testing.assert_close(got, x * w[0] / z[:, None] * out[:, None])


def test_verbose_prints_rules_and_dtype_is_kept(capsys):
    model = mlp()
    attr = LRP(model).attribute(_x_mlp(), target=0, verbose=True)
    printed = capsys.readouterr().out
    assert printed.count("Applied EpsilonRule") == 3
    assert attr.dtype == torch.float64
    x32 = torch.rand(2, 6)
    assert LRP(mlp().float()).attribute(x32, target=0).dtype == torch.float32


def test_tuple_inputs_and_additional_args():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Linear(3, 4).double(), nn.Linear(2, 4).double()
            self.out = nn.Linear(4, 2).double()

        def forward(self, x, y, mask):
            return self.out(F.relu(self.a(x) + self.b(y)) * mask)

    class Fixed(Two):
        def forward(self, x, y):
            return super().forward(x, y, keep)

    model = Two()
    x, y = torch.rand(3, 3, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64)
    keep = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    (ax, ay), delta = LRP(model).attribute((x, y), target=1, additional_forward_args=keep, return_convergence_delta=True)
    assert ax.shape == x.shape and ay.shape == y.shape and delta.shape == (3,)
    (bx, by) = LRP(Fixed()).attribute((x, y), target=1)
    torch.testing.assert_close((ax, ay), (bx, by))
    # the sum rule split relevance between the two branches in proportion
    assert (ax.abs().sum() > 0) and (ay.abs().sum() > 0)


class _Add(nn.Module):
    def forward(self, a, b):
        return a + b


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2, bias=False)
        self.linear.weight.data.fill_(5.0)
        self.add = _Add()

    def forward(self, x):
        return self.add(self.linear(x), x)


def test_lrp_rule_module_with_two_inputs_on_a_skip_connection():
    # out_1 = 5*2 + 5*3 + 3 = 28; the add splits 25 : 3, the linear gives 5 * x_j of its 25
    model = _Skip()
    model.add.rule = EpsilonRule()
    rel, delta = A.LRP(model).attribute(torch.tensor([[2.0, 3.0]]), target=1,
                                       return_convergence_delta=True)
    torch.testing.assert_close(rel, torch.tensor([[10.0, 18.0]]))
    assert abs(float(delta)) < 1e-5
    assert model.add.rule is not None and not model.linear._forward_hooks
