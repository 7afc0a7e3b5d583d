"""Training tasks of the MONAI Label app."""

from .bundle import LiverBundleTrainTask

__all__ = ["LiverBundleTrainTask"]
