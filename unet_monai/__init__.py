"""unet-monai: UNet++ and UNet 3+ for MONAI, with their losses, LiTS data pipelines, bundles and a MONAI Label app."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("apps", "bundle", "cli", "data", "handlers", "inferers", "losses", "metrics", "networks", "utils")

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    """Import subpackages on first access, so ``"$import unet_monai"`` in a bundle config is enough."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
