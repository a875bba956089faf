"""The perturb-evaluate loop shared by every perturbation method.

A perturbation method is a way of generating *masks*: for perturbation ``k``
and input tensor ``i`` a boolean tensor saying which elements are replaced
(by a baseline, by a permuted copy, ...). This module turns masks into
perturbed copies of the batch with ``torch.where`` (many at once), runs the
forward function on many copies per call under ``torch.no_grad()``, chunked
by ``perturbations_per_eval`` or by the memory budget, and hands back one
row of outputs per perturbation. What a method does with the rows
(differences, running sums, a regression) is up to the method.

The pieces:

* :func:`feature_masks` / :func:`feature_order` -- Captum's ``feature_mask``
  (one id tensor per input, ids shared across the tuple, broadcast over the
  batch) in a normalised form;
* :func:`select_elements` -- per-feature selections ``[P, (N,) F]`` turned
  into element masks ``[P, Nm, *input_shape]``;
* :func:`blend` -- element masks into perturbed copies ``[P * N, ...]``;
* :func:`evaluate_perturbations` -- the chunked, no-grad evaluation loop;
* :func:`spread` -- one value per feature back onto the input's shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .baselines import full_baselines
from .batching import bytes_per_copy, capped_by_activations, chunk_size, remembered_activation_bytes
from .call import Call
from .errors import ArgumentTypeError, ArgumentValueError
from .incremental import IncrementalForward
from .inputs import positive_int
from .threads import is_small_work, serial_threads

Masks = tuple[Tensor, ...]

PERTURBATION_COST = {"cpu": 64}  # see evaluate_perturbations; other devices: DEFAULT_COST
DEFAULT_COST = 4


def perturbation_cost(inputs: tuple[Tensor, ...]) -> int:
    """How many times its input bytes one perturbed copy is charged against the budget."""
    device = inputs[0].device.type if inputs else "cpu"
    return PERTURBATION_COST.get(device, DEFAULT_COST)


# --------------------------------------------------------------------------- masks
def feature_masks(
    inputs: tuple[Tensor, ...], feature_mask: Any, name: str = "feature_mask", nonnegative: bool = False
) -> Masks:
    """``feature_mask`` as one long tensor per input, shaped ``[1 or N, *input.shape[1:]]``.

    ``None`` gives every scalar of every input its own id, numbered across
    the tuple (input 0 first). A given mask may omit leading dims (it is
    broadcast like Captum's) but its batch dim must be 1 or the batch size.
    Ids are integers, also when held in a float tensor (as Captum accepts);
    negative ids are features like the others unless ``nonnegative`` (for
    methods that index by id).
    """
    if feature_mask is None:
        masks, offset = [], 0
        for inp in inputs:
            # one example's shape, also for an empty input (Captum: zero attribution)
            shape = (1,) + tuple(inp.shape[1:])
            count = int(torch.Size(shape).numel())
            masks.append(torch.arange(offset, offset + count, device=inp.device).reshape(shape))
            offset += count
        return tuple(masks)
    items = feature_mask if isinstance(feature_mask, tuple) else (feature_mask,)
    if len(items) != len(inputs):
        raise ArgumentValueError(
            f"`{name}` has {len(items)} tensors but there are {len(inputs)} inputs; "
            "give one mask per input tensor"
        )
    out = []
    for i, (mask, inp) in enumerate(zip(items, inputs)):
        where = f"`{name}[{i}]`" if isinstance(feature_mask, tuple) else f"`{name}`"
        if not isinstance(mask, Tensor):
            raise ArgumentTypeError(f"{where} must be a tensor, got {type(mask).__name__}")
        if mask.is_complex() or mask.dtype == torch.bool:
            raise ArgumentTypeError(f"{where} must hold integer feature ids, got {mask.dtype}")
        if mask.is_floating_point():
            if mask.numel() and not bool((torch.isfinite(mask) & (mask == mask.round())).all()):
                raise ArgumentTypeError(
                    f"{where} must hold integer feature ids; its float values are not all whole numbers"
                )
        if mask.dim() > inp.dim():
            raise ArgumentValueError(
                f"{where} has shape {tuple(mask.shape)}, more dims than the input {tuple(inp.shape)}"
            )
        mask = mask.reshape((1,) * (inp.dim() - mask.dim()) + tuple(mask.shape))
        rows = mask.shape[0] if mask.dim() else 1
        if rows not in (1, inp.shape[0]):
            raise ArgumentValueError(
                f"{where} has {rows} rows in dim 0; it must be 1 (shared by every example) "
                f"or the batch size {inp.shape[0]}"
            )
        try:
            mask = mask.expand((rows,) + tuple(inp.shape[1:]))
        except RuntimeError:
            raise ArgumentValueError(
                f"{where} of shape {tuple(mask.shape)} does not broadcast to the input "
                f"shape {tuple(inp.shape)}"
            ) from None
        if nonnegative and mask.numel() and int(mask.min()) < 0:
            raise ArgumentValueError(f"{where} holds negative ids; this method needs feature ids >= 0")
        out.append(mask.to(device=inp.device, dtype=torch.long))
    return tuple(out)


def feature_order(masks: Masks) -> Tensor:
    """The distinct ids of ``masks`` in Captum's order.

    Ids of input 0 (ascending) come first, then ids first seen in input 1,
    and so on. The order matters only where randomness is drawn per feature.
    """
    default = _numbered_in_order(masks)
    if default is not None:  # ids 0..E-1 in element order (the default masks): already sorted
        return torch.arange(default)
    per_input = [torch.unique(m.cpu()) for m in masks if m.numel()]
    if not per_input:
        return torch.zeros(0, dtype=torch.long)
    seen = torch.cat(per_input)
    ids, inverse = torch.unique(seen, return_inverse=True)
    first = torch.full((ids.numel(),), seen.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(seen.numel()), reduce="amin")
    return ids[torch.argsort(first)]


def _numbered_in_order(masks: Masks) -> int | None:
    """``E`` when the (one-row) masks hold ids ``0..E-1`` in element order, else None."""
    present = [m for m in masks if m.numel()]
    if not present or any(m.shape[0] != 1 for m in present):
        return None
    flat = torch.cat([m.reshape(-1) for m in present]).cpu()
    return flat.numel() if bool((flat == torch.arange(flat.numel())).all()) else None


def positions(masks: Masks, order: Tensor) -> Masks:
    """Each element's position in ``order`` (ids replaced by 0..F-1)."""
    if _numbered_in_order(masks) == order.numel() and bool((order == torch.arange(order.numel())).all()):
        return masks  # every id is its own position
    sorted_ids, perm = torch.sort(order)
    out = []
    for m in masks:
        ids = sorted_ids.to(m.device)
        out.append(perm.to(m.device)[torch.searchsorted(ids, m.reshape(-1))].reshape(m.shape))
    return tuple(out)


def select_elements(selection: Tensor, index: Tensor) -> Tensor:
    """Element masks from per-feature choices.

    ``selection`` is ``[P, F]`` (the same choice for every example) or
    ``[P, N, F]``; ``index`` is a feature-position mask ``[Nm, *shape]``.
    Returns ``[P, Nm or N, *shape]`` with ``selection[p, (n,) index[n, e]]``.
    """
    rows, shape = index.shape[0], index.shape[1:]
    flat = index.reshape(rows, -1).to(selection.device)
    if selection.dim() == 2:
        picked = selection[:, flat]  # [P, Nm, E]
        return picked.reshape((selection.shape[0], rows) + tuple(shape))
    p, n, _ = selection.shape
    flat = flat.expand(n, -1) if rows == 1 else flat
    picked = torch.gather(selection, 2, flat.unsqueeze(0).expand(p, -1, -1))
    return picked.reshape((p, n) + tuple(shape))


def blend(mask: Tensor, when_true: Tensor, when_false: Tensor) -> Tensor:
    """Perturbed copies ``[P * N, ...]``: ``when_true`` where ``mask`` is set.

    ``mask`` is ``[P, 1 or N, ...]``; each of ``when_true`` / ``when_false``
    is ``[N, ...]`` (shared by every copy) or ``[P, N, ...]``.
    """
    p = mask.shape[0]
    a = when_true if when_true.dim() == mask.dim() else when_true.unsqueeze(0)
    b = when_false if when_false.dim() == mask.dim() else when_false.unsqueeze(0)
    out = torch.where(mask, a, b)
    n = out.shape[1]  # the broadcast batch (0 for an empty input)
    return out.expand((p, n) + tuple(out.shape[2:])).reshape((p * n,) + tuple(out.shape[2:]))


def replace_elements(
    base: Tensor, times: int, p: Tensor, e: Tensor, n: Tensor | None, values: Tensor
) -> Tensor:
    """Perturbed copies ``[times * N, ...]`` of ``base`` (``[N, ...]``) with a few elements replaced.

    Entry ``k`` sets element ``e[k]`` (flat index within one example) of
    copy ``p[k]`` to the value ``values`` holds there: of example ``n[k]``,
    or of every example when ``n`` is None. ``values`` is ``[N, ...]`` or
    ``[times, N, ...]``. The same result as :func:`blend` with a mask that
    is set exactly at the entries, but the work grows with the number of
    entries rather than with the size of the copies (``torch.where`` over
    whole copies costs more than the copy itself).
    """
    size = base.shape[0]
    dtype = torch.promote_types(base.dtype, values.dtype)  # as torch.where promotes
    # contiguous whatever the layout of ``base`` (channels-last, a permuted view): flat indices
    # below are row-major, and the copies are those a contiguous ``base`` would give
    out = base.to(dtype).unsqueeze(0).expand((times,) + tuple(base.shape)).clone(memory_format=torch.contiguous_format)
    if p.numel() == 0 or out.numel() == 0:
        return out.reshape((times * size,) + tuple(base.shape[1:]))
    per = out.numel() // (times * size)  # elements of one example
    if n is None:
        rows = torch.arange(0, size * per, per, device=base.device)
        src = rows[None, :] + e[:, None]  # every example, [K, N]
        dst = src + (p * (size * per))[:, None]
    else:
        src = n * per + e
        dst = src + p * (size * per)
    if values.dim() > base.dim():  # [times, N, ...]: the copy's own values
        src = src + (p * (size * per) if n is not None else (p * (size * per))[:, None])
    out.view(-1).put_(dst, values.take(src).to(dtype))
    return out.reshape((times * size,) + tuple(base.shape[1:]))


class FeatureElements:
    """The elements of each feature, sorted once so a run of features is a slice.

    ``index`` is a feature-position mask ``[Nm, *shape]`` (see
    :func:`positions`). :meth:`chunk` gives the entries of features
    ``start..stop-1`` in the form :func:`replace_elements` takes.
    """

    def __init__(self, index: Tensor) -> None:
        self.rows = index.shape[0]
        self.per_row = int(torch.Size(index.shape[1:]).numel())
        flat = index.reshape(-1)
        self.order = torch.argsort(flat, stable=True)
        self.sorted = flat[self.order]
        self._bounds: list[int] | None = None

    def chunk(self, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._bounds is None:  # where each feature's run of elements starts
            ends = torch.arange(int(self.sorted[-1]) + 2 if self.sorted.numel() else 1)
            self._bounds = torch.searchsorted(self.sorted, ends.to(self.sorted.device)).tolist()
        last = len(self._bounds) - 1
        lo, hi = self._bounds[min(start, last)], self._bounds[min(stop, last)]
        where = self.order[lo:hi]
        p = self.sorted[lo:hi] - start
        if self.rows == 1:
            return p, where, None
        return p, where % max(self.per_row, 1), where // max(self.per_row, 1)


def spread(values: Tensor, index: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    """Put one value per feature back onto an input's shape.

    ``values`` is ``[F, *out_shape]`` (a value per feature and output),
    ``index`` a feature-position mask ``[Nm, *shape]``. The result is
    ``[*out_shape, *shape]``; with a per-example mask (``Nm == N``) example
    ``n`` reads the values of its own features (``out_shape[0]`` must be N).
    """
    rows, shape = index.shape[0], tuple(index.shape[1:])
    flat = index.reshape(rows, -1).to(values.device)
    if rows == 1:
        picked = values[flat[0]]  # [E, *out_shape]
        return picked.movedim(0, -1).reshape(tuple(out_shape) + shape)
    if not out_shape or out_shape[0] != rows:
        raise ArgumentValueError(
            "`feature_mask` gives each example its own mask, so the forward function must "
            f"return one value per example; got outputs of shape {tuple(out_shape)} for "
            f"{rows} examples"
        )
    rest = int(torch.Size(out_shape[1:]).numel())
    table = values.reshape(values.shape[0], rows, rest).permute(1, 2, 0)  # [N, R, F]
    picked = torch.gather(table, 2, flat.unsqueeze(1).expand(-1, rest, -1))
    return picked.reshape(tuple(out_shape) + shape)


# ----------------------------------------------------------------------- baselines
def perturbation_baselines(inputs: tuple[Tensor, ...], baselines: Any) -> tuple[Tensor, ...]:
    """Full-shape baselines; also accepts any tensor that broadcasts to the input."""
    try:
        return full_baselines(inputs, baselines)
    except ArgumentValueError as error:
        items = baselines if isinstance(baselines, tuple) else (baselines,)
        if len(items) != len(inputs):
            raise
        out = []
        for inp, b in zip(inputs, items):
            if isinstance(b, Tensor):
                try:
                    b = torch.broadcast_to(b.to(device=inp.device, dtype=inp.dtype), inp.shape)
                except RuntimeError:
                    raise error from None
            out.append(b)
        return full_baselines(inputs, tuple(out) if isinstance(baselines, tuple) else out[0])


# ---------------------------------------------------------------------- evaluation
def as_output_tensor(output: Any) -> Tensor:
    """Forward outputs as tensors (Captum accepts Python numbers too)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (int, float)) and not isinstance(output, bool):
        # like Captum (torch.tensor(x, dtype=type(x))): a Python float is float64
        return torch.tensor(output, dtype=torch.float64 if isinstance(output, float) else torch.long)
    raise ArgumentTypeError(
        f"the forward function must return a tensor, int or float, got {type(output).__name__}"
    )


def is_aggregate(initial: Tensor, batch: int) -> bool:
    """Whether the forward function returns one value for the whole batch."""
    return initial.dim() == 0 or initial.shape[0] != batch or (batch > 1 and initial.numel() == 1)


def evaluate_perturbations(
    forward_func: Callable,
    call: Call,
    total: int,
    make: Callable[[int, int], tuple[tuple[Tensor, ...], Any]],
    initial: Tensor,
    perturbations_per_eval: int | None = None,
    show_progress: bool = False,
    desc: str = "Attribution",
) -> Iterator[tuple[int, int, Tensor, Any]]:
    """Evaluate ``total`` perturbations, many per forward call.

    ``make(start, stop)`` returns the perturbed copies of perturbations
    ``start..stop-1`` stacked along dim 0 (perturbation-major, each a full
    copy of the batch of ``call``) and a payload handed back unchanged; they
    run with ``call``'s target and arguments expanded to match. Yields
    ``(start, stop, rows, payload)`` where ``rows[k]`` is the flattened
    output of perturbation ``start + k`` (as many values as ``initial``).

    ``perturbations_per_eval`` (when given) fixes how many perturbations go
    into one call; otherwise the memory budget decides. A forward function
    whose output does not grow with its batch (one value per batch) gets
    one perturbation per call; an explicit request for more is an error.

    A model (``nn.Module``) of one image input gets its chunks through
    :class:`~.incremental.IncrementalForward`: copies that change only a
    small box are computed over that box's receptive field alone, with the
    plain forward wherever that does not apply.
    """
    n_out = initial.numel()
    if perturbations_per_eval is not None:
        positive_int(perturbations_per_eval, "perturbations_per_eval")
    aggregate = is_aggregate(initial, call.batch)
    if aggregate and perturbations_per_eval not in (None, 1):
        raise ArgumentValueError(
            "`perturbations_per_eval` must be 1 when the forward function returns one value "
            f"for the whole batch (its output has shape {tuple(initial.shape)} for "
            f"{call.batch} examples)"
        )
    # perturbed copies run through whole models whose activations are many times the input;
    # on CPUs forwards are fastest while those activations stay in cache, so a copy is charged
    # a multiple of its input bytes against the budget (measured: 32x32 CNNs, MLPs)
    chunk_forward = _chunk_forward(forward_func, call, total, aggregate)
    size = 1 if aggregate else chunk_size(
        total,
        bytes_per_copy(call.inputs) * _copy_cost(chunk_forward, call.inputs),
        items=perturbations_per_eval,
        name="perturbations_per_eval",
    )
    if perturbations_per_eval is None and size > 1:  # models whose activations dwarf their input
        size = capped_by_activations(
            size, remembered_activation_bytes(forward_func, call.inputs, call.args, grad=False)
        )
    bar = _progress(show_progress, desc, 1 + -(-total // max(size, 1)))
    checked = size == 1
    start = 0
    try:
        # a small CPU model's thousands of tiny copies run on one intra-op thread (see .threads)
        with torch.no_grad(), serial_threads(is_small_work(forward_func, call.inputs, total)):
            while start < total:
                stop = min(start + size, total)
                copies, payload = make(start, stop)
                out = as_output_tensor(call.expanded(stop - start, inputs=copies).forward(chunk_forward))
                if not checked:
                    if out.dim() == 0 or out.numel() != (stop - start) * n_out:
                        if perturbations_per_eval is not None:
                            raise ArgumentValueError(
                                "with `perturbations_per_eval` > 1 the forward function's "
                                "output must grow with its batch; it returned shape "
                                f"{tuple(out.shape)} for {stop - start} copies of a batch whose "
                                f"output has shape {tuple(initial.shape)}"
                            )
                        size = 1  # output does not grow with the batch: one copy per call
                        bar = _progress_resize(bar, 1 + total - start)
                        continue
                    checked = True
                if out.numel() != (stop - start) * n_out:
                    raise ArgumentValueError(
                        f"the forward function returned {out.numel()} values for a perturbed "
                        f"batch; expected {(stop - start) * n_out} (as many as for the inputs)"
                    )
                if bar is not None:
                    bar.update()
                yield start, stop, out.reshape(stop - start, n_out), payload
                start = stop
    finally:
        if bar is not None:
            bar.close()


def _copy_cost(forward_func: Callable, inputs: tuple[Tensor, ...]) -> int:
    """The budget charge per input byte of one copy.

    A layer's values with the model before the layer computed once per chunk
    (``reuses_prefix``) run only the rest of the model per copy, and are
    often far larger than the model's input; copies evaluated incrementally
    compute only small blocks. Both are charged as on other devices (the
    activation cap below still bounds the chunk, also for chunks that the
    incremental path hands to the plain model).
    """
    if isinstance(forward_func, IncrementalForward) or getattr(forward_func, "reuses_prefix", False):
        return DEFAULT_COST
    return perturbation_cost(inputs)


def _chunk_forward(forward_func: Callable, call: Call, total: int, aggregate: bool) -> Callable:
    """The forward function for chunks of copies: incremental on images where that applies."""
    if aggregate or total < 4 or len(call.inputs) != 1 or call.args:
        return forward_func
    fast = IncrementalForward.build(forward_func, call.inputs[0])
    return forward_func if fast is None else fast


def _progress(show: bool, desc: str, total: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"{desc} attribution", total=total)
    bar.update()  # the initial evaluation
    return bar


def _progress_resize(bar, total: int):
    if bar is not None:
        bar.total = bar.n + total
        bar.refresh()
    return bar


def initial_output(forward_func: Callable, call: Call) -> Tensor:
    """The forward output of ``call`` (no grad), as a tensor."""
    with torch.no_grad():
        return as_output_tensor(call.forward(forward_func))


def feature_count(masks: Masks) -> int:
    """Number of features: one more than the largest id in ``masks`` (0 when they are empty)."""
    return max((int(m.max()) for m in masks if m.numel()), default=-1) + 1


def warn_missing_ids(masks: Masks, count: int) -> None:
    """Captum's warning when ids 0..count-1 are not all used."""
    present = torch.zeros(count, dtype=torch.bool)
    for m in masks:
        if m.numel():
            present[torch.unique(m.cpu())] = True
    if not bool(present.all()):
        warnings.warn(
            "Feature mask is missing some integers between 0 and num_features; features "
            "with no elements get zero attribution and cost evaluations",
            stacklevel=3,
        )
