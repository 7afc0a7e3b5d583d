"""Inferers for the bundles' inference and validation paths."""

from .autocast import AutocastInferer, cpu_supports_bf16
from .slice_stack import SliceStackInferer

__all__ = ["AutocastInferer", "SliceStackInferer", "cpu_supports_bf16"]
