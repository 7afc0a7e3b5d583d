"""Tests of :class:`unet_monai.networks.UNetPlusPlus`: shapes, heads, pruning, counts, export, validation."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNetPlusPlus

from tests.networks.common import count_parameters, parameters_without_grad, scripted_roundtrip
from unet_monai.networks import UNetPlusPlus
from unet_monai.networks.unetplusplus import KERAS_SEED_CONFIG

SMALL = (4, 8, 8, 16, 16)
SIZES = {2: (32, 24), 3: (16, 16, 8)}
ODD_SIZES = {2: (100, 60), 3: (40, 36, 20)}
MONAI_MATCHED = {
    "features": (32, 32, 64, 128, 256),
    "act": ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
    "norm": ("instance", {"affine": True}),
}


def small_net(spatial_dims: int = 2, **kwargs) -> UNetPlusPlus:
    torch.manual_seed(0)
    kwargs.setdefault("features", SMALL)
    kwargs.setdefault("in_channels", 2)
    kwargs.setdefault("out_channels", 3)
    return UNetPlusPlus(spatial_dims=spatial_dims, **kwargs)


def make_input(spatial_dims: int, size: tuple[int, ...] | None = None, batch: int = 2, channels: int = 2):
    torch.manual_seed(1)
    return torch.randn(batch, channels, *(size or SIZES[spatial_dims]))


def warm_batchnorm(net: UNetPlusPlus, x: torch.Tensor) -> UNetPlusPlus:
    """Give BatchNorm non-trivial running statistics so that eval-mode outputs are not degenerate."""
    net.train()
    with torch.no_grad():
        net(x)
    return net.eval()


def conv_calls(net: torch.nn.Module, fn) -> int:
    """Number of convolution / transposed-convolution calls made while running ``fn()``."""
    calls = []
    handles = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in net.modules()
        if isinstance(m, torch.nn.modules.conv._ConvNd)
    ]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return len(calls)


# ---------------------------------------------------------------------------------------------------------------------
# Output contract
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("deep_supervision", [False, True])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
def test_output_shapes_train_and_eval(spatial_dims, deep_supervision, upsample):
    net = small_net(spatial_dims, deep_supervision=deep_supervision, upsample=upsample)
    x = make_input(spatial_dims)
    expected = (2, 3, *SIZES[spatial_dims])
    out = net.train()(x)
    if deep_supervision:
        assert isinstance(out, list) and len(out) == 4
        assert all(o.shape == expected for o in out)
    else:
        assert isinstance(out, torch.Tensor) and out.shape == expected
    with torch.no_grad():
        out = net.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == expected


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_list_is_final_first(spatial_dims):
    net = small_net(spatial_dims, deep_supervision=True).train()
    x = make_input(spatial_dims)
    out = net(x)
    heads = net.forward_heads(x, 4)  # ascending: heads 1..4
    assert len(out) == len(heads) == 4
    for position, head_index in enumerate([4, 3, 2, 1]):
        torch.testing.assert_close(out[position], heads[head_index - 1], rtol=0, atol=0)
    # position 0 is the final head on X(0,4), computed by `head`, not by a side head
    top = net._top_row(x, 4)
    torch.testing.assert_close(out[0], net.head(top[4]), rtol=0, atol=0)
    assert not torch.allclose(out[0], out[3])


def test_without_deep_supervision_returns_final_head_in_train_and_eval():
    net = small_net(2)
    x = make_input(2)
    for mode in (True, False):
        net.train(mode)
        with torch.no_grad():
            out = net(x)
            torch.testing.assert_close(out, net.head(net._top_row(x, 4)[4]), rtol=0, atol=0)
    assert len(net.side_heads) == 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_every_parameter_gets_a_gradient(spatial_dims, deep_supervision):
    net = small_net(spatial_dims, deep_supervision=deep_supervision, dropout=0.1).train()
    x = make_input(spatial_dims)
    out = net(x)
    outputs = out if isinstance(out, list) else [out]
    torch.manual_seed(2)
    target = torch.randn_like(outputs[0])
    loss = sum(F.mse_loss(o, target) for o in outputs)
    assert parameters_without_grad(net, loss) == []


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_determinism(spatial_dims):
    a, b = small_net(spatial_dims, deep_supervision=True), small_net(spatial_dims, deep_supervision=True)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    x = make_input(spatial_dims)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_deep_supervision_checkpoint_loads_without_deep_supervision():
    with_ds, without_ds = small_net(2, deep_supervision=True), small_net(2, deep_supervision=False)
    result = without_ds.load_state_dict(with_ds.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith("side_heads.") for k in result.unexpected_keys)
    assert torch.equal(without_ds.head.weight, with_ds.head.weight)
    assert count_parameters(with_ds) - count_parameters(without_ds) == 3 * (4 * 3 + 3)


# ---------------------------------------------------------------------------------------------------------------------
# Reference configurations
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["classmethod", "dict"])
def test_keras_seed_count_and_inventory(build):
    if build == "classmethod":
        net = UNetPlusPlus.keras_seed(in_channels=3, out_channels=3, spatial_dims=2)
    else:
        net = UNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=3, **KERAS_SEED_CONFIG)
    assert count_parameters(net) == 8_187_235
    inventory = collections.Counter(type(m).__name__ for m in net.modules())
    assert inventory["Conv2d"] == 31  # 15 nodes x 2 + the 1x1 head
    assert inventory["ConvTranspose2d"] == 10
    assert inventory["BatchNorm2d"] == 30
    assert inventory["LeakyReLU"] == 30
    assert inventory["Dropout"] == 19
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (bn.momentum, bn.eps) == (0.01, 1e-3)
    assert next(m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)).negative_slope == 0.01
    assert {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    assert (net.head.in_channels, net.head.out_channels) == (32, 3)


def test_keras_seed_concat_widths_and_dropout_placement():
    net = UNetPlusPlus.keras_seed()
    concat = {(n.level, n.column): n.block[0].conv.in_channels for n in net.decoder}
    assert concat == {
        (0, 1): 64, (1, 1): 96, (2, 1): 160, (0, 2): 96, (1, 2): 128,
        (0, 3): 128, (3, 1): 512, (2, 2): 288, (1, 3): 192, (0, 4): 160,
    }  # fmt: skip
    widths = {(n.level, n.column): n.block[0].conv.out_channels for n in net.decoder}
    assert widths == {(0, 1): 32, (1, 1): 32, (2, 1): 32, (0, 2): 32, (1, 2): 32, (0, 3): 32,
                      (3, 1): 256, (2, 2): 128, (1, 3): 64, (0, 4): 32}  # fmt: skip
    assert all(n.up.out_channels == widths[(n.level, n.column)] for n in net.decoder)

    def dropouts(block):
        return [sum(isinstance(m, torch.nn.Dropout) for m in unit.modules()) for unit in block]

    assert [dropouts(n.block) for n in net.encoder] == [[1, 1]] * 4 + [[0, 1]]
    assert all(dropouts(n.block) == [0, 1] for n in net.decoder)
    # conv -> norm -> act -> dropout
    assert [type(m).__name__ for m in net.encoder[0].block[0].adn.children()] == ["BatchNorm2d", "LeakyReLU", "Dropout"]


@pytest.mark.parametrize(
    "dropout, placement, expected", [(0.3, "every_conv", 30), (0.3, "keras_seed", 19), (0.0, "every_conv", 0)]
)
def test_dropout_modules(dropout, placement, expected):
    net = small_net(2, dropout=dropout, dropout_placement=placement)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == expected


def test_canonical_widths():
    features = (4, 6, 8, 10, 12)
    net = small_net(2, features=features)
    for node in net.decoder:
        width = features[node.level]
        assert node.block[0].conv.out_channels == width
        assert node.block[0].conv.in_channels == (node.column + 1) * width
        assert (node.up.in_channels, node.up.out_channels) == (features[node.level + 1], width)
    assert [(n.level, n.column) for n in net.decoder] == [
        (0, 1), (1, 1), (0, 2), (2, 1), (1, 2), (0, 3), (3, 1), (2, 2), (1, 3), (0, 4)
    ]  # fmt: skip


@pytest.mark.parametrize("spatial_dims, monai_count", [(2, 2_411_020), (3, None)])
def test_parameter_count_matches_basic_unetplusplus(spatial_dims, monai_count, capsys):
    reference = BasicUNetPlusPlus(spatial_dims=spatial_dims, in_channels=3, out_channels=3)
    capsys.readouterr()  # BasicUNetPlusPlus may print on construction
    if monai_count is not None:
        assert count_parameters(reference) == monai_count
    # BasicUNetPlusPlus always builds the four heads, so the like-for-like network has the side heads
    ours = UNetPlusPlus(spatial_dims, 3, 3, deep_supervision=True, **MONAI_MATCHED)
    assert count_parameters(ours) == count_parameters(reference)
    without_side_heads = UNetPlusPlus(spatial_dims, 3, 3, **MONAI_MATCHED)
    assert count_parameters(without_side_heads) == count_parameters(reference) - 3 * (32 * 3 + 3)


def test_default_3d_count_matches_monai_default():
    reference_count = 6_979_976  # BasicUNetPlusPlus() with its defaults: 3D, in 1, out 2
    ours = UNetPlusPlus(deep_supervision=True, **MONAI_MATCHED)
    assert count_parameters(ours) == reference_count


# ---------------------------------------------------------------------------------------------------------------------
# Deep supervision modes and pruning
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruned_fast_output_equals_full_head(spatial_dims, level):
    net = small_net(spatial_dims, deep_supervision=True, deep_supervision_mode="fast")
    x = make_input(spatial_dims)
    warm_batchnorm(net, x)
    with torch.no_grad():
        full = net.forward_heads(x, 4)
        net.set_prune_level(level)
        pruned = net(x)
    assert pruned.shape == full[level - 1].shape
    assert torch.equal(pruned, full[level - 1])


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruning_skips_work(level):
    net = small_net(2, deep_supervision=True, deep_supervision_mode="fast", prune_level=level).eval()
    x = make_input(2)
    ran = []
    handles = [
        node.register_forward_hook(lambda m, *_: ran.append((m.level, getattr(m, "column", 0))))
        for node in [*net.encoder, *net.decoder]
    ]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    assert sorted(ran) == sorted((i, j) for i in range(5) for j in range(5) if i + j <= level)
    with torch.no_grad():
        calls = conv_calls(net, lambda: net(x))
    # encoder levels 0..L (2 convs each), nodes with i + j <= L (up + 2 convs each), one head
    assert calls == 2 * (level + 1) + 3 * level * (level + 1) // 2 + 1
    with torch.no_grad():
        assert conv_calls(net, lambda: net.train()(x)) == 10 + 30 + 4  # training always runs everything
    if level < 4:
        full = small_net(2, deep_supervision=True, deep_supervision_mode="fast").eval()
        with torch.no_grad():
            assert calls < conv_calls(full, lambda: full(x))


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("spatial_dims, channels_last", [(2, False), (2, True), (3, True)])
def test_accurate_and_fast_modes(level, spatial_dims, channels_last):
    x = make_input(spatial_dims)
    accurate = small_net(spatial_dims, deep_supervision=True, prune_level=level)
    fast = small_net(spatial_dims, deep_supervision=True, prune_level=level, deep_supervision_mode="fast")
    fast.load_state_dict(accurate.state_dict())
    warm_batchnorm(accurate, x)
    warm_batchnorm(fast, x)
    if channels_last:  # the accurate mean is one concatenated 1x1 conv: check it in the bundles' inference format
        memory_format = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
        accurate.to(memory_format=memory_format)
        fast.to(memory_format=memory_format)
        x = x.contiguous(memory_format=memory_format)
    with torch.no_grad():
        heads = accurate.forward_heads(x, level)
        assert len(heads) == level
        torch.testing.assert_close(accurate(x), torch.stack(heads).mean(0))
        assert torch.equal(fast(x), heads[-1])
        if level > 1:
            assert not torch.allclose(accurate(x), fast(x))


# ---------------------------------------------------------------------------------------------------------------------
# Sizes, export, memory format, up-sampling
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
def test_odd_sizes(spatial_dims, upsample):
    net = small_net(spatial_dims, deep_supervision=True, upsample=upsample, in_channels=1, out_channels=2)
    x = make_input(spatial_dims, ODD_SIZES[spatial_dims], batch=1, channels=1)
    expected = (1, 2, *ODD_SIZES[spatial_dims])
    with torch.no_grad():
        assert all(o.shape == expected for o in net.train()(x))
        assert net.eval()(x).shape == expected


@pytest.mark.parametrize(
    "spatial_dims, upsample, level, mode", [(2, "deconv", 2, "accurate"), (3, "nontrainable", 3, "fast")]
)
def test_torchscript_matches_eager(spatial_dims, upsample, level, mode):
    net = small_net(spatial_dims, deep_supervision=True, upsample=upsample, deep_supervision_mode=mode)
    x = make_input(spatial_dims, tuple(s + 3 for s in SIZES[spatial_dims]))
    warm_batchnorm(net, x).set_prune_level(level)
    scripted = scripted_roundtrip(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-6)
        for a, b in zip(scripted.forward_heads(x, 4), net.forward_heads(x, 4)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
@pytest.mark.parametrize("training", [False, True])
def test_channels_last_input(upsample, training):
    net = small_net(2, deep_supervision=True, upsample=upsample)
    x = make_input(2, (33, 26))
    warm_batchnorm(net, x).train(training)
    with torch.no_grad():
        out_contiguous = net(x)
        out_channels_last = net(x.contiguous(memory_format=torch.channels_last))
    if not training:
        out_contiguous, out_channels_last = [out_contiguous], [out_channels_last]
    for a, b in zip(out_contiguous, out_channels_last):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert b.is_contiguous(memory_format=torch.channels_last)  # no op on the way forced a layout change


def test_nontrainable_upsample_path():
    net = small_net(2, features=(4, 4, 8, 16, 16), upsample="nontrainable")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    for node in net.decoder:
        below, width = (4, 4, 8, 16, 16)[node.level + 1], (4, 4, 8, 16, 16)[node.level]
        if below == width:
            assert isinstance(node.up, torch.nn.Identity)
        else:
            assert isinstance(node.up, torch.nn.Conv2d) and node.up.kernel_size == (1, 1)
            assert (node.up.in_channels, node.up.out_channels) == (below, width)
    # the up path of X(1,1) is: 1x1 conv at the coarse resolution, then bilinear (align_corners=False)
    node = next(n for n in net.decoder if (n.level, n.column) == (1, 1))
    torch.manual_seed(3)
    skip, below = torch.randn(1, 4, 9, 7), torch.randn(1, 8, 5, 4)
    net.eval()
    with torch.no_grad():
        expected_up = F.interpolate(node.up(below), size=[9, 7], mode="bilinear", align_corners=False)
        expected = node.block(torch.cat([skip, expected_up], dim=1))
        torch.testing.assert_close(node([skip], below), expected, rtol=0, atol=0)


def test_deconv_crop_matches_reference():
    net = small_net(2).eval()
    node = next(n for n in net.decoder if (n.level, n.column) == (0, 1))
    torch.manual_seed(4)
    skip, below = torch.randn(1, 4, 9, 7), torch.randn(1, 8, 5, 4)
    with torch.no_grad():
        expected = node.block(torch.cat([skip, node.up(below)[:, :, :9, :7]], dim=1))
        torch.testing.assert_close(node([skip], below), expected, rtol=0, atol=0)


def test_no_stdout_on_construction(capsys):
    UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=SMALL, deep_supervision=True)
    UNetPlusPlus.keras_seed(features=SMALL, inner_features=4)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, r"spatial_dims must be 2 or 3, got 1"),
        ({"features": (4, 8, 8, 16)}, r"features must be a sequence of 5 positive integers.*length 4"),
        ({"features": (4, 8, 0, 16, 16)}, r"features must be a sequence of 5 positive integers.*\(4, 8, 0, 16, 16\)"),
        ({"in_channels": 0}, r"in_channels must be a positive integer, got 0"),
        ({"out_channels": 2.5}, r"out_channels must be a positive integer, got 2.5"),
        ({"inner_features": 0}, r"inner_features must be None or a positive integer, got 0"),
        ({"prune_level": 0, "deep_supervision": True}, r"prune_level must be an integer in 1..4, got 0"),
        ({"prune_level": 5, "deep_supervision": True}, r"prune_level must be an integer in 1..4, got 5"),
        ({"prune_level": 2}, r"prune_level=2 needs the side heads.*deep_supervision=True"),
        ({"upsample": "pixelshuffle"}, r"upsample must be one of \('deconv', 'nontrainable'\), got 'pixelshuffle'"),
        ({"dropout_placement": "last"}, r"dropout_placement must be one of \('every_conv', 'keras_seed'\), got 'last'"),
        ({"deep_supervision_mode": "mean"}, r"deep_supervision_mode must be one of \('accurate', 'fast'\), got 'mean'"),
        ({"dropout": 1.5}, r"dropout must be a rate in \[0, 1\), got 1.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"spatial_dims": 2, "features": SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNetPlusPlus(**kwargs)


def test_bad_prune_level_after_construction():
    net = small_net(2, deep_supervision=True)
    with pytest.raises(ValueError, match=r"prune_level must be an integer in 1..4, got 7"):
        net.set_prune_level(7)
    assert net.set_prune_level(3) is net and net.prune_level == 3
    with pytest.raises(ValueError, match=r"prune_level=1 needs the side heads"):
        small_net(2).set_prune_level(1)


@pytest.mark.parametrize(
    "spatial_dims, shape, match",
    [
        (2, (2, 2, 16, 16, 16), r"spatial_dims=2 expects an input of shape \(B, C, H, W\) with 4 dimensions"),
        (3, (2, 2, 16, 16), r"spatial_dims=3 expects an input of shape \(B, C, H, W, D\) with 5 dimensions"),
        (2, (2, 3, 16, 16), r"expects 2 input channel\(s\).*got an input of shape \[2, 3, 16, 16\]"),
    ],
)
def test_bad_input(spatial_dims, shape, match):
    net = small_net(spatial_dims, deep_supervision=True)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))
    with pytest.raises(ValueError, match=match):
        net.forward_heads(torch.zeros(shape))


def test_forward_heads_validation():
    x = make_input(2)
    with pytest.raises(ValueError, match=r"level must be in 1..4, got 5"):
        small_net(2, deep_supervision=True).forward_heads(x, 5)
    with pytest.raises(ValueError, match=r"forward_heads needs the side heads"):
        small_net(2).forward_heads(x, 4)
