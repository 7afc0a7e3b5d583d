"""Inferers for the bundles' inference and validation paths."""

from .slice_stack import SliceStackInferer

__all__ = ["SliceStackInferer"]
