"""as_bool: flags typed on the monai.bundle command line ("false" arrives as a string) mean what they say."""

from __future__ import annotations

import pytest
import torch

from unet_monai.bundle import compile_network, is_compiled
from unet_monai.handlers import FoldBatchNorm, TrainingCheckpointer
from unet_monai.inferers import AutocastInferer
from unet_monai.utils import as_bool


@pytest.mark.parametrize(
    "value, expected", [(True, True), (False, False), ("true", True), ("False", False), (" FALSE ", False)]
)
def test_bools_and_words(value, expected):
    assert as_bool(value, "flag") is expected


@pytest.mark.parametrize("value", ["no", "0", "", 0, 1, 0.5, None, [True]])
def test_anything_else_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"cpu_bf16 must be true or false, got "):
        as_bool(value, "cpu_bf16")


def test_command_line_false_switches_the_flags_off():
    net = torch.nn.Conv2d(1, 1, 1)
    assert not AutocastInferer(enabled="false").enabled
    assert not FoldBatchNorm(net, enabled="false").enabled
    assert compile_network(net, "false") is net and not is_compiled(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    assert not TrainingCheckpointer("checkpoint.pt", network=net, optimizer=optimizer, resume="false").resume
    with pytest.raises(ValueError, match="enabled must be true or false"):
        AutocastInferer(enabled="off")
