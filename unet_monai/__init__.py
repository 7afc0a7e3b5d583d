"""unet-monai: UNet++ and UNet 3+ for MONAI, with their losses, LiTS data pipelines, bundles and a MONAI Label app."""

__version__ = "0.1.0"

__all__ = ["__version__"]
