"""RISE: saliency as the score-weighted average of random smooth masks.

Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of
Black-box Models" (BMVC 2018). Each of ``N`` masks starts as a small binary
grid (``s x s`` cells, each kept with probability ``p``), is upsampled
bilinearly to ``(s + 1) * cell`` pixels a side (``cell = ceil(H / s)``) and
cropped to ``H x W`` at a random offset below one cell, so the masks are
smooth and their cell borders fall anywhere. The saliency of pixel ``u`` is

    S(u) = 1 / (N p) * sum_i f(x * M_i + b * (1 - M_i)) * M_i(u),

the expected score of the model given that ``u`` is kept (``b`` is the
baseline masked pixels fade to; the paper uses 0).

Here the masked copies go through the engine's perturbation loop (many
masks per forward, chunked by ``masks_per_eval`` or the memory budget), and
the sum is one product of the ``examples x masks`` score matrix with the
``masks x pixels`` mask matrix, computed in blocks of masks (a few MiB on
CPUs, the memory budget elsewhere), so all masks are never held at once.
The masks' random parameters are drawn in fixed blocks from one generator,
so the result does not depend on the chunking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._engine.batching import memory_budget_bytes
from ..._engine.call import Call, parse_call
from ..._engine.errors import ArgumentTypeError, ArgumentValueError
from ..._engine.incremental import incremental_evaluation
from ..._engine.inputs import positive_int
from ..._engine.perturb import evaluate_perturbations, initial_output, perturbation_baselines
from ..base import PerturbationAttribution

TensorOrTuple = Tensor | tuple[Tensor, ...]

# Masks whose random parameters one draw makes. Fixed (not the chunk size), so the
# sequence of draws from the generator, and so every mask, is the same however the
# masks are evaluated.
DRAW_BLOCK = 1024
_CPU_MASK_BYTES = 4 << 20


# ------------------------------------------------------------------------ masks
def _grid_shape(grid_size: Any, spatial: tuple[int, ...], name: str) -> tuple[int, int]:
    """``grid_size`` as ``(rows, cols)`` of cells for an input whose spatial shape is ``spatial``."""
    pair = grid_size if isinstance(grid_size, tuple) else None
    if pair is None:
        s = positive_int(grid_size, "grid_size")
        return (1, s) if len(spatial) == 1 else (s, s)
    if len(pair) != 2:
        raise ArgumentValueError(f"`grid_size` must be an int or a pair of ints, got {grid_size!r}")
    rows, cols = (positive_int(v, "grid_size") for v in pair)
    if len(spatial) == 1 and rows != 1:
        raise ArgumentValueError(
            f"`{name}` has one spatial dim, so `grid_size` must be an int or (1, cells); got {grid_size!r}"
        )
    return rows, cols


def upsampling_matrix(cells: int, length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[length, cells]`` weights of linear interpolation from ``cells`` points to ``length``.

    Torch's ``align_corners=False`` convention; bilinear upsampling of a grid
    ``G`` is ``A @ G @ B.T`` with the matrices of its two sides.

    Example:
        >>> upsampling_matrix(2, 4, torch.float32, torch.device("cpu"))
        tensor([[1.0000, 0.0000],
                [0.7500, 0.2500],
                [0.2500, 0.7500],
                [0.0000, 1.0000]])
    """
    eye = torch.eye(cells, dtype=dtype, device=device).unsqueeze(1)  # [cells, 1, cells]
    return F.interpolate(eye, size=length, mode="linear", align_corners=False)[:, 0].T.contiguous()


