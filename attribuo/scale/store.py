"""The output folder of a dataset-scale run: job record, shard files, manifest, summary.

Every file is written to a temporary name in the folder and renamed into
place, so a killed process leaves either the old file or the new one,
never half of one. A shard counts as done when its ``.safetensors`` file
and its ``.json`` record (size and SHA-256 of the file) both exist and
agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._engine.errors import ArgumentValueError

JOB_FILE = "job.json"
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.safetensors"


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as error:  # pragma: no cover - an optional dependency
        raise ImportError("attribuo.scale writes safetensors files: pip install 'attribuo[scale]'") from error
    return st


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(folder: Path, index: int, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Save one shard and its record; returns the record."""
    st = _safetensors()
    path = folder / f"{shard_name(index)}.safetensors"
    data = st.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    record = {"shard": index, "file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path),
              "count": int(tensors["indices"].numel())}
    atomic_write_json(folder / f"{shard_name(index)}.json", record)
    return record


def verified_record(folder: Path, index: int) -> dict[str, Any] | None:
    """The shard's record when its file is complete and matches it, else None."""
    record_path = folder / f"{shard_name(index)}.json"
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        path = folder / record["file"]
        if not path.exists() or path.stat().st_size != record["bytes"] or sha256(path) != record["sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def read_shard(folder: Path, index: int) -> dict[str, Tensor]:
    return _safetensors().load_file(str(folder / f"{shard_name(index)}.safetensors"))


def read_job(folder: Path) -> dict[str, Any] | None:
    path = folder / JOB_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load(folder: str | os.PathLike, deltas: bool = False) -> tuple:
    """``(indices, attributions)`` of a finished run, in example order.

    Attributions are one tensor per model input (a tuple when the model
    takes several), rows in the order of ``indices`` (ascending). With
    ``deltas=True`` (a run with ``--delta``) the convergence deltas come
    third.

    Example:
        >>> from attribuo.scale import load  # doctest: +SKIP
        >>> indices, attributions = load("runs/ig")  # doctest: +SKIP
    """
    root = Path(folder)
    manifest = _manifest(root)
    parts: dict[str, list[Tensor]] = {}
    for entry in sorted(manifest["files"], key=lambda e: e["shard"]):
        record = verified_record(root, entry["shard"])
        if record is None or record["sha256"] != entry["sha256"]:
            raise ArgumentValueError(f"shard {entry['shard']} in {root} is missing or does not match its checksum")
        for key, value in read_shard(root, entry["shard"]).items():
            parts.setdefault(key, []).append(value)
    indices = torch.cat(parts.pop("indices"))
    order = torch.argsort(indices)
    attrs = tuple(torch.cat(parts[f"attr_{i}"])[order] for i in range(manifest["inputs"]))
    result = (indices[order], attrs if manifest["inputs"] > 1 else attrs[0])
    if not deltas:
        return result
    if "delta" not in parts:
        raise ArgumentValueError(f"the run in {root} stored no convergence deltas (run it with --delta)")
    return result + (torch.cat(parts["delta"])[order],)


def summary(folder: str | os.PathLike) -> dict[str, Tensor]:
    """Per-feature ``mean`` and ``mean_abs`` attribution over the dataset (``_i`` per input), and ``count``.

    Example:
        >>> from attribuo.scale import summary  # doctest: +SKIP
        >>> summary("runs/ig")["mean_abs_0"].shape  # doctest: +SKIP
        torch.Size([3, 32, 32])
    """
    root = Path(folder)
    _manifest(root)
    return _safetensors().load_file(str(root / SUMMARY_FILE))


def _manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    if not path.exists():
        raise ArgumentValueError(f"{root} holds no finished run (no {MANIFEST_FILE}); run or resume it first")
    return json.loads(path.read_text())


def status(folder: str | os.PathLike) -> dict[str, Any]:
    """How far a run in ``folder`` is: shards done (verified) out of the job's total."""
    root = Path(folder)
    job = read_job(root)
    if job is None:
        raise ArgumentValueError(f"{root} holds no attribuo.scale job ({JOB_FILE} is missing)")
    done = [k for k in range(job["shards"]) if verified_record(root, k) is not None]
    return {"job": job, "shards_done": len(done), "shards": job["shards"],
            "finished": (root / MANIFEST_FILE).exists() and len(done) == job["shards"]}
