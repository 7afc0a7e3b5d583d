"""memory_format: the layout a bundle's network is stored in, from its channels_last config id."""

from __future__ import annotations

import pytest
import torch

from unet_monai.bundle import memory_format

from .common import cpu_parser


@pytest.mark.parametrize(
    "channels_last, spatial_dims, expected",
    [
        (True, 2, torch.channels_last),
        (True, 3, torch.channels_last_3d),
        (False, 3, torch.contiguous_format),
        ("true", 3, torch.channels_last_3d),
        ("false", 2, torch.contiguous_format),  # as the command line passes it: not truthy
    ],
)
def test_memory_format(channels_last, spatial_dims, expected):
    assert memory_format(channels_last, spatial_dims) == expected


@pytest.mark.parametrize(
    "channels_last, spatial_dims, match", [("yes please", 3, "channels_last"), (True, 1, "2 or 3")]
)
def test_bad_arguments_name_the_problem(channels_last, spatial_dims, match):
    with pytest.raises(ValueError, match=match):
        memory_format(channels_last, spatial_dims)


@pytest.mark.parametrize("name", ["liver_ct_unet3plus_3d_segmentation", "liver_ct_unetplusplus_3d_segmentation"])
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_3d_bundles_store_the_network_channels_last_on_cpu_unless_switched_off(name, config):
    def first_conv_weight(**overrides: object) -> torch.Tensor:
        network = cpu_parser(name, config, features=[4, 8, 8, 16, 16], **overrides).get_parsed_content("network")
        # the first conv has one input channel, a layout both formats share: take one with more
        return next(m.weight for m in network.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)

    assert first_conv_weight().is_contiguous(memory_format=torch.channels_last_3d)
    off = first_conv_weight(channels_last="false")
    assert off.is_contiguous() and not off.is_contiguous(memory_format=torch.channels_last_3d)