class _Geometry:
    """One input's masks: grid cells, cell size, and the interpolation matrices of both sides."""

    def __init__(self, spatial: tuple[int, ...], grid: tuple[int, int], dtype: torch.dtype,
                 device: torch.device) -> None:
        self.spatial = spatial
        self.height, self.width = (1, spatial[0]) if len(spatial) == 1 else spatial
        self.grid = grid
        self.cell = (math.ceil(self.height / grid[0]), math.ceil(self.width / grid[1]))
        self.rows = upsampling_matrix(grid[0], (grid[0] + 1) * self.cell[0], dtype, device)
        self.cols = upsampling_matrix(grid[1], (grid[1] + 1) * self.cell[1], dtype, device)

    def draw(self, count: int, p_keep: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """``count`` binary grids and their row and column shifts (in this order from ``generator``)."""
        device = generator.device if generator is not None else torch.device("cpu")
        grids = torch.rand((count,) + self.grid, generator=generator, device=device) < p_keep
        dy = torch.randint(self.cell[0], (count,), generator=generator, device=device)
        dx = torch.randint(self.cell[1], (count,), generator=generator, device=device)
        return grids, dy, dx

    def masks(self, grids: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
        """Upsampled, shifted and cropped masks ``[k, *spatial]``: ``rows[dy:] @ grid @ cols[dx:].T``."""
        device = self.rows.device
        rows = self.rows[dy.to(device)[:, None] + torch.arange(self.height, device=device)]  # [k, H, gh]
        cols = self.cols[dx.to(device)[:, None] + torch.arange(self.width, device=device)]  # [k, W, gw]
        grids = grids.to(device=device, dtype=self.rows.dtype)
        out = torch.bmm(torch.bmm(rows, grids), cols.transpose(1, 2))  # separable bilinear: [k, H, W]
        return out.reshape((grids.shape[0],) + self.spatial)


class _MaskStream:
    """The masks of every input, drawn in fixed blocks and built on request for a range of masks."""

    def __init__(self, geometries: list[_Geometry], total: int, p_keep: float,
                 generator: torch.Generator | None) -> None:
        self.geometries, self.total, self.p_keep, self.generator = geometries, total, p_keep, generator
        self.drawn: list[list[tuple[Tensor, Tensor, Tensor]]] = []  # per draw block, per input

    def masks(self, start: int, stop: int) -> tuple[Tensor, ...]:
        """Masks ``start..stop-1`` of every input, ``[stop - start, *spatial]`` each."""
        while len(self.drawn) * DRAW_BLOCK < stop:
            count = min(DRAW_BLOCK, self.total - len(self.drawn) * DRAW_BLOCK)
            self.drawn.append([g.draw(count, self.p_keep, self.generator) for g in self.geometries])
        first, last = start // DRAW_BLOCK, (stop - 1) // DRAW_BLOCK
        offset = first * DRAW_BLOCK
        out = []
        for i, geometry in enumerate(self.geometries):
            parts = [torch.cat([block[i][j] for block in self.drawn[first:last + 1]]) for j in range(3)]
            parts = [p[start - offset:stop - offset] for p in parts]
            out.append(geometry.masks(*parts))
        # draw blocks no later range needs are dropped (ranges come in increasing order)
        for b in range(first):
            self.drawn[b] = []
        return tuple(out)


def _generator(seed: Any) -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"`seed` must be None, an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def rise_masks(
    n_masks: int,
    shape: tuple[int, ...],
    grid_size: int | tuple[int, int] = 7,
    p_keep: float = 0.5,
    seed: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The ``[n_masks, *shape]`` masks RISE draws for one input of spatial ``shape``.

    ``shape`` is ``(H, W)`` (images) or ``(L,)`` (sequences). With the same
    ``seed`` these are the masks :meth:`RISE.attribute` uses for a single
    input tensor (for a tuple of inputs the draws of the inputs alternate).

    Example:
        >>> masks = rise_masks(3, (8, 8), grid_size=2, seed=0)
        >>> masks.shape, bool(((masks >= 0) & (masks <= 1)).all())
        (torch.Size([3, 8, 8]), True)
    """
    positive_int(n_masks, "n_masks")
    _check_p_keep(p_keep)
    geometry = _Geometry(tuple(shape), _grid_shape(grid_size, tuple(shape), "shape"), dtype, torch.device(device))
    return _MaskStream([geometry], n_masks, p_keep, _generator(seed)).masks(0, n_masks)[0]


def _check_p_keep(p_keep: Any) -> float:
    if isinstance(p_keep, bool) or not isinstance(p_keep, (int, float)) or not 0 < p_keep <= 1:
        raise ArgumentValueError(f"`p_keep` must be a number in (0, 1], got {p_keep!r}")
    return float(p_keep)


# -------------------------------------------------------------------- algorithm
def rise(
    forward_func: Callable,
    call: Call,
    baselines: tuple[Tensor, ...],
    grids: tuple[tuple[int, int], ...],
    n_masks: int,
    p_keep: float,
    generator: torch.Generator | None = None,
    masks_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "RISE",
) -> tuple[Tensor, ...]:
    """RISE saliency maps as a pure function: one ``[N, *spatial]`` map per input.

    ``call`` holds the inputs (each ``[N, C, *spatial]``, one or two spatial
    dims), target and extra arguments; ``baselines`` one full-shape tensor
    per input; ``grids`` each input's ``(rows, cols)`` of cells. Masked
    copies are evaluated ``masks_per_eval`` masks per forward (else as many
    as the memory budget allows); scores are kept per mask and multiplied
    with the masks block by block.
    """
    inputs = call.inputs
    initial = initial_output(forward_func, call)
    if initial.numel() != call.batch:
        raise ArgumentValueError(
            "RISE needs one score per example: the forward function returned "
            f"{initial.numel()} values for {call.batch} examples; pass `target` to pick one output"
        )
    geometries = [
        _Geometry(tuple(x.shape[2:]), g, x.dtype, x.device) for x, g in zip(inputs, grids)
    ]
    stream = _MaskStream(geometries, n_masks, p_keep, generator)
    with torch.no_grad():
        diffs = tuple(None if not bool(b.any()) else x - b for x, b in zip(inputs, baselines))
    pixels = [math.prod(g.spatial) for g in geometries]
    # masks held at once (at least one chunk): on CPUs a few MiB, which stay in cache and
    # reuse the allocator's memory (a block of tens of MiB was measured 4x slower per mask:
    # fresh pages at every block); elsewhere the memory budget
    held = _CPU_MASK_BYTES if inputs[0].device.type == "cpu" else memory_budget_bytes()
    block_size = max(1, held // max(1, sum(pixels) * inputs[0].element_size()))
    # scores of an integer-valued model are averaged as floats
    score_dtype = initial.dtype if initial.is_floating_point() else inputs[0].dtype
    scores = torch.zeros((call.batch, n_masks), dtype=score_dtype, device=initial.device)
    sums: list[Tensor | None] = [None] * len(inputs)
    block: dict[str, Any] = {"start": 0, "stop": 0, "masks": None}

    def flush(upto: int) -> None:
        # the saliency sum of the held block's masks start..upto-1, whose scores are all in
        lo, masks = block["start"], block["masks"]
        if masks is None or upto <= lo:
            return
        s = scores[:, lo:upto]
        for i, m in enumerate(masks):
            term = s.to(torch.promote_types(s.dtype, m.dtype)) @ m[: upto - lo].reshape(upto - lo, -1)
            sums[i] = term if sums[i] is None else sums[i] + term

    def make(start: int, stop: int) -> tuple[tuple[Tensor, ...], None]:
        if not (block["start"] <= start and stop <= block["stop"]):
            flush(start)
            end = min(n_masks, max(stop, start + block_size))
            block.update(start=start, stop=end, masks=stream.masks(start, end))
        lo = block["start"]
        copies = []
        for x, b, d, m in zip(inputs, baselines, diffs, block["masks"]):
            m = m[start - lo:stop - lo]
            m = m.reshape((m.shape[0], 1, 1) + tuple(m.shape[1:]))  # over examples and channels
            out = x * m if d is None else torch.addcmul(b, m, d)  # x * M + b * (1 - M)
            copies.append(out.reshape((-1,) + tuple(x.shape[1:])))
        return tuple(copies), None

    # masks are never local, so the incremental path for boxes would only cost a trace
    with incremental_evaluation(False):
        for start, stop, rows, _ in evaluate_perturbations(
            forward_func, call, n_masks, make, initial, masks_per_eval, show_progress, desc
        ):
            scores[:, start:stop] = rows.T.to(scores.dtype)
    with torch.no_grad():
        flush(block["stop"])
        return tuple(
            (s / (n_masks * p_keep)).reshape((call.batch,) + g.spatial) for s, g in zip(sums, geometries)
        )


class RISE(PerturbationAttribution):
    """RISE (Petsiuk et al., 2018): saliency from randomly masked copies of the input.

    ``n_masks`` random smooth masks (binary ``grid_size`` grids with cells
    kept with probability ``p_keep``, upsampled bilinearly and shifted by a
    random fraction of a cell) are applied to every example; masked pixels
    take the value of ``baselines``. A pixel's saliency is the mean target
    score over the masks weighted by how much each mask keeps that pixel,
    divided by ``p_keep`` (so a model that ignores its input gets the
    constant map of its score). The same masks serve every example of the
    batch, so an example's map does not depend on the others.

    Cost: ``n_masks`` forwards of the batch, ``masks_per_eval`` masks per
    forward call (else the memory budget decides; the result does not
    depend on it), and one ``examples x masks x pixels`` matrix product.
    Masks are drawn from ``seed`` (an int or a ``torch.Generator``; None:
    torch's global generator), on the CPU unless the generator lives elsewhere.

    Inputs are ``[N, C, H, W]`` images or ``[N, C, L]`` sequences (a tuple
    gets independent masks per tensor); the maps are broadcast over the
    channels, so attributions have the inputs' shape.

    Example:
        >>> import torch
        >>> from attribuo.attr.perturbation.rise import RISE
        >>> model = lambda x: x[:, 0, :4, :4].mean((1, 2))  # looks only at the top-left corner
        >>> x = torch.ones(1, 3, 16, 16)
        >>> sal = RISE(model).attribute(x, n_masks=500, grid_size=4, seed=0)
        >>> sal.shape, bool(sal[0, 0, :4, :4].mean() > sal[0, 0, 8:, 8:].mean())
        (torch.Size([1, 3, 16, 16]), True)
    """

    _multiply_by_inputs = False

    @classmethod
    def get_name(cls) -> str:
        """``'RISE'`` (an acronym: no spaces between its capitals)."""
        return "RISE"

    def attribute(
        self,
        inputs: TensorOrTuple,
        baselines: Any = 0,
        target: Any = None,
        additional_forward_args: Any = None,
        n_masks: int = 4000,
        grid_size: int | tuple[int, int] = 7,
        p_keep: float = 0.5,
        masks_per_eval: int | None = None,
        seed: int | torch.Generator | None = None,
        show_progress: bool = False,
    ) -> TensorOrTuple:
        """RISE saliency of ``target``, in the form and shape of ``inputs``.

        ``grid_size``: cells per side (an int, or ``(rows, cols)``);
        ``p_keep``: the probability a cell is kept; ``baselines``: what
        masked pixels become (a number, or per input a tensor of the input's
        shape, one example's shape, or anything broadcasting to it).
        """
        call = parse_call(inputs, target, additional_forward_args)
        positive_int(n_masks, "n_masks")
        p_keep = _check_p_keep(p_keep)
        if masks_per_eval is not None:
            positive_int(masks_per_eval, "masks_per_eval")
        generator = _generator(seed)
        grids = []
        for i, x in enumerate(call.inputs):
            name = f"inputs[{i}]" if call.was_tuple else "inputs"
            if x.dim() not in (3, 4):
                raise ArgumentValueError(
                    f"`{name}` has shape {tuple(x.shape)}; RISE needs [N, C, H, W] images or [N, C, L] sequences"
                )
            if not x.is_floating_point():
                raise ArgumentTypeError(f"`{name}` has dtype {x.dtype}; RISE blends inputs with soft masks, "
                                        "so they must be floating-point")
            grids.append(_grid_shape(grid_size, tuple(x.shape[2:]), name))
        if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
            baselines = (baselines,) * len(call.inputs)  # one number serves every input
        baselines = perturbation_baselines(call.inputs, baselines)
        maps = rise(self.forward_func, call, baselines, tuple(grids), n_masks, p_keep, generator,
                    masks_per_eval, show_progress, self.get_name())
        return call.result(tuple(m.unsqueeze(1).expand_as(x).contiguous() for m, x in zip(maps, call.inputs)))
