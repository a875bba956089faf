"""AttackComparator: batch and running statistics computed by hand, grouping, bad input."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch

from attribuo._engine.errors import ArgumentTypeError, ArgumentValueError
from attribuo.robust import FGSM, AttackComparator


class Counting:
    def __init__(self, forward=lambda x, *args: x):
        self.forward, self.calls = forward, 0

    def __call__(self, x, *args):
        self.calls += 1
        return self.forward(x, *args)


class Cycle:
    """Adds 1, 2, 3, 1, 2, 3, ... on successive calls: known mean / max / min over 3 attempts."""

    def __init__(self):
        self.count = 0

    def __call__(self, x):
        self.count += 1
        return x + (self.count - 1) % 3 + 1


def first_column(out):
    return out[:, 0]


BATCHES = [torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[5.0, 0.0], [7.0, 0.0]])]


def comparator(forward=None):
    comp = AttackComparator(forward or Counting(), first_column)
    comp.add_attack(lambda x: x + 1, "plus1")
    comp.add_attack(Cycle(), "cycle", num_attempts=3)
    return comp


@pytest.mark.parametrize("per_eval", [1, 2, 7])
def test_batch_and_summary_by_hand(per_eval):
    model = Counting()
    comp = comparator(model)
    first = comp.evaluate(BATCHES[0], perturbations_per_eval=per_eval)
    torch.testing.assert_close(first["Original"], torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(first["plus1"]["mean"], torch.tensor([2.0, 4.0]))
    assert list(first["cycle"]) == ["mean", "max", "min"]
    torch.testing.assert_close(first["cycle"]["mean"], torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(first["cycle"]["max"], torch.tensor([4.0, 6.0]))
    torch.testing.assert_close(first["cycle"]["min"], torch.tensor([2.0, 4.0]))
    comp.evaluate(BATCHES[1], perturbations_per_eval=per_eval)
    # 5 model inputs per batch (clean, plus1, 3 x cycle), grouped per_eval at a time
    assert model.calls == 2 * -(-5 // per_eval)
    # running mean over batches of the per-batch example means: (2 + 6) / 2 = 4
    expected = {"Original": 4.0, "plus1": 5.0, "cycle Mean Attempt": 6.0,
                "cycle Max Attempt": 7.0, "cycle Min Attempt": 5.0}
    summary = comp.summary()
    assert list(summary) == list(expected)
    for key, value in expected.items():
        assert list(summary[key]) == ["mean"]
        torch.testing.assert_close(summary[key]["mean"], torch.tensor(value))


def test_reset_forgets_previous_batches():
    comp = comparator()
    comp.evaluate(BATCHES[0])
    comp.reset()
    assert comp.summary() == {}
    comp.evaluate(BATCHES[1])
    torch.testing.assert_close(comp.summary()["Original"]["mean"], torch.tensor(6.0))


def test_float_and_named_tuple_metrics():
    Pair = namedtuple("Pair", ["total", "per_example"])

    def metric(out):
        return Pair(float(out[:, 0].sum()), out[:, 0])

    comp = AttackComparator(lambda x: x, metric)
    comp.add_attack(Cycle(), "cycle", num_attempts=3)
    result = comp.evaluate(BATCHES[0], perturbations_per_eval=2)
    assert isinstance(result["Original"], Pair)
    assert result["Original"].total.dtype == torch.float32  # floats become float32 tensors
    torch.testing.assert_close(result["cycle"]["max"].total, torch.tensor(10.0))  # (1+3) + 2*3
    torch.testing.assert_close(result["cycle"]["min"].per_example, torch.tensor([2.0, 4.0]))
    summary = comp.summary()
    assert isinstance(summary["cycle Mean Attempt"]["mean"], Pair)
    torch.testing.assert_close(summary["cycle Mean Attempt"]["mean"].per_example, torch.tensor(4.0))  # mean of [3, 5]


def test_preproc_and_attack_placement():
    seen = []

    def record(x):
        seen.append(x.clone())
        return x

    comp = AttackComparator(lambda x: x, first_column, preproc_fn=lambda x: 10 * x)
    comp.add_attack(record, "before")
    comp.add_attack(record, "after", apply_before_preproc=False)
    result = comp.evaluate(BATCHES[0])
    torch.testing.assert_close(seen[0], BATCHES[0])
    torch.testing.assert_close(seen[1], 10 * BATCHES[0])
    torch.testing.assert_close(result["before"]["mean"], torch.tensor([10.0, 30.0]))


def test_additional_args_grouped_like_single():
    offsets = torch.tensor([[100.0], [200.0]])
    results = []
    for per_eval in (1, 5):
        comp = comparator(Counting(lambda x, off: x + off))
        results.append(comp.evaluate(BATCHES[0], additional_forward_args=offsets,
                                     perturbations_per_eval=per_eval))
    torch.testing.assert_close(results[0]["Original"], torch.tensor([101.0, 203.0]))
    torch.testing.assert_close(results[1]["cycle"]["max"], results[0]["cycle"]["max"])
    torch.testing.assert_close(results[1]["plus1"]["mean"], torch.tensor([102.0, 204.0]))


def test_fgsm_attack_with_sample_args():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))

    def accuracy(out, target):
        return (out.argmax(1) == target).float()

    comp = AttackComparator(model, accuracy)
    comp.add_attack(FGSM(model), attack_kwargs={"epsilon": 0.1},
                    additional_attack_arg_names=["target"])
    target = model(BATCHES[0]).argmax(1)
    result = comp.evaluate(BATCHES[0], target=target, perturbations_per_eval=2)
    assert set(result) == {"Original", "FGSM"}  # default name: the class name
    torch.testing.assert_close(result["Original"], torch.ones(2))


def test_missing_sample_arg_warns():
    comp = AttackComparator(lambda x: x, first_column)
    comp.add_attack(lambda x, shift=1.0: x + shift, "shift", additional_attack_arg_names=["shift"])
    with pytest.warns(UserWarning, match="shift"):
        result = comp.evaluate(BATCHES[0])
    torch.testing.assert_close(result["shift"]["mean"], torch.tensor([2.0, 4.0]))


def test_bad_arguments():
    comp = comparator()
    with pytest.raises(ArgumentValueError, match="`name`") as info:
        comp.add_attack(lambda x: x, "plus1")
    assert isinstance(info.value, RuntimeError)  # Captum raises RuntimeError here
    with pytest.raises(ArgumentValueError, match="`num_attempts`"):
        comp.add_attack(lambda x: x, "other", num_attempts=0)
    with pytest.raises(ArgumentTypeError, match="`attack`"):
        comp.add_attack("not callable", "other")
    with pytest.raises(ArgumentValueError, match="`perturbations_per_eval`"):
        comp.evaluate(BATCHES[0], perturbations_per_eval=0)
    with pytest.raises(ArgumentTypeError, match="`metric`"):
        AttackComparator(lambda x: x, None)
    raw = AttackComparator(lambda s: torch.zeros(1, 1), first_column)
    with pytest.raises(ArgumentTypeError, match="`perturbations_per_eval`"):
        raw.evaluate("raw text", perturbations_per_eval=2)
