"""The memory format a bundle's network is stored in, from its ``channels_last`` config id."""

from __future__ import annotations

import torch

from unet_monai.utils.flags import as_bool

__all__ = ["memory_format"]


def memory_format(channels_last: bool | str, spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last`` (2D) or ``torch.channels_last_3d`` (3D) when ``channels_last`` is on, else contiguous.

    Bundles move the network with ``network_def.to(device, memory_format=...)``; the convolutions then give
    their outputs in the same layout, so the inputs need no conversion. On the project's CPUs (two threads)
    channels_last_3d made a training step of the 3D demo networks 1.5x (UNet++, 4 x 48x48x24 patches) and
    1.7x (UNet 3+, 2 patches) faster and their sliding-window inference 1.5x / 1.8x (``docs/benchmarks.md``).

    Args:
        channels_last: the config value; a bool or a ``true`` / ``false`` word (the command line's
            ``--channels_last false`` arrives as the string ``"false"``).
        spatial_dims: 2 or 3.

    Raises:
        ValueError: ``spatial_dims`` other than 2 or 3, or a ``channels_last`` that is no boolean.

    Example::

        "network": "$@network_def.to(@device, memory_format=unet_monai.bundle.memory_format(@channels_last, 3))"
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if not as_bool(channels_last, "channels_last"):
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
