"""fold_batch_norm: BatchNorm merged into the convolutions, same outputs, memory format kept."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import Convolution
from torch.nn.modules.batchnorm import _BatchNorm

from unet_monai.networks import UNet3Plus, UNetPlusPlus, fold_batch_norm


def _trained(cls, spatial_dims: int, **kwargs) -> torch.nn.Module:
    """A small network whose BatchNorm layers hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    net = cls(spatial_dims=spatial_dims, in_channels=1, out_channels=3, features=(4, 8, 8, 16, 16), **kwargs)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.train()
        for _ in range(3):
            net(torch.rand(2, 1, *([32] * spatial_dims)) * 3 + 1)
    return net.eval()


def _batch_norms(net: torch.nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in net.modules())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("cls", [UNetPlusPlus, UNet3Plus])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_network_computes_the_same_outputs(cls, spatial_dims, channels_last):
    net = _trained(cls, spatial_dims, deep_supervision=True)
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims]
    if channels_last:
        net = net.to(memory_format=fmt)
    x = torch.rand(2, 1, *([32] * spatial_dims)) * 3 + 1
    with torch.no_grad():
        ref = net(x)
    before = _batch_norms(net)
    assert fold_batch_norm(net) == before > 0
    assert _batch_norms(net) == 0
    with torch.no_grad():
        out = net(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    convs = [m.conv for m in net.modules() if isinstance(m, Convolution)]
    assert all(c.bias is not None for c in convs)
    if channels_last:
        assert all(c.weight.is_contiguous(memory_format=fmt) for c in convs)


def test_norms_that_do_not_directly_follow_the_conv_are_left_alone():
    net = torch.nn.Sequential(
        Convolution(2, 1, 4, adn_ordering="AN", norm="batch", act="relu"),  # norm after the activation
        Convolution(2, 4, 4, norm="instance"),  # not a BatchNorm
        Convolution(2, 4, 2, norm=("batch", {"track_running_stats": False})),  # batch statistics in eval
    ).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        ref = net(x)
    assert fold_batch_norm(net) == 0
    with torch.no_grad():
        assert torch.equal(net(x), ref)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 8, 16, 16)))
