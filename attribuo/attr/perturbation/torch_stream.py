"""Torch's CPU random stream read ahead in bulk, for samplers that must match Captum's draws.

Captum's KernelShap draws every coalition with two small torch calls (a
``torch.multinomial`` for its size, a ``torch.randn(1, F)`` for its
members), thousands of calls per explanation. On CPU both are elementwise
functions of consecutive 32-bit words of torch's Mersenne Twister, so the
same draws can be computed for all samples at once: the words are generated
in bulk by numpy's MT19937 (the same engine, started from torch's state),
turned into the same sizes and members in a few vectorised operations, and
torch's generator is then moved on past them. Values are recomputed in
float64, so a draw whose outcome a rounding difference could flip (two
values closer than a safe margin) is redrawn exactly by torch from that
point of the stream. :func:`mirror_available` checks all of this against
torch itself once, and callers fall back on the plain calls when it fails.

Example:
    >>> import torch
    >>> from attribuo.attr.perturbation.torch_stream import Stream
    >>> _ = torch.manual_seed(0)
    >>> stream = Stream.from_torch()
    >>> words = stream.words(3)  # the next three 32-bit outputs of torch's generator
    >>> stream.to_torch()  # torch's generator now stands after them
    >>> ahead = Stream.uniform_floats(Stream.from_torch().words(1))[0]
    >>> bool(torch.rand(1).item() == ahead)
    True
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
import torch
from torch import Tensor

_N = 624  # Mersenne Twister state words
_LEFT, _NEXT, _KEY = slice(8, 12), slice(16, 24), slice(24, 24 + 8 * _N)  # torch's state layout
_MANTISSA53 = np.uint64((1 << 53) - 1)
_LOW24 = np.uint64((1 << 24) - 1)

# Recomputed values may differ from torch's float32 ones by a few float32 ulps; outcomes closer
# than these margins are redrawn by torch (relative for size ratios, absolute for normals)
RATIO_MARGIN = 1e-5
NORMAL_MARGIN = 1e-4


class Stream:
    """A numpy MT19937 at the position of a torch CPU generator state (``uint8`` bytes)."""

    def __init__(self, state: np.ndarray, engine: np.random.MT19937 | None = None) -> None:
        self.state = state
        self.engine = np.random.MT19937(0) if engine is None else engine
        key = state[_KEY].view("<u8").astype(np.uint32)
        pos = 625 - int(state[_LEFT].view("<i4")[0])  # torch counts words left until the twist
        self.engine.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}

    @classmethod
    def from_torch(cls, generator: torch.Generator | None = None) -> Stream:
        """The stream of ``generator`` (torch's default CPU generator when None).

        Streams made here share one engine per thread: only the latest one
        is live (use :meth:`copy` for one that must outlive the next).
        """
        state = torch.get_rng_state() if generator is None else generator.get_state()
        return cls(state.numpy().copy(), _shared_engine())

    def words(self, count: int) -> np.ndarray:
        """The next ``count`` 32-bit outputs (``uint64``)."""
        return self.engine.random_raw(count)

    def torch_state(self) -> Tensor:
        """Torch's state bytes at this stream's position."""
        inner = self.engine.state["state"]
        out = self.state.copy()
        out[_LEFT] = np.array([625 - int(inner["pos"])], dtype="<i4").view(np.uint8)
        out[_NEXT] = np.array([int(inner["pos"])], dtype="<u8").view(np.uint8)
        out[_KEY] = inner["key"].astype("<u8").view(np.uint8)
        return torch.from_numpy(out)

    def to_torch(self) -> None:
        """Move torch's default generator to this stream's position."""
        torch.set_rng_state(self.torch_state())

    def generator(self) -> torch.Generator:
        """A new torch generator at this stream's position."""
        g = torch.Generator()
        g.set_state(self.torch_state())
        return g

    def copy(self) -> Stream:
        other = Stream.__new__(Stream)
        other.state = self.state
        other.engine = np.random.MT19937(0)
        other.engine.state = self.engine.state
        return other

    # torch's word -> value conversions
    @staticmethod
    def uniform_floats(words: np.ndarray) -> np.ndarray:
        """float32 ``rand`` values (24 bits of one word each), exactly, as float64."""
        return (words & _LOW24).astype(np.float64) * 2.0**-24

    @staticmethod
    def uniform_doubles(words: np.ndarray) -> np.ndarray:
        """float64 uniforms from word pairs along the last dim (first word high), exactly."""
        value = (words[..., 0::2] << np.uint64(32)) | words[..., 1::2]
        return (value & _MANTISSA53).astype(np.float64) * 2.0**-53


_LOCAL = threading.local()


def _shared_engine() -> np.random.MT19937:
    # building (seeding) an MT19937 costs more than a group's draws; one per thread is reused,
    # its state overwritten by every Stream.from_torch (a stream's engine lives until the next)
    engine = getattr(_LOCAL, "engine", None)
    if engine is None:
        engine = _LOCAL.engine = np.random.MT19937(0)
    return engine


def normal_words(count: int) -> int:
    """Words one ``torch.randn(1, count)`` (float32, ``count >= 16``) takes: 16 more when not a multiple of 16."""
    return count + (16 if count % 16 else 0)


def normals(words: np.ndarray, count: int) -> np.ndarray:
    """``torch.randn(1, count)`` values (approximately, float64) from its words, one draw per row.

    Torch fills ``count`` uniforms, maps each block of 16 by Box-Muller (the
    first 8 give radii, the last 8 angles) and, when ``count`` is not a
    multiple of 16, redraws the last 16 values from 16 fresh words.
    """
    u = Stream.uniform_floats(words)
    full = 16 * (count // 16)
    blocks = [u[:, :full]] + ([u[:, count:count + 16]] if count % 16 else [])
    mapped = []
    for b in blocks:
        b = b.reshape(b.shape[0], -1, 2, 8)
        radius = np.sqrt(-2.0 * np.log(1.0 - b[:, :, 0]))
        theta = 2.0 * math.pi * b[:, :, 1]
        mapped.append(np.stack([radius * np.cos(theta), radius * np.sin(theta)], 2).reshape(b.shape[0], -1))
    if count % 16:
        return np.concatenate([mapped[0][:, :count - 16], mapped[1]], 1)
    return mapped[0]


def categorical_words(count: int) -> int:
    """Words one ``torch.multinomial(probs[1, count], 1, True)`` takes (an exponential draw per category)."""
    return 2 * count


def categorical(words: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``torch.multinomial(probs, 1, True)`` draws, one per row of words, and whether each is sure.

    Torch draws one sample as ``argmax(probs / q)`` with ``q`` exponential
    draws (``-log1p(-u)``, ``u`` a 53-bit uniform); an index is sure when the
    best ratio beats the second by more than the rounding of float32 can.
    """
    q = -np.log1p(-Stream.uniform_doubles(words))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = probs[None, :] / q
    top2 = -np.partition(-ratio, 1, axis=1)[:, :2]
    sure = (q > 0).all(1) & (top2[:, 0] - top2[:, 1] > RATIO_MARGIN * top2[:, 0])
    return ratio.argmax(1), sure


@functools.cache
def mirror_available() -> bool:
    """Whether torch's generator and its conversions behave as this module assumes (checked once)."""
    try:
        return _check_mirror()
    except Exception:  # noqa: BLE001 (another torch build or state layout: use the plain calls)
        return False


def _check_mirror() -> bool:
    g = torch.Generator().manual_seed(20240611)
    torch.rand(5, generator=g)  # not at a twist boundary
    stream = Stream.from_torch(g)
    if not np.array_equal(Stream.uniform_floats(stream.copy().words(40)), torch.rand(40, generator=g).double().numpy()):
        return False
    stream.words(40)
    count = 20
    probs = torch.rand(1, count, generator=torch.Generator().manual_seed(3))
    probs = probs / probs.sum()
    per = categorical_words(count) + normal_words(count)
    words = stream.copy().words(64 * per).reshape(64, per)
    sizes, sure = categorical(words[:, :2 * count], probs[0].double().numpy())
    values = normals(words[:, 2 * count:], count)
    g2 = stream.generator()
    for s in range(64):
        size = int(torch.multinomial(probs, 1, True, generator=g2))
        drawn = torch.randn(1, count, generator=g2)[0].double().numpy()
        if (sure[s] and size != sizes[s]) or np.abs(drawn - values[s]).max() > NORMAL_MARGIN / 10:
            return False
    stream.words(64 * per)
    # the generator stands where torch's own calls leave it
    return torch.equal(stream.torch_state(), g2.get_state())
