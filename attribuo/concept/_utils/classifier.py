"""Captum's ``concept._utils.classifier`` path; the code lives in :mod:`attribuo.concept.classifier`."""

from ..classifier import Classifier, DefaultClassifier, train_test_split

__all__ = ["Classifier", "DefaultClassifier", "train_test_split"]
