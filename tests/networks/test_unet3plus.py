"""Tests of :class:`unet_monai.networks.UNet3Plus`: counts, topology, forward contract, CGM, checkpointing, export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.networks.common import count_parameters, parameters_without_grad, scripted_roundtrip
from unet_monai.networks import UNet3Plus
from unet_monai.networks import unet3plus as unet3plus_module

SMALL = {"features": (4, 8, 8, 16, 16), "cat_channels": 4}
SIZES = {2: (32, 16), 3: (16, 16, 16)}
ODD_SIZES = {2: (100, 60), 3: (40, 36, 20)}
OPTIONS = [(False, False), (True, False), (False, True), (True, True)]  # (deep_supervision, classification_guided)

# reference parameter counts of the paper's 2D network (docs/architectures.md)
REFERENCE_COUNTS = [
    ({"in_channels": 3, "out_channels": 1}, 26_971_777),
    ({"in_channels": 1, "out_channels": 1}, 26_970_625),
    ({"in_channels": 3, "out_channels": 2}, 26_974_658),
    ({"in_channels": 3, "out_channels": 1, "deep_supervision": True}, 26_989_637),
    ({"in_channels": 3, "out_channels": 2, "deep_supervision": True}, 27_010_378),
    ({"in_channels": 3, "out_channels": 1, "deep_supervision": True, "classification_guided": True}, 26_991_687),
]


def small_net(spatial_dims: int = 2, **kwargs) -> UNet3Plus:
    torch.manual_seed(0)
    for key, value in SMALL.items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("in_channels", 2)
    kwargs.setdefault("out_channels", 3)
    return UNet3Plus(spatial_dims=spatial_dims, **kwargs)


def batch(spatial_dims: int, size: tuple[int, ...] | None = None, channels: int = 2, n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, channels, *(size or SIZES[spatial_dims]))


def twin(net: UNet3Plus, **overrides) -> UNet3Plus:
    """A network with ``net``'s configuration changed by ``overrides`` and ``net``'s weights where shared."""
    kwargs = {
        "spatial_dims": net.spatial_dims,
        "in_channels": net.in_channels,
        "out_channels": net.out_channels,
        "features": net.features,
        "cat_channels": net.cat_channels,
        "deep_supervision": net.deep_supervision,
        "classification_guided": net.classification_guided,
    }
    kwargs.update(overrides)
    other = UNet3Plus(**kwargs)
    other.load_state_dict(net.state_dict(), strict=False)
    other.train(net.training)
    return other


class FixedLogits(torch.nn.Module):
    """Stands in for the CGM: returns the same classification logits for every input."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, h5: torch.Tensor) -> torch.Tensor:
        return self.logits


# ---------------------------------------------------------------------------------------------------------------------
# reference counts and structure


@pytest.mark.parametrize("kwargs, expected", REFERENCE_COUNTS)
def test_reference_parameter_counts(kwargs, expected):
    assert count_parameters(UNet3Plus(spatial_dims=2, **kwargs)) == expected


def test_reference_counts_per_block():
    net = UNet3Plus(spatial_dims=2, in_channels=3, out_channels=1)
    assert [count_parameters(block) for block in net.encoder] == [38_976, 221_952, 886_272, 3_542_016, 14_161_920]
    # decoder[0] is d4, ..., decoder[3] is d1
    assert [count_parameters(node) for node in net.decoder] == [2_619_840, 2_140_224, 1_808_064, 1_549_632]
    assert count_parameters(net.head) == 2_881
    assert len(net.side_heads) == 0 and net.cgm is None


def test_defaults_follow_the_paper():
    net = UNet3Plus(spatial_dims=2, in_channels=3, out_channels=1, deep_supervision=True, classification_guided=True)
    assert net.cat_channels == 64
    for node in net.decoder:
        assert node.fuse.conv.in_channels == node.fuse.conv.out_channels == 320
        for branch in [*node.encoder_branches, node.bottom_branch, *node.up_branches]:
            assert branch.conv.conv.out_channels == 64
            assert branch.conv.conv.kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.Dropout) for m in [*net.encoder.modules(), *net.decoder.modules()])
    assert [h.in_channels for h in net.side_heads] == [320, 320, 320, 1024]
    dropout, conv = net.cgm[0], net.cgm[1]
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.5
    assert conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) == (1024, 2)


