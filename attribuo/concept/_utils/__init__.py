"""Captum's ``captum.concept._utils`` module paths, kept importable."""
