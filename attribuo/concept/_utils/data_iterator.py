"""Captum's ``concept._utils.data_iterator`` path; the code lives in :mod:`attribuo.concept.data`."""

from ..data import CustomIterableDataset, dataset_to_dataloader

__all__ = ["CustomIterableDataset", "dataset_to_dataloader"]
