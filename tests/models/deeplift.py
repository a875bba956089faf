"""Models for the DeepLift tests: every covered non-linearity, spelled in every way."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name -> (module factory, functional spelling of the same function)
ACTIVATIONS = {
    "relu": (nn.ReLU, F.relu),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "tanh": (nn.Tanh, torch.tanh),
    "elu": (lambda: nn.ELU(alpha=0.7), lambda t: F.elu(t, alpha=0.7)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    "softplus": (lambda: nn.Softplus(beta=2.0, threshold=1.5), lambda t: F.softplus(t, 2.0, 1.5)),
}

# spellings of the activation inside a two-activation MLP
SPELLINGS = ["modules", "reused", "functional", "tensor_method", "inplace"]

_METHOD = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_INPLACE = {
    "relu": lambda t: t.relu_(),
    "sigmoid": lambda t: t.sigmoid_(),
    "tanh": lambda t: torch.tanh_(t),
    "elu": lambda t: F.elu(t, alpha=0.7, inplace=True),
    "leaky_relu": lambda t: F.leaky_relu(t, 0.2, inplace=True),
}


class DeepMLP(nn.Module):
    """Linear -> act -> Linear -> act -> Linear, with the activation spelled as asked."""

    def __init__(self, act: str = "relu", spelling: str = "modules", sizes=(5, 7, 6, 3)):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.fc3 = nn.Linear(sizes[2], sizes[3])
        make, functional = ACTIVATIONS[act]
        self.spelling = spelling
        if spelling == "modules":
            self.a1, self.a2 = make(), make()
        elif spelling == "reused":
            self.a1 = make()
            self.a2 = self.a1
        elif spelling == "functional":
            self._f = functional
        elif spelling == "tensor_method":
            name = _METHOD[act]
            self._f = lambda t: getattr(t, name)()
        elif spelling == "inplace":
            self._f = _INPLACE[act]
        else:
            raise ValueError(spelling)

    def act(self, i: int, t: torch.Tensor) -> torch.Tensor:
        if self.spelling in ("modules", "reused"):
            return (self.a1 if i == 1 else self.a2)(t)
        return self._f(t)

    def forward(self, x):
        return self.fc3(self.act(2, self.fc2(self.act(1, self.fc1(x)))))


class PoolNet(nn.Module):
    """Conv -> ReLU -> MaxPool (1, 2 or 3 dims) -> Conv -> ReLU -> Linear.

    ``order="separated"`` is Conv -> ReLU -> Conv -> MaxPool -> Linear: no two
    non-linearities touch, the only arrangement Captum gets right.
    """

    def __init__(self, dims: int = 2, functional: bool = False, kernel: int = 2,
                 stride: int | None = None, order: str = "relu_pool"):
        super().__init__()
        self.order = order
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.dims, self.functional = dims, functional
        self.kernel, self.stride = kernel, stride
        self.conv1 = conv(2, 3, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](kernel, stride)
        self.conv2 = conv(3, 2, 3, padding=1)
        self.relu2 = nn.ReLU()
        side = {1: 8, 2: 6, 3: 4}[dims]
        out_side = (side - kernel) // (stride or kernel) + 1
        self.fc = nn.Linear(2 * out_side**dims, 3)

    def forward(self, x):
        h = self.conv1(x)
        if self.functional:
            pool = lambda t: getattr(F, f"max_pool{self.dims}d")(t, self.kernel, self.stride)  # noqa: E731
            relu1 = relu2 = torch.relu
        else:
            pool, relu1, relu2 = self.pool, self.relu1, self.relu2
        if self.order == "relu_pool":
            h = relu2(self.conv2(pool(relu1(h))))
        else:
            h = pool(self.conv2(relu1(h)))
        return self.fc(h.flatten(1))

    @staticmethod
    def input_shape(dims: int) -> tuple[int, ...]:
        return (2,) + {1: (8,), 2: (6, 6), 3: (4, 4, 4)}[dims]


class SoftmaxNet(nn.Module):
    """Linear -> Tanh -> Linear -> Softmax, the probabilities as output."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.tanh = nn.Tanh()
        self.fc2 = nn.Linear(6, 3)
        self.softmax = nn.Softmax(dim=1)
        self.functional = functional

    def forward(self, x):
        h = self.fc2(self.tanh(self.fc1(x)))
        return F.softmax(h, dim=1) if self.functional else self.softmax(h)


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.double().eval()
