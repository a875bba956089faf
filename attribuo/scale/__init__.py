"""Dataset-scale attribution on ``torch.distributed``: sharded, atomic, resumable.

    python -m attribuo.scale run --model PKG.MOD:FACTORY --dataset PKG.MOD:FACTORY \\
        --method IntegratedGradients --attribute-args '{"n_steps": 32}' --out DIR [--resume]
    torchrun --nproc_per_node=N -m attribuo.scale run ...   (same flags)
    python -m attribuo.scale status DIR

In Python: :func:`run` with a :class:`Job`, then :func:`load` and
:func:`summary` on the output folder.
"""

from .job import Job, run
from .store import load, status, summary

__all__ = ["Job", "load", "run", "status", "summary"]
