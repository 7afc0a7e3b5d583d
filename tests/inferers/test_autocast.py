"""AutocastInferer: the wrapped inferer's network runs in reduced precision, callers get float32."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from unet_monai.inferers import AutocastInferer


class _Net(torch.nn.Module):
    """A conv net that records the dtype of its convolution's output; optionally returns a list."""

    def __init__(self, spatial_dims: int = 2, as_list: bool = False) -> None:
        super().__init__()
        conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
        self.conv = conv(1, 2, 3, padding=1)
        self.as_list = as_list
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return [y, y * 2] if self.as_list else y


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_network_runs_in_bfloat16_and_outputs_are_float32(spatial_dims):
    torch.manual_seed(0)
    net = _Net(spatial_dims)
    x = torch.rand(2, 1, *([16] * spatial_dims))
    out = AutocastInferer(SimpleInferer())(x, net)
    assert net.seen == [torch.bfloat16]
    assert out.dtype == torch.float32 and out.shape == (2, 2, *([16] * spatial_dims))
    ref = net.conv(x)
    assert not torch.equal(out, ref)  # really computed in bfloat16 ...
    assert torch.allclose(out, ref, atol=2e-2, rtol=2e-2)  # ... to bfloat16 accuracy


def test_disabled_or_other_device_type_is_a_pass_through():
    torch.manual_seed(0)
    net = _Net()
    x = torch.rand(1, 1, 8, 8)
    for inferer in (AutocastInferer(enabled=False), AutocastInferer(device_type="cuda")):
        out = inferer(x, net)
        assert net.seen[-1] == torch.float32
        assert torch.equal(out, net.conv(x))


def test_training_through_the_inferer_keeps_float32_weights_and_gradients():
    torch.manual_seed(0)
    net = _Net(as_list=True)
    x = torch.rand(2, 1, 8, 8)
    outputs = AutocastInferer(device_type="cpu")(x, net)  # deep supervision: a list
    assert isinstance(outputs, list) and [o.dtype for o in outputs] == [torch.float32] * 2
    sum(o.square().mean() for o in outputs).backward()
    assert net.conv.weight.dtype == torch.float32 and net.conv.weight.grad.dtype == torch.float32
    assert torch.isfinite(net.conv.weight.grad).all() and net.conv.weight.grad.abs().sum() > 0


def test_wraps_sliding_window_inference():
    torch.manual_seed(0)
    net = _Net(spatial_dims=3).eval()
    x = torch.rand(1, 1, 20, 20, 12)
    inner = SlidingWindowInferer(roi_size=(16, 16, 8), sw_batch_size=2, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        out = AutocastInferer(inner)(x, net)
        ref = inner(x, net)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (1, 2, 20, 20, 12)
    assert set(net.seen) == {torch.bfloat16, torch.float32}
    assert torch.allclose(out, ref, atol=2e-2, rtol=2e-2)


def test_float16_dtype_by_name_and_repr():
    inferer = AutocastInferer(dtype="float16", device_type="cpu")
    assert inferer.dtype == torch.float16
    assert "float16" in repr(inferer) and "SimpleInferer" in repr(inferer)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dtype": "float64"}, ValueError, "dtype must be one of"),
        ({"dtype": torch.float32}, ValueError, "dtype must be torch.bfloat16 or torch.float16"),
        ({"inferer": 3}, TypeError, "inferer must be a callable inferer, got int"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutocastInferer(**kwargs)
