"""The neuron and layer conductance numbers printed in Captum's README (seed 004)."""

import torch

from attribuo.demo import readme_example


def _results():
    return dict(readme_example())


def test_neuron_conductance_readme_numbers():
    expected = torch.tensor([[0.0000, 0.0000, 0.0000], [1.3358, 0.0000, -1.6811]])
    torch.testing.assert_close(_results()["Neuron Attributions"], expected, atol=5e-5, rtol=0)


def test_layer_conductance_readme_numbers():
    results = _results()
    expected = torch.tensor([[0.0000, 0.0000, -3.0856], [0.0000, -0.3488, -4.9638]])
    torch.testing.assert_close(results["Layer Attributions"], expected, atol=5e-5, rtol=0)
    torch.testing.assert_close(
        results["Layer Convergence Delta"], torch.tensor([0.0630, 0.1084]), atol=5e-5, rtol=0
    )
