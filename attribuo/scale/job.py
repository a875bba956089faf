"""Attribution of a whole map-style dataset, sharded over ``torch.distributed`` ranks, resumable.

Examples ``0..n-1`` are cut into fixed shards of ``shard_size``; shard ``k``
belongs to rank ``k % world_size``. Each rank attributes its shards batch by
batch (the batches of a shard do not depend on the number of ranks, so 1 and
N processes give identical numbers), writes each finished shard atomically,
and skips shards already done when resuming. At the end the per-feature
sums are reduced across ranks with ``all_reduce`` and rank 0 writes the
manifest and the summary.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from . import store


@dataclass
class Job:
    """What a run computes; two runs with equal jobs may share an output folder (resume)."""

    model: str
    dataset: str
    method: str
    init_args: dict = field(default_factory=dict)
    attribute_args: dict = field(default_factory=dict)
    target: str | int | None = "label"
    batch_size: int = 32
    shard_size: int = 256
    delta: bool = False

    def record(self, examples: int, inputs: int) -> dict[str, Any]:
        shards = -(-examples // self.shard_size)
        return {**asdict(self), "examples": examples, "inputs": inputs, "shards": shards}


def load_factory(spec: str, name: str) -> Any:
    """``PKG.MOD:FACTORY`` called with no arguments."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ArgumentValueError(f"`{name}` must look like PKG.MOD:FACTORY, got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ArgumentValueError(f"`{name}`: cannot import {module_name!r} ({error})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ArgumentValueError(f"`{name}`: {module_name!r} has no callable {attr!r}")
    return factory()


def method_class(name: str) -> type:
    import attribuo.attr as attr

    cls = getattr(attr, name, None)
    if not (inspect.isclass(cls) and hasattr(cls, "attribute")):
        raise ArgumentValueError(f"`method` {name!r} is not an attribution class of attribuo.attr")
    return cls


def _split_item(item: Any) -> tuple[tuple[Tensor, ...], Any]:
    """A dataset item as (inputs, label or None)."""
    def is_label(v: Any) -> bool:
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, Tensor) and v.dim() == 0)

    if isinstance(item, Tensor):
        return (item,), None
    if isinstance(item, (tuple, list)) and len(item) == 2 and is_label(item[1]):
        inputs = tuple(item[0]) if isinstance(item[0], (tuple, list)) else (item[0],)
        if all(isinstance(t, Tensor) for t in inputs):
            return inputs, item[1]
    if isinstance(item, (tuple, list)) and item and all(isinstance(t, Tensor) for t in item):
        return tuple(item), None
    raise ArgumentTypeError(
        "a dataset item must be an input tensor, a tuple of input tensors, or (input, label) with an "
        f"int label; got {type(item).__name__}"
    )


def _batch(dataset: Any, indices: list[int], device: torch.device) -> tuple[tuple[Tensor, ...], Tensor | None]:
    items = [_split_item(dataset[i]) for i in indices]
    inputs = tuple(torch.stack([it[0][j] for it in items]).to(device) for j in range(len(items[0][0])))
    labels = None
    if items[0][1] is not None:
        labels = torch.as_tensor([int(it[1]) for it in items], device=device)
    return inputs, labels


