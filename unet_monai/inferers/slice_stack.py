"""2.5D inference: a 2D network applied to every axial slice of a volume, neighbour slices as channels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from unet_monai.data.transforms import slice_neighbours, slice_stack_to_volume

__all__ = ["SliceStackInferer"]


class SliceStackInferer(Inferer):
    """Run a 2D network over every axial slice of a volume, with neighbour slices as channels.

    The 2.5D counterpart of ``SlidingWindowInferer`` for the evaluators and inference bundles: the
    input is a batch of preprocessed volumes ``(B, 1, H, W, D)`` (e.g. from
    :func:`~unet_monai.data.lits_2d_preprocessing`), each volume is cut into
    ``volume_to_slice_stack(volume, num_slices)`` inputs - exactly what
    :class:`LiTSSliceDataset` serves in training - and fed to ``network`` ``sw_batch_size`` slices at
    a time; the per-slice outputs ``(D, C, H, W)`` are put back as ``(B, C, H, W, D)``.

    With ``spatial_size`` set, each stack is resized (bilinear) to it before the network and the
    outputs are resized back (bilinear) to ``(H, W)``; leave it ``None`` when the preprocessing already
    resized the volume (the recommended route: ``Invertd`` then undoes that resize on the output).
    A network returning a list (deep supervision) contributes its first element.

    Args:
        num_slices: odd number of slices per input (as in training).
        sw_batch_size: slices per forward pass.
        spatial_size: optional in-plane network size; ``None`` for no resizing.
        device: device of the output (default: the input's); inputs go to the network's device.

    Example::

        inferer = SliceStackInferer(num_slices=3, sw_batch_size=32)
        logits = inferer(batch["image"], model)  # (1, 1, 256, 256, D) -> (1, C, 256, 256, D)
    """

    def __init__(
        self,
        num_slices: int = 3,
        sw_batch_size: int = 16,
        spatial_size: Sequence[int] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        slice_neighbours([0], 1, num_slices)
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}.")
        self.num_slices = int(num_slices)
        self.sw_batch_size = int(sw_batch_size)
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.device = device

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return ``(B, C, H, W, D)`` network outputs for inputs ``(B, 1, H, W, D)``."""
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"expected volumes of shape (B, 1, H, W, D), got {tuple(inputs.shape)}.")
        params = next(iter(network.parameters()), None) if isinstance(network, torch.nn.Module) else None
        net_device = params.device if params is not None else inputs.device
        out_device = torch.device(self.device) if self.device is not None else inputs.device
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        b, _, h, w, depth = x.shape
        result: torch.Tensor | None = None
        for i in range(b):
            # axial axis first, once per volume: every stack is then a gather of whole contiguous planes and
            # every output a contiguous block, instead of strided reads and writes along D for each slice
            planes = x[i, 0].to(net_device).permute(2, 0, 1).contiguous()  # (D, H, W)
            per_slice: torch.Tensor | None = None  # (D, C, H, W)
            for z0 in range(0, depth, self.sw_batch_size):
                z = np.arange(z0, min(z0 + self.sw_batch_size, depth))
                idx = torch.as_tensor(slice_neighbours(z, depth, self.num_slices), device=planes.device)
                stack = planes[idx]  # (N, num_slices, H, W), as volume_to_slice_stack builds it
                resize = self.spatial_size is not None and tuple(stack.shape[-2:]) != self.spatial_size
                if resize:
                    stack = F.interpolate(stack, size=self.spatial_size, mode="bilinear", align_corners=False)
                out = network(stack, *args, **kwargs)
                if isinstance(out, list | tuple):
                    out = out[0]
                if resize:
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                if per_slice is None:
                    per_slice = torch.empty((depth, *out.shape[1:]), dtype=out.dtype, device=out.device)
                per_slice[z0 : z0 + len(z)] = out
            assert per_slice is not None
            if result is None:
                result = torch.empty((b, per_slice.shape[1], h, w, depth), dtype=per_slice.dtype, device=out_device)
            result[i] = slice_stack_to_volume(per_slice).to(out_device)
        assert result is not None
        return convert_to_dst_type(result, inputs, dtype=result.dtype, device=result.device)[0]
