"""Captum's ``concept._utils.common`` path; the code lives in :mod:`attribuo.concept.cav`."""

from ..cav import concepts_to_str

__all__ = ["concepts_to_str"]
