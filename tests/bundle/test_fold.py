"""fold_as_configured: a bundle network taken out of its config is folded as the config's handler would."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from torch.nn.modules.batchnorm import _BatchNorm

from unet_monai.bundle import fold_as_configured
from unet_monai.networks import UNetPlusPlus


def _net() -> torch.nn.Module:
    return UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 8, 16, 16)).train()


@pytest.mark.parametrize(
    "config, folded", [({"fold_batch_norm": True}, 30), ({"fold_batch_norm": "false"}, 0), ({}, 0)]
)
def test_folds_only_when_the_config_says_so(config, folded):
    net = _net()
    before = sum(isinstance(m, _BatchNorm) for m in net.modules())
    assert fold_as_configured(ConfigParser(config), net) == folded
    assert sum(isinstance(m, _BatchNorm) for m in net.modules()) == before - folded
    assert net.training == (folded == 0)  # folding puts the network in eval mode; no folding leaves it


def test_a_bad_flag_is_named():
    with pytest.raises(ValueError, match="fold_batch_norm must be true or false, got 'yes'"):
        fold_as_configured(ConfigParser({"fold_batch_norm": "yes"}), _net())
