"""UNet++ and UNet 3+ as MONAI networks (2D and 3D)."""

from .blocks import ConvBlock, conv_unit
from .fold import fold_batch_norm
from .unet3plus import UNet3Plus
from .unetplusplus import UNetPlusPlus

__all__ = ["ConvBlock", "UNet3Plus", "UNetPlusPlus", "conv_unit", "fold_batch_norm"]
