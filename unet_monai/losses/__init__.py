"""Losses for UNet++ and UNet 3+: the UNet 3+ hybrid loss (focal + MS-SSIM + IoU) and a class-weighted wrapper.

- :class:`MultiScaleSSIMLoss`: 1 - MS-SSIM per class, 2D and 3D (functional form :func:`compute_ms_ssim`).
- :class:`HybridLoss`: focal + MS-SSIM + IoU over plain or deep-supervision outputs, plus the BCE of UNet 3+'s
  classification-guided module; exposes its terms for logging.
- :class:`CrossEntropyIoUDiceLoss`: the Keras UNet++ seed's cross-entropy + (-ln IoU) + (-ln Dice).
- :class:`WeightedLoss`: weights a voxel-wise loss by each voxel's true class; :func:`compute_class_weights`
  derives the weights from class frequencies.
"""

from .combined import CombinedLoss
from .hybrid import HybridLoss
from .ms_ssim import MultiScaleSSIMLoss, compute_ms_ssim
from .seed import CrossEntropyIoUDiceLoss
from .weighted import WeightedLoss, compute_class_weights

__all__ = [
    "CombinedLoss",
    "CrossEntropyIoUDiceLoss",
    "HybridLoss",
    "MultiScaleSSIMLoss",
    "WeightedLoss",
    "compute_class_weights",
    "compute_ms_ssim",
]
