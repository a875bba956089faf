"""Insights: a web app to explore a classifier's predictions and attributions.

Captum's ``captum.insights`` API (``AttributionVisualizer``, ``Batch`` and the
features), served by FastAPI/uvicorn with a plain HTML/JS page that needs
nothing from the network. Try it with ``python -m attribuo.insights.example``.

Example:
    >>> from attribuo.insights import AttributionVisualizer, Batch
    >>> from attribuo.insights.features import ImageFeature
    >>> # vis = AttributionVisualizer(model, classes, ImageFeature(...), dataset)
    >>> # vis.serve(blocking=True)
"""

from .features import BaseFeature, GeneralFeature, ImageFeature, TextFeature
from .visualizer import AttributionVisualizer, Batch

__all__ = [
    "AttributionVisualizer",
    "Batch",
    "BaseFeature",
    "ImageFeature",
    "TextFeature",
    "GeneralFeature",
]