def test_side_heads_and_cgm_only_when_asked():
    assert len(small_net(deep_supervision=False).side_heads) == 0
    assert len(small_net(deep_supervision=True).side_heads) == 4
    assert small_net(classification_guided=False).cgm is None
    assert small_net(classification_guided=True).cgm is not None


# ---------------------------------------------------------------------------------------------------------------------
# topology, checked against a direct re-implementation with torch.nn.functional


def _capture(modules: list[torch.nn.Module]) -> tuple[list, list]:
    outputs, handles = [], []
    for module in modules:
        handles.append(module.register_forward_hook(lambda mod, args, out: outputs.append(out)))
    return outputs, handles


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_decoder_topology_matches_the_paper_table(spatial_dims):
    net = small_net(spatial_dims).eval()
    x = batch(spatial_dims, (32,) * spatial_dims)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    pool = F.max_pool2d if spatial_dims == 2 else F.max_pool3d
    encoder_maps, handles = _capture(list(net.encoder))
    decoder_maps, more = _capture([node.fuse for node in net.decoder])
    with torch.no_grad():
        net(x)
        for handle in handles + more:
            handle.remove()
        h = encoder_maps  # h1..h5
        d = {4 - k: out for k, out in enumerate(decoder_maps)}  # d4, d3, d2, d1 by level

        def up(t, factor):
            return F.interpolate(t, scale_factor=factor, mode=mode, align_corners=False)

        for k, node in enumerate(net.decoder):
            level = 4 - k
            parts = []
            for j in range(1, level + 1):  # h_j: max-pool by 2**(level - j), h_level as is
                factor = 2 ** (level - j)
                source = pool(h[j - 1], factor, factor) if factor > 1 else h[j - 1]
                parts.append(node.encoder_branches[j - 1].conv(source))
            for j in range(level + 1, 5):  # d_j upsampled; its branch is owned by decoder node d_j
                owner = net.decoder[4 - j]
                parts.append(owner.up_branches[j - level - 1].conv(up(d[j], 2 ** (j - level))))
            parts.append(node.bottom_branch.conv(up(h[4], 2 ** (5 - level))))
            expected = node.fuse(torch.cat(parts, dim=1))
            torch.testing.assert_close(d[level], expected, rtol=1e-5, atol=1e-5)
            assert expected.shape[2:] == h[level - 1].shape[2:]


# ---------------------------------------------------------------------------------------------------------------------
# forward contract


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("deep_supervision, classification_guided", OPTIONS)
def test_output_types_and_shapes(spatial_dims, deep_supervision, classification_guided):
    net = small_net(spatial_dims, deep_supervision=deep_supervision, classification_guided=classification_guided)
    x = batch(spatial_dims)
    expected = (2, 3, *x.shape[2:])
    out = net.train()(x)
    if classification_guided:
        assert isinstance(out, dict) and set(out) == {"seg", "cls"}
        assert out["cls"].shape == (2, 2)
        seg = out["seg"]
    else:
        seg = out
    if deep_supervision:
        assert isinstance(seg, list) and len(seg) == 5
        assert all(o.shape == expected for o in seg)
    else:
        assert isinstance(seg, torch.Tensor) and seg.shape == expected
    with torch.no_grad():
        logits = net.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == expected
    assert logits.min() < 0 < logits.max()  # logits, not probabilities


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_odd_input_sizes(spatial_dims):
    net = small_net(spatial_dims, deep_supervision=True, classification_guided=True, in_channels=1, out_channels=2)
    x = batch(spatial_dims, ODD_SIZES[spatial_dims], channels=1)
    out = net(x)
    assert [o.shape for o in out["seg"]] == [(2, 2, *ODD_SIZES[spatial_dims])] * 5
    assert torch.isfinite(torch.stack(out["seg"])).all()
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 2, *ODD_SIZES[spatial_dims])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deep_supervision_order_final_first(spatial_dims):
    net = small_net(spatial_dims, deep_supervision=True)
    x = batch(spatial_dims, (32,) * spatial_dims)
    side_maps, handles = _capture(list(net.side_heads))
    outputs = net(x)
    for handle in handles:
        handle.remove()
    # position 0 is the final d1 output: the same as the network without deep supervision
    plain = twin(net, deep_supervision=False)
    torch.testing.assert_close(outputs[0], plain(x))
    # positions 1..4 are the heads on d2, d3, d4 and h5 at their native resolution, upsampled
    assert [m.shape[2] for m in side_maps] == [16, 8, 4, 2]
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    for side, output in zip(side_maps, outputs[1:]):
        expected = F.interpolate(side, size=x.shape[2:], mode=mode, align_corners=False)
        torch.testing.assert_close(output, expected)


