"""Helpers that turn files of concept examples into data iterators."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator

from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset


class CustomIterableDataset(IterableDataset):
    """Examples read from the files of a directory (or one file) by ``transform_filename_to_tensor``.

    With a directory ``path`` (ending in ``/``) each file whose path starts
    with ``path`` is read in turn; with a file, ``transform_filename_to_tensor``
    must itself return an iterator of tensors.

    Example:
        >>> import os, tempfile, torch
        >>> from attribuo.concept.data import CustomIterableDataset, dataset_to_dataloader
        >>> root = tempfile.mkdtemp() + "/"
        >>> for i in range(3):
        ...     torch.save(torch.full((2,), float(i)), os.path.join(root, f"{i}.pt"))
        >>> loader = dataset_to_dataloader(CustomIterableDataset(torch.load, root), batch_size=3)
        >>> sorted(next(iter(loader))[:, 0].tolist())
        [0.0, 1.0, 2.0]
    """

    def __init__(self, transform_filename_to_tensor: Callable, path: str) -> None:
        self.path = path
        self.transform_filename_to_tensor = transform_filename_to_tensor
        self.file_itr = glob.glob(path + "*") if os.path.isdir(path) else None

    def __iter__(self) -> Iterator[Tensor]:
        if self.file_itr is not None:
            return map(self.transform_filename_to_tensor, self.file_itr)
        return self.transform_filename_to_tensor(self.path)


def dataset_to_dataloader(dataset: Dataset, batch_size: int = 64) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` with batches of ``batch_size`` examples."""
    return DataLoader(dataset, batch_size=batch_size)
