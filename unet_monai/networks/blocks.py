"""Building blocks shared by :class:`~unet_monai.networks.UNetPlusPlus` and :class:`~unet_monai.networks.UNet3Plus`.

Everything here is built from MONAI's layer factories, so one code path serves 2D and 3D and
``norm`` / ``act`` / ``dropout`` take the same ``name`` or ``(name, {args})`` forms as MONAI's
networks (``("batch", {"momentum": 0.01, "eps": 1e-3})``, ``("leakyrelu", {"negative_slope": 0.01})``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool

__all__ = [
    "ConvBlock",
    "check_input",
    "conv_unit",
    "interpolate_to",
    "max_pool",
    "normalize_dropout",
    "validate_features",
    "validate_spatial_dims",
]


def validate_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ValueError saying so."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return int(spatial_dims)


def validate_features(features: Sequence[int], length: int, name: str = "features") -> tuple[int, ...]:
    """Check that ``features`` holds exactly ``length`` positive integers and return them as a tuple."""
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise ValueError(f"{name} must be a sequence of {length} positive integers, got {features!r}.")
    if len(features) != length or not all(isinstance(f, int) and f > 0 for f in features):
        raise ValueError(
            f"{name} must be a sequence of {length} positive integers (one width per level), "
            f"got {tuple(features)!r} of length {len(features)}."
        )
    return tuple(int(f) for f in features)


def normalize_dropout(dropout: float | tuple | str | None) -> float | tuple | str | None:
    """Map a zero dropout rate to ``None`` so that no (costly, no-op) Dropout module is built.

    ``torch.nn.Dropout(p=0.0)`` still draws a Bernoulli mask in training mode, which costs time and
    memory for nothing; MONAI's blocks build it anyway.
    """
    if dropout is None:
        return None
    if isinstance(dropout, (int, float)):
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}.")
        return None if float(dropout) == 0.0 else float(dropout)
    return dropout


def conv_unit(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    act: tuple | str | None,
    norm: tuple | str | None,
    dropout: float | tuple | str | None = None,
    bias: bool = True,
    kernel_size: int = 3,
) -> Convolution:
    """One ``conv -> norm -> act -> dropout`` unit (MONAI ``Convolution`` with ``adn_ordering="NAD"``).

    The convolution is "same"-padded, so the unit keeps the spatial size. A zero ``dropout`` builds no
    Dropout layer (see :func:`normalize_dropout`).
    """
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        act=act,
        norm=norm,
        dropout=normalize_dropout(dropout),
        bias=bias,
        adn_ordering="NAD",
    )


class ConvBlock(nn.Sequential):
    """``num_convs`` stacked :func:`conv_unit` s (default two, as in every U-Net family node).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the block's input.
        out_channels: channels of every unit's output.
        act: activation, a MONAI factory name or ``(name, {args})``.
        norm: normalization, a MONAI factory name or ``(name, {args})``; ``None`` for none.
        dropout: dropout rate (or factory form) applied after the activation.
        dropout_on: which units get the dropout: ``"all"`` (after every conv) or ``"last"`` (only
            after the last one, as in the Keras UNet++ seed's bottleneck and decoder nodes).
        bias: whether the convolutions have a bias.
        num_convs: number of units.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: tuple | str | None,
        norm: tuple | str | None,
        dropout: float | tuple | str | None = None,
        dropout_on: str = "all",
        bias: bool = True,
        num_convs: int = 2,
    ) -> None:
        if dropout_on not in ("all", "last"):
            raise ValueError(f"dropout_on must be 'all' or 'last', got {dropout_on!r}.")
        units = []
        for i in range(num_convs):
            unit_dropout = dropout if (dropout_on == "all" or i == num_convs - 1) else None
            units.append(
                conv_unit(
                    spatial_dims,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    act=act,
                    norm=norm,
                    dropout=unit_dropout,
                    bias=bias,
                )
            )
        super().__init__(*units)


def max_pool(spatial_dims: int, factor: int) -> nn.Module:
    """A ``factor`` x ``factor`` max-pool with stride ``factor`` and ``ceil_mode=True``.

    ``ceil_mode`` keeps every border voxel: a size ``n`` becomes ``ceil(n / factor)``, and pooling by
    ``2**k`` in one step gives the same size as ``k`` successive 2x pools. That is what lets the
    networks accept any input size without padding.
    """
    return Pool[Pool.MAX, spatial_dims](kernel_size=factor, stride=factor, ceil_mode=True)


def interpolate_to(x: torch.Tensor, size: list[int], mode: str) -> torch.Tensor:
    """Resample ``x`` to the spatial ``size`` (``align_corners=False`` for the linear modes).

    For a size that is exactly ``k`` times the input this equals ``scale_factor=k`` (and Keras'
    ``UpSampling2D(interpolation="bilinear")``); for other sizes it maps the input's extent onto the
    output's, which is what the networks need for inputs that are not multiples of 16.
    """
    if list(x.shape[2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def check_input(x: torch.Tensor, spatial_dims: int, in_channels: int, network: str) -> None:
    """Raise a ValueError when ``x`` is not a ``(B, in_channels, *spatial)`` tensor of the right rank."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"{network} with spatial_dims={spatial_dims} expects an input of shape (B, C, "
            + ("H, W" if spatial_dims == 2 else "H, W, D")
            + f") with {spatial_dims + 2} dimensions, got shape {list(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{network} expects {in_channels} input channel(s) (in_channels={in_channels}), "
            f"got an input of shape {list(x.shape)} with {x.shape[1]} channel(s)."
        )