def test_eval_output_is_the_final_output():
    net = small_net(deep_supervision=True).eval()
    x = batch(2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), twin(net, deep_supervision=False)(x), rtol=0, atol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_parameter_gets_a_gradient(spatial_dims):
    net = small_net(spatial_dims, deep_supervision=True, classification_guided=True, dropout=0.1)
    x = batch(spatial_dims)
    labels = torch.randint(0, 3, (2, 1, *x.shape[2:]))
    out = net(x)
    seg_loss = sum(F.cross_entropy(o, labels[:, 0]) for o in out["seg"])
    present = (labels > 0).flatten(1).any(1).float()
    cls_loss = F.binary_cross_entropy_with_logits(out["cls"], torch.stack([1 - present, present], dim=1))
    assert parameters_without_grad(net, seg_loss + cls_loss) == []


def test_classifier_is_trained_by_its_loss_only_through_cls():
    """The segmentation in training is not gated: its loss does not reach the classifier."""
    net = small_net(classification_guided=True)
    out = net(batch(2))
    missing = parameters_without_grad(net, out["seg"].sum())
    assert missing == ["cgm.1.weight", "cgm.1.bias"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_deterministic_with_a_seed(spatial_dims):
    x = batch(spatial_dims)
    outs = []
    for _ in range(2):
        net = small_net(spatial_dims, deep_supervision=True, classification_guided=True, dropout=0.2)
        torch.manual_seed(5)
        outs.append(net(x))
    torch.testing.assert_close(outs[0]["seg"], outs[1]["seg"], rtol=0, atol=0)
    torch.testing.assert_close(outs[0]["cls"], outs[1]["cls"], rtol=0, atol=0)


def test_classify_matches_the_cls_output():
    net = small_net(classification_guided=True, cgm_dropout=0.0)
    x = batch(2)
    torch.testing.assert_close(net.classify(x), net(x)["cls"])
    with pytest.raises(RuntimeError, match="classification_guided=True"):
        small_net().classify(x)


# ---------------------------------------------------------------------------------------------------------------------
# classification-guided module at inference


def _force(net: UNet3Plus, present: bool) -> None:
    with torch.no_grad():
        net.cgm[1].bias.copy_(torch.tensor([-1e4, 1e4] if present else [1e4, -1e4]))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("out_channels", [1, 2, 3])
def test_cgm_absent_gives_background(spatial_dims, out_channels):
    net = small_net(spatial_dims, classification_guided=True, deep_supervision=True, out_channels=out_channels).eval()
    _force(net, present=False)
    with torch.no_grad():
        logits = net(batch(spatial_dims))
    assert logits.shape == (2, out_channels, *SIZES[spatial_dims])
    assert torch.isfinite(logits).all()
    if out_channels == 1:
        assert (logits < -5).all()
        assert (torch.sigmoid(logits) < 1e-3).all()  # background, not the reference's 0.5 maps
    else:
        assert (logits.argmax(dim=1) == 0).all()
        assert (logits[:, 0:1] > logits[:, 1:]).all()  # strictly, not a tie of equal (e.g. zero) logits
        assert (torch.softmax(logits, dim=1)[:, 0] > 0.999).all()


@pytest.mark.parametrize("out_channels", [1, 3])
def test_cgm_present_gives_the_ungated_output(out_channels):
    net = small_net(classification_guided=True, out_channels=out_channels).eval()
    _force(net, present=True)
    x = batch(2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), twin(net, classification_guided=False)(x), rtol=0, atol=0)


