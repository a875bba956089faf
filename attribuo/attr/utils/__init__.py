"""Helpers around attribution: summaries, statistics, baselines, input wrappers."""

from .baselines import ProductBaselines
from .input_wrapper import InputIdentity, ModelInputWrapper
from .stat import MSE, CommonStats, Count, Max, Mean, Min, Stat, StatValue, StdDev, Sum, Var
from .summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor

__all__ = [
    "MSE",
    "ClassSummarizer",
    "CommonStats",
    "Count",
    "InputIdentity",
    "Max",
    "Mean",
    "Min",
    "ModelInputWrapper",
    "ProductBaselines",
    "Stat",
    "StatValue",
    "StdDev",
    "Sum",
    "Summarizer",
    "SummarizerSingleTensor",
    "Var",
]
