"""Inference tasks of the MONAI Label app."""

from .bundle import LiverBundleInferTask

__all__ = ["LiverBundleInferTask"]