@pytest.mark.parametrize("out_channels", [1, 3])
def test_cgm_gates_each_sample_on_its_own(out_channels):
    net = small_net(classification_guided=True, out_channels=out_channels).eval()
    net.cgm = FixedLogits([[2.0, -1.0], [-1.0, 2.0]])  # sample 0 "absent", sample 1 "present"
    x = batch(2)
    with torch.no_grad():
        gated, ungated = net(x), twin(net, classification_guided=False)(x)
    torch.testing.assert_close(gated[1], ungated[1], rtol=0, atol=0)
    assert not torch.equal(gated[0], ungated[0])
    if out_channels == 1:
        assert (gated[0] == -net.absent_logit).all()
    else:
        assert (gated[0].argmax(dim=0) == 0).all() and (ungated[0].argmax(dim=0) != 0).any()


def test_cgm_does_not_gate_in_training():
    net = small_net(classification_guided=True, cgm_dropout=0.0)
    _force(net, present=False)
    x = batch(2)
    torch.testing.assert_close(net(x)["seg"], twin(net, classification_guided=False)(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# activation checkpointing


def _loss(out) -> torch.Tensor:
    seg = out["seg"] if isinstance(out, dict) else out
    seg = seg if isinstance(seg, list) else [seg]
    loss = sum((o**2).mean() for o in seg)
    return loss + out["cls"].sum() if isinstance(out, dict) else loss


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_checkpointing_gives_the_same_outputs_gradients_and_statistics(spatial_dims, monkeypatch):
    calls = []
    original = unet3plus_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(unet3plus_module, "checkpoint", counting_checkpoint)
    options = {"deep_supervision": True, "classification_guided": True, "dropout": 0.2}
    plain = small_net(spatial_dims, **options)
    ckpt = twin(plain, use_checkpointing=True, dropout=0.2)
    x = batch(spatial_dims, ODD_SIZES[2] if spatial_dims == 2 else (20, 18, 10))
    results = []
    for net in (plain, ckpt):
        torch.manual_seed(3)
        out = net(x)
        net.zero_grad()
        _loss(out).backward()
        results.append((out, {n: p.grad for n, p in net.named_parameters()}, dict(net.named_buffers())))
    assert calls and set(calls) == {False}  # it did checkpoint, non-reentrant
    (out_a, grads_a, buffers_a), (out_b, grads_b, buffers_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads_b, grads_a, rtol=1e-4, atol=1e-5)
    # BatchNorm statistics updated once per step, not again by the recomputation
    torch.testing.assert_close(buffers_b, buffers_a, rtol=1e-5, atol=1e-6)


def test_checkpointing_not_used_in_eval(monkeypatch):
    def failing_checkpoint(*args, **kwargs):
        raise AssertionError("checkpoint called in eval mode")

    monkeypatch.setattr(unet3plus_module, "checkpoint", failing_checkpoint)
    net = small_net(use_checkpointing=True).eval()
    with torch.no_grad():
        assert net(batch(2)).shape == (2, 3, *SIZES[2])


def _saved_bytes(net: UNet3Plus, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors that autograd stores for the backward pass (outside checkpoints)."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(storages.values())


def test_checkpointing_stores_about_half_the_activations():
    """A deterministic proxy of the memory saving (the peak-memory figures are in the class docstring)."""
    net = small_net(features=(8, 16, 32, 64, 128), cat_channels=8, in_channels=1)
    x = batch(2, (64, 64), channels=1)
    full = _saved_bytes(net, x)
    checkpointed = _saved_bytes(twin(net, use_checkpointing=True), x)
    assert checkpointed < 0.6 * full  # 0.50 when written; 1.0 without checkpointing


# ---------------------------------------------------------------------------------------------------------------------
# export and memory format


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("deep_supervision, classification_guided", OPTIONS)
def test_torchscript_matches_eager(spatial_dims, deep_supervision, classification_guided):
    net = small_net(spatial_dims, deep_supervision=deep_supervision, classification_guided=classification_guided)
    net.eval()
    if classification_guided:
        net.cgm = FixedLogits([[2.0, -1.0], [-1.0, 2.0]])  # one gated, one ungated sample
    scripted = scripted_roundtrip(net)
    x = batch(spatial_dims)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_torchscript_training_outputs_match_eager():
    net = small_net(deep_supervision=True, classification_guided=True, cgm_dropout=0.0, use_checkpointing=True)
    scripted = scripted_roundtrip(net)
    scripted.train()
    x = batch(2)
    eager, script = net(x), scripted(x)
    assert set(script) == {"seg", "cls"} and len(script["seg"]) == 5
    torch.testing.assert_close(script["seg"], eager["seg"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(script["cls"], eager["cls"])
    torch.testing.assert_close(scripted.classify(x), net.classify(x))


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_channels_last_input(deep_supervision):
    net = small_net(deep_supervision=deep_supervision, classification_guided=True, cgm_dropout=0.0)
    x = batch(2, (48, 40))
    x_last = x.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    expected = net(x)
    torch.manual_seed(0)
    torch.testing.assert_close(net.to(memory_format=torch.channels_last)(x_last), expected, rtol=1e-4, atol=1e-5)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x_last), net(x), rtol=1e-4, atol=1e-5)


def test_monai_factory_forms():
    net = small_net(
        2,
        act=("leakyrelu", {"negative_slope": 0.1}),
        norm=("instance", {"affine": True}),
        dropout=("dropout", {"p": 0.1}),
        bias=False,
    )
    kinds = {type(m).__name__ for m in [*net.encoder.modules(), *net.decoder.modules()]}
    assert {"LeakyReLU", "InstanceNorm2d", "Dropout"} <= kinds
    assert not kinds & {"BatchNorm2d", "ReLU"}
    convs = [m for m in [*net.encoder.modules(), *net.decoder.modules()] if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    assert net.head.bias is not None
    assert net(batch(2, (64, 32))).shape == (2, 3, 64, 32)


# ---------------------------------------------------------------------------------------------------------------------
# validation and side effects


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, r"spatial_dims must be 2 or 3, got 1"),
        ({"spatial_dims": 4}, r"spatial_dims must be 2 or 3, got 4"),
        ({"features": (4, 8, 8, 16)}, r"features must be a sequence of 5 positive integers.*length 4"),
        ({"features": (4, 8, 8, 16, 0)}, r"features must be a sequence of 5 positive integers"),
        ({"cat_channels": 0}, r"cat_channels must be None \(= features\[0\]\) or a positive integer, got 0"),
        ({"cat_channels": 2.5}, r"cat_channels .* got 2.5"),
        ({"cat_channels": True}, r"cat_channels .* got True"),
        ({"cgm_dropout": 1.0}, r"cgm_dropout must be a rate in \[0, 1\), got 1.0"),
        ({"cgm_dropout": -0.1}, r"cgm_dropout must be a rate in \[0, 1\), got -0.1"),
        ({"dropout": 1.5}, r"dropout must be a rate in \[0, 1\), got 1.5"),
        ({"out_channels": 0}, r"out_channels must be a positive integer, got 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_net(**kwargs)


@pytest.mark.parametrize(
    "spatial_dims, shape, match",
    [
        (
            2,
            (2, 2, 16, 16, 16),
            r"spatial_dims=2 expects an input of shape \(B, C, H, W\).*got shape \[2, 2, 16, 16, 16\]",
        ),
        (3, (2, 2, 16, 16), r"spatial_dims=3 expects an input of shape \(B, C, H, W, D\).*got shape \[2, 2, 16, 16\]"),
        (2, (2, 1, 16, 16), r"expects 2 input channel\(s\).*got an input of shape \[2, 1, 16, 16\] with 1 channel"),
    ],
)
def test_bad_inputs(spatial_dims, shape, match):
    net = small_net(spatial_dims)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_construction_prints_nothing(capsys):
    small_net(deep_supervision=True, classification_guided=True, use_checkpointing=True)
    UNet3Plus(spatial_dims=2, in_channels=1, out_channels=1, features=(2, 2, 2, 2, 2))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
