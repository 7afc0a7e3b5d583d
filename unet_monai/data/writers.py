"""Image writers for MONAI's ``SaveImage(d)`` that never leave a half-written file."""

from __future__ import annotations

from typing import Any

from monai.config import PathLike
from monai.data import NibabelWriter

from unet_monai.utils.io import atomic_path

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through a temporary file renamed into place.

    Use it as ``SaveImaged(..., writer="unet_monai.data.writers.AtomicNibabelWriter")`` (or the class):
    a crash or kill during the write keeps the previous prediction (or none), never a truncated NIfTI.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