def _targets(job: Job, model: nn.Module, inputs: tuple[Tensor, ...], labels: Tensor | None) -> Any:
    if job.target == "label":
        if labels is None:
            raise ArgumentValueError("`target` is 'label' but the dataset items carry no label")
        return labels
    if job.target == "pred":
        with torch.no_grad():
            return model(*inputs).argmax(-1)
    return job.target


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call set up the process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            # NCCL collectives (and broadcast_object_list) use the current device.
            torch.cuda.set_device(_device())
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def run(job: Job, out: str | os.PathLike, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Attribute every example of ``job.dataset`` and write the results to ``out``.

    Run it in every process of a ``torchrun`` job (or alone). Returns the
    manifest (on every rank).

    Example:
        >>> from attribuo.scale import Job, run  # doctest: +SKIP
        >>> run(Job("mypkg.models:net", "mypkg.data:test_set", "IntegratedGradients",
        ...         attribute_args={"n_steps": 32}), "runs/ig")  # doctest: +SKIP
    """
    import torch.distributed as dist

    _check_job(job)
    cls = method_class(job.method)
    model = load_factory(job.model, "model")
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"`model` factory {job.model!r} returned {type(model).__name__}, not an nn.Module")
    dataset = load_factory(job.dataset, "dataset")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ArgumentTypeError(f"`dataset` factory {job.dataset!r} returned {type(dataset).__name__}, not a map-style Dataset")
    examples = len(dataset)
    first_inputs, _ = _split_item(dataset[0]) if examples else ((), None)
    record = job.record(examples, len(first_inputs))
    folder = Path(out)
    rank, world, owned = _distributed()
    try:
        _prepare(folder, record, resume, rank, world)
        device = _device()
        model = model.to(device).eval()
        method = cls(model, **job.init_args)
        sums: dict[str, Tensor] = {}
        bar = _bar(progress and rank == 0, examples)
        for shard in range(rank, record["shards"], world):
            lo, hi = shard * job.shard_size, min(examples, (shard + 1) * job.shard_size)
            done = store.verified_record(folder, shard) if resume else None
            tensors = store.read_shard(folder, shard) if done else _attribute_shard(job, method, model, dataset, lo, hi, device)
            if not done:
                store.write_shard(folder, shard, tensors)
            _accumulate(sums, tensors, record["inputs"])
            if bar is not None:
                bar.update(min(examples - bar.n, (hi - lo) * world))
        totals = _reduce(sums, record["inputs"], first_inputs, device, world)
        if world > 1:
            dist.barrier()
        if rank == 0:
            _finish(folder, record, totals)
        if world > 1:
            dist.barrier()
        if bar is not None:
            bar.close()
        return json.loads((folder / store.MANIFEST_FILE).read_text())
    finally:
        if owned:
            dist.destroy_process_group()


def _check_job(job: Job) -> None:
    for name in ("init_args", "attribute_args"):
        if not isinstance(getattr(job, name), dict):
            raise ArgumentTypeError(f"`{name}` must be a dict (JSON object) of keyword arguments")
    for name in ("batch_size", "shard_size"):
        value = getattr(job, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ArgumentValueError(f"`{name}` must be a positive int, got {value!r}")
    if not (job.target in ("label", "pred") or job.target is None or (isinstance(job.target, int) and not isinstance(job.target, bool))):
        raise ArgumentValueError(f"`target` must be 'label', 'pred', an int or None, got {job.target!r}")


def _prepare(folder: Path, record: dict[str, Any], resume: bool, rank: int, world: int) -> None:
    import torch.distributed as dist

    # Rank 0 alone reads and decides: a rank that looked after rank 0 wrote job.json
    # would otherwise see "already holds this job" on a fresh folder.
    problem = None
    if rank == 0:
        existing = store.read_job(folder)
        if existing is not None and existing != record:
            problem = f"{folder} was written by a different job ({store.JOB_FILE} differs); use another --out"
        elif existing is not None and not resume:
            problem = f"{folder} already holds this job; pass --resume to continue it"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            if existing is None:
                store.atomic_write_json(folder / store.JOB_FILE, record)
    if world > 1:
        shared = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem is not None:
        raise ArgumentValueError(problem)


def _attribute_shard(job: Job, method: Any, model: nn.Module, dataset: Any, lo: int, hi: int,
                     device: torch.device) -> dict[str, Tensor]:
    parts: dict[str, list[Tensor]] = {}
    for start in range(lo, hi, job.batch_size):
        idx = list(range(start, min(hi, start + job.batch_size)))
        inputs, labels = _batch(dataset, idx, device)
        target = _targets(job, model, inputs, labels)
        kwargs = dict(job.attribute_args)
        if job.delta:
            kwargs["return_convergence_delta"] = True
        given = inputs if len(inputs) > 1 else inputs[0]
        result = method.attribute(given, target=target, **kwargs) if target is not None else method.attribute(given, **kwargs)
        delta = None
        if job.delta:
            result, delta = result
        attrs = result if isinstance(result, tuple) else (result,)
        parts.setdefault("indices", []).append(torch.tensor(idx, dtype=torch.long))
        for i, a in enumerate(attrs):
            parts.setdefault(f"attr_{i}", []).append(a.detach().cpu())
        if delta is not None:
            parts.setdefault("delta", []).append(torch.as_tensor(delta).detach().cpu().reshape(-1))
    return {k: torch.cat(v) for k, v in parts.items()}


def _accumulate(sums: dict[str, Tensor], tensors: dict[str, Tensor], inputs: int) -> None:
    for i in range(inputs):
        a = tensors[f"attr_{i}"].double()
        for key, value in ((f"sum_{i}", a.sum(0)), (f"abs_{i}", a.abs().sum(0))):
            sums[key] = sums[key] + value if key in sums else value
    sums["count"] = sums.get("count", torch.zeros((), dtype=torch.float64)) + tensors["indices"].numel()


def _reduce(sums: dict[str, Tensor], inputs: int, first: tuple[Tensor, ...], device: torch.device,
            world: int) -> dict[str, Tensor]:
    import torch.distributed as dist

    out = {}
    for i in range(inputs):
        shape = tuple(first[i].shape)
        for key in (f"sum_{i}", f"abs_{i}"):
            out[key] = sums.get(key, torch.zeros(shape, dtype=torch.float64))
    out["count"] = sums.get("count", torch.zeros((), dtype=torch.float64))
    if world > 1:
        for key in sorted(out):
            value = out[key].to(device)
            dist.all_reduce(value)
            out[key] = value.cpu()
    return out


def _finish(folder: Path, record: dict[str, Any], totals: dict[str, Tensor]) -> None:
    entries = []
    for shard in range(record["shards"]):
        entry = store.verified_record(folder, shard)
        if entry is None:
            raise RuntimeError(f"shard {shard} is missing after every rank finished")
        entries.append(entry)
    count = max(float(totals["count"]), 1.0)
    summary = {"count": totals["count"]}
    for i in range(record["inputs"]):
        summary[f"mean_{i}"] = (totals[f"sum_{i}"] / count).float()
        summary[f"mean_abs_{i}"] = (totals[f"abs_{i}"] / count).float()
    store.atomic_write_bytes(folder / store.SUMMARY_FILE, store._safetensors().save(summary))
    store.atomic_write_json(folder / store.MANIFEST_FILE, {**record, "files": entries})


def _bar(show: bool, total: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="attribuo.scale", unit="ex")
