"""Concept activation vectors: the trained weights for a concept set at a layer, on disk."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from .._engine.errors import ArgumentTypeError, ArgumentValueError
from .concept import Concept


def concepts_to_str(concepts: list[Concept]) -> str:
    """The key of a concept set: the concept ids joined by ``-`` (e.g. ``"0-1-2"``).

    Example:
        >>> from attribuo.concept import Concept
        >>> concepts_to_str([Concept(0, "striped", None), Concept(3, "random", None)])
        '0-3'
    """
    return "-".join(str(c.id) for c in concepts)


def _numpy_safe_globals() -> list[Any]:
    # CAV files written by Captum hold a numpy array of classes; allow exactly
    # the numpy pieces needed to rebuild it under torch's weights-only loader.
    core = getattr(np, "_core", None) or np.core
    found: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in ("Int32DType", "Int64DType", "UInt32DType")
                  if hasattr(dtypes, n)]
    return found


class CAV:
    """The concept activation vectors of one concept set at one layer.

    ``stats`` holds what the classifier gave: ``"weights"`` (one row per
    class, i.e. per concept), ``"classes"`` (the concept id of each row) and
    any statistics such as ``"accs"``. :meth:`save` writes it to
    ``<save_path>/<model_id>/<ids>-<layer>.pkl`` and :meth:`load` reads it
    back; files are compatible with Captum's.

    Example:
        >>> import tempfile, torch
        >>> from attribuo.concept import CAV, Concept
        >>> concepts = [Concept(0, "a", None), Concept(1, "b", None)]
        >>> root = tempfile.mkdtemp()
        >>> CAV.create_cav_dir_if_missing(root, "m")
        >>> w = torch.tensor([[-1.0, 2.0], [1.0, -2.0]])
        >>> CAV(concepts, "fc", {"weights": w, "classes": [0, 1]}, root, "m").save()
        >>> CAV.load(root, "m", concepts, "fc").stats["weights"].tolist()
        [[-1.0, 2.0], [1.0, -2.0]]
    """

    def __init__(
        self,
        concepts: list[Concept],
        layer: str,
        stats: dict[str, Any] | None = None,
        save_path: str = "./cav/",
        model_id: str = "default_model_id",
    ) -> None:
        self.concepts = concepts
        self.layer = layer
        self.stats = stats
        self.save_path = save_path
        self.model_id = model_id

    @staticmethod
    def assemble_save_path(path: str, model_id: str, concepts: list[Concept], layer: str) -> str:
        """``<path>/<model_id>/<concept ids joined by ->-<layer>.pkl``."""
        return os.path.join(path, model_id, f"{concepts_to_str(concepts)}-{layer}.pkl")

    def save(self) -> None:
        """Write the concept ids and names, the layer and ``stats`` to :meth:`assemble_save_path`."""
        target = CAV.assemble_save_path(self.save_path, self.model_id, self.concepts, self.layer)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        torch.save(
            {
                "concept_ids": [c.id for c in self.concepts],
                "concept_names": [c.name for c in self.concepts],
                "layer": self.layer,
                "stats": self.stats,
            },
            target,
        )

    @staticmethod
    def create_cav_dir_if_missing(save_path: str, model_id: str) -> None:
        """Create ``<save_path>/<model_id>`` (and its parents) if it does not exist."""
        if not isinstance(save_path, (str, os.PathLike)):
            raise ArgumentTypeError(f"`save_path` must be a path, got {type(save_path).__name__}")
        os.makedirs(os.path.join(save_path, model_id), exist_ok=True)

    @staticmethod
    def load(cavs_path: str, model_id: str, concepts: list[Concept], layer: str) -> CAV | None:
        """The CAV saved for ``concepts`` at ``layer`` under ``cavs_path``, or None if none is."""
        path = CAV.assemble_save_path(cavs_path, model_id, concepts, layer)
        if not os.path.exists(path):
            return None
        guard = (
            torch.serialization.safe_globals(_numpy_safe_globals())
            if hasattr(torch.serialization, "safe_globals")
            else nullcontext()
        )
        try:
            with guard:
                saved = torch.load(path)
        except Exception as err:  # an unreadable file should say which file
            raise ArgumentValueError(f"cannot read the CAV file {path!r}: {err}") from err
        restored = [
            Concept(cid, name, None) for cid, name in zip(saved["concept_ids"], saved["concept_names"])
        ]
        return CAV(restored, saved["layer"], saved["stats"], cavs_path, model_id)
