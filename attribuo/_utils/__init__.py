"""Utilities mirroring ``captum._utils`` (interpretable models for Lime/KernelShap)."""
