"""SliceStackInferer: 2.5D inference over whole volumes equals slice-by-slice application."""

from __future__ import annotations

import pytest
import torch

from unet_monai.data import volume_to_slice_stack
from unet_monai.inferers import SliceStackInferer


class _PerSlice(torch.nn.Module):
    """A toy 2D network: 2 output channels from a 1x1 conv over the neighbour channels."""

    def __init__(self, num_slices: int, deep_supervision: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(num_slices, 2, 1)
        self.deep_supervision = deep_supervision

    def forward(self, x):
        y = self.conv(x)
        return [y, y[:, :, ::2, ::2]] if self.deep_supervision else y


@pytest.mark.parametrize("num_slices", [1, 3, 5])
def test_inferer_equals_slice_by_slice_application(num_slices):
    torch.manual_seed(0)
    net = _PerSlice(num_slices).eval()
    volume = torch.rand(2, 1, 16, 12, 7)
    out = SliceStackInferer(num_slices=num_slices, sw_batch_size=3)(volume, net)
    assert out.shape == (2, 2, 16, 12, 7)
    with torch.no_grad():
        for b in range(2):
            stack = volume_to_slice_stack(volume[b], num_slices)
            for z in range(7):
                assert torch.allclose(out[b, ..., z], net(stack[z : z + 1])[0], atol=1e-6)


def test_inferer_resizes_and_takes_the_first_deep_supervision_output():
    net = _PerSlice(3, deep_supervision=True).eval()
    volume = torch.rand(1, 1, 20, 24, 5)
    with torch.no_grad():
        out = SliceStackInferer(num_slices=3, spatial_size=(32, 32))(volume, net)
    assert out.shape == (1, 2, 20, 24, 5)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W, D\)"):
        SliceStackInferer()(torch.rand(1, 2, 8, 8, 3), net)
