"""MultiScaleSSIMLoss: values and gradients against pytorch-msssim, small inputs, edge cases, AMP, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as reference_ms_ssim
from pytorch_msssim import ssim as reference_ssim

import unet_monai.losses.ms_ssim as ms_ssim_module
from unet_monai.losses import MultiScaleSSIMLoss, compute_ms_ssim
from unet_monai.losses.ms_ssim import MS_SSIM_WEIGHTS, ms_ssim_min_size


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities correlated with a one-hot target, so MS-SSIM is far from 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    # smooth blobs rather than salt-and-pepper labels
    target = F.one_hot(label, shape[1]).movedim(-1, 1).float()
    pool = F.avg_pool2d if len(shape) == 4 else F.avg_pool3d
    target = (pool(target, 5, stride=1, padding=2) > 0.5).float()
    probs = (0.6 * target + 0.4 * torch.rand(shape, generator=g)).clamp(0, 1)
    return probs, target


def _onehot(label: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(label[:, 0].long(), n).movedim(-1, 1).float()


# (shape, win_size): sizes pytorch-msssim accepts (min side > (win - 1) * 16) and 5 scales fit here too
REFERENCE_CASES = [
    ((2, 2, 161, 170), 11),  # odd sides: pooling pads them as pytorch-msssim does
    ((1, 2, 34, 40, 48), 3),
    ((1, 1, 65, 66, 67), 5),
]


@pytest.mark.parametrize("shape,win", REFERENCE_CASES)
def test_matches_pytorch_msssim(shape, win):
    probs, target = _pair(shape)
    ours = MultiScaleSSIMLoss(win_size=win, reduction="none")(probs, target)
    assert ours.shape == (shape[0], shape[1], *([1] * (len(shape) - 2)))
    ref = 1 - reference_ms_ssim(probs, target, data_range=1.0, win_size=win, size_average=False)
    assert 0.05 < ref.min() and ref.max() < 0.95  # a meaningful comparison, not two saturated values
    torch.testing.assert_close(ours.flatten(1).mean(1), ref, atol=1e-5, rtol=0)
    # per class: pytorch-msssim on one channel at a time
    for c in range(shape[1]):
        ref_c = 1 - reference_ms_ssim(
            probs[:, c : c + 1], target[:, c : c + 1], data_range=1.0, win_size=win, size_average=False
        )
        torch.testing.assert_close(ours[:, c].flatten(), ref_c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape,win", REFERENCE_CASES[:2])
def test_gradients_match_pytorch_msssim(shape, win):
    probs, target = _pair(shape, seed=1)
    x_ours = probs.clone().requires_grad_(True)
    x_ref = probs.clone().requires_grad_(True)
    MultiScaleSSIMLoss(win_size=win)(x_ours, target).backward()
    (1 - reference_ms_ssim(x_ref, target, data_range=1.0, win_size=win)).backward()
    scale = x_ref.grad.abs().max()
    torch.testing.assert_close(x_ours.grad / scale, x_ref.grad / scale, atol=1e-4, rtol=0)


def test_activation_and_label_map_match_reference():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 161, 161, generator=g)
    label = torch.randint(0, 3, (1, 1, 161, 161), generator=g)
    ours = MultiScaleSSIMLoss(softmax=True, to_onehot_y=True)(logits, label)
    ref = 1 - reference_ms_ssim(torch.softmax(logits, 1), _onehot(label, 3), data_range=1.0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    ours_sig = MultiScaleSSIMLoss(sigmoid=True)(logits, _onehot(label, 3))
    ref_sig = 1 - reference_ms_ssim(torch.sigmoid(logits), _onehot(label, 3), data_range=1.0)
    torch.testing.assert_close(ours_sig, ref_sig, atol=1e-5, rtol=0)


def test_custom_scale_weights_match_reference():
    probs, target = _pair((2, 2, 40, 40))
    weights = (0.2, 0.5, 0.3)
    ours = MultiScaleSSIMLoss(win_size=3, scale_weights=weights)(probs, target)
    ref = 1 - reference_ms_ssim(probs, target, data_range=1.0, win_size=3, weights=list(weights))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1, 2, 161, 161), (1, 2, 34, 40, 48)])
def test_convolution_and_matrix_paths_agree(shape, monkeypatch):
    """CPU filters short axes by a banded matrix product, long axes (and GPUs) by a depthwise convolution."""
    probs, target = _pair(shape)
    win = 11 if len(shape) == 4 else 3
    values, grads = [], []
    for max_side in (0, 10_000):  # all convolutions, then all matrix products
        monkeypatch.setattr(ms_ssim_module, "_MATMUL_MAX_SIDE", max_side)
        x = probs.clone().requires_grad_(True)
        value = MultiScaleSSIMLoss(win_size=win)(x, target)
        value.backward()
        values.append(value.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[0], values[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("shape", [(1, 2, 161, 161), (2, 3, 64, 64), (1, 2, 20, 24, 28)])
def test_identical_inputs_give_zero(shape):
    probs, _ = _pair(shape)
    assert MultiScaleSSIMLoss(reduction="sum")(probs, probs).item() == 0.0


def test_scale_reduction_for_small_inputs():
    # 64x64 fits 3 scales of window 11 (64, 32, 16; 8 < 11); 96^3 fits 4 (96, 48, 24, 12)
    assert ms_ssim_min_size(11, 5) == 161
    probs, target = _pair((2, 2, 64, 64))
    total = sum(MS_SSIM_WEIGHTS)
    three = [w * total / sum(MS_SSIM_WEIGHTS[:3]) for w in MS_SSIM_WEIGHTS[:3]]
    torch.testing.assert_close(
        compute_ms_ssim(probs, target), compute_ms_ssim(probs, target, scale_weights=three), atol=0, rtol=0
    )
    # the reduced 3-scale computation itself agrees with pytorch-msssim run with those 3 weights (window 3, which
    # it accepts at this size)
    ref = reference_ms_ssim(probs, target, data_range=1.0, win_size=3, weights=three, size_average=False)
    ours = compute_ms_ssim(probs, target, win_size=3, scale_weights=three).mean(1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # a 3D patch of 96^3
    probs3, target3 = _pair((1, 1, 96, 96, 96))
    four = [w * total / sum(MS_SSIM_WEIGHTS[:4]) for w in MS_SSIM_WEIGHTS[:4]]
    torch.testing.assert_close(
        compute_ms_ssim(probs3, target3), compute_ms_ssim(probs3, target3, scale_weights=four), atol=0, rtol=0
    )


def test_single_scale_is_ssim():
    """An input that fits one scale gives SSIM to the power of the weights' total, checked with pytorch-msssim."""
    probs, target = _pair((3, 1, 15, 17))
    ours = compute_ms_ssim(probs, target)[:, 0]
    ref = reference_ssim(probs, target, data_range=1.0, size_average=False, nonnegative_ssim=True)
    torch.testing.assert_close(ours, ref ** sum(MS_SSIM_WEIGHTS), atol=1e-6, rtol=0)


def test_too_small_inputs_raise():
    probs, target = _pair((1, 2, 100, 100))
    with pytest.raises(
        ValueError, match=r"needs every spatial side >= 161 for 5 scale\(s\); got spatial size \(100, 100\)"
    ):
        MultiScaleSSIMLoss(reduce_scales=False)(probs, target)
    small, small_target = _pair((1, 2, 9, 12))
    with pytest.raises(
        ValueError, match=r"needs every spatial side >= 11 for 1 scale\(s\); got spatial size \(9, 12\)"
    ):
        MultiScaleSSIMLoss()(small, small_target)
    # one short side is enough to fail, in 3D too
    thin, thin_target = _pair((1, 2, 64, 64, 8))
    with pytest.raises(ValueError, match=r"got spatial size \(64, 64, 8\)"):
        MultiScaleSSIMLoss()(thin, thin_target)


def _edge_targets(spatial: tuple[int, ...]) -> dict[str, torch.Tensor]:
    empty_tumour = torch.zeros(2, 1, *spatial)
    empty_tumour[:, :, 4:20] = 1  # liver only: class 2 is empty
    return {
        "all_background": torch.zeros(2, 1, *spatial),
        "all_foreground": torch.ones(2, 1, *spatial),
        "empty_class": empty_tumour,
    }


@pytest.mark.parametrize("spatial", [(32, 32), (24, 24, 24)])
@pytest.mark.parametrize("case", ["all_background", "all_foreground", "empty_class"])
@pytest.mark.parametrize("logits_kind", ["constant", "random", "inverse"])
def test_finite_values_and_gradients(spatial, case, logits_kind):
    label = _edge_targets(spatial)[case]
    onehot = _onehot(label, 3)
    if logits_kind == "constant":
        logits = torch.zeros(2, 3, *spatial)
    elif logits_kind == "random":
        logits = torch.randn(2, 3, *spatial, generator=torch.Generator().manual_seed(0))
    else:  # confidently wrong: anti-correlated with the target, negative contrast-structure terms
        logits = 20 * (1 - 2 * onehot)
    logits.requires_grad_(True)
    loss = MultiScaleSSIMLoss(softmax=True, to_onehot_y=True)(logits, label)
    loss.backward()
    assert torch.isfinite(loss)
    assert 0.0 <= loss.item() <= 1.0 + 1e-6
    assert torch.isfinite(logits.grad).all()


def test_negative_terms_are_clipped_not_nan():
    """A prediction anti-correlated with the target has negative mean cs: the term is 0, with zero gradient."""
    target = torch.zeros(1, 1, 48, 48)
    target[..., ::2, :] = 1  # stripes: every window sees edges
    x = (1 - target).clone().requires_grad_(True)
    value = compute_ms_ssim(x, target, win_size=3)
    value.sum().backward()
    assert value.item() == 0.0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("spatial", [(40, 40), (20, 24, 28)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("include_background", [True, False])
def test_reductions_and_include_background(spatial, reduction, include_background):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, *spatial, generator=g)
    label = torch.randint(0, 3, (2, 1, *spatial), generator=g)
    loss = MultiScaleSSIMLoss(
        softmax=True, to_onehot_y=True, include_background=include_background, win_size=3, reduction=reduction
    )(logits, label)
    probs, onehot = torch.softmax(logits, 1), _onehot(label, 3)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    per_class = 1 - compute_ms_ssim(probs, onehot, win_size=3)
    expected = {
        "mean": per_class.mean(),
        "sum": per_class.sum(),
        "none": per_class.view(*per_class.shape, *[1] * len(spatial)),
    }
    torch.testing.assert_close(loss, expected[reduction])


@pytest.mark.parametrize("spatial", [(40, 40), (20, 24, 28)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_skip_empty_leaves_out_classes_absent_from_the_target(spatial, reduction):
    """Class 2 only in sample 0: with skip_empty the pair (1, 2) is left out, the others are as before."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, *spatial, generator=g)
    label = torch.randint(0, 2, (2, 1, *spatial), generator=g)
    label[0, 0, :8, :8] = 2
    kwargs = {"softmax": True, "to_onehot_y": True, "win_size": 3, "reduction": reduction}
    loss = MultiScaleSSIMLoss(skip_empty=True, **kwargs)(logits, label)
    per_class = 1 - compute_ms_ssim(torch.softmax(logits, 1), _onehot(label, 3), win_size=3)
    kept = torch.ones(2, 3, dtype=torch.bool)
    kept[1, 2] = False
    expected = {
        "mean": per_class[kept].mean(),
        "sum": per_class[kept].sum(),
        "none": (per_class * kept).view(2, 3, *[1] * len(spatial)),
    }
    torch.testing.assert_close(loss, expected[reduction])
    assert per_class[1, 2] > 0.5  # what skip_empty avoids: a random prediction against an empty mask


def test_skip_empty_gives_zero_for_all_empty_targets_and_no_gradient_from_them():
    """A uniform 1% probability against an empty mask costs 0.45 of MS-SSIM; skipped, it costs 0."""
    probs = torch.full((1, 1, 48, 48, 24), 0.01, requires_grad=True)
    target = torch.zeros(1, 1, 48, 48, 24)
    assert MultiScaleSSIMLoss()(probs, target).item() == pytest.approx(0.45, abs=0.01)
    skipped = MultiScaleSSIMLoss(skip_empty=True)(probs, target)
    skipped.backward()
    assert skipped.item() == 0.0 and torch.count_nonzero(probs.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    probs, target = _pair((2, 2, 64, 64))
    probs = probs.to(dtype)
    expected = MultiScaleSSIMLoss()(probs.float(), target)
    value = MultiScaleSSIMLoss()(probs, target.to(dtype))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)
    # inside an autocast region the products and convolutions would run in bfloat16 unless the loss turns it off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = MultiScaleSSIMLoss()(probs.float(), target)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, atol=1e-6, rtol=0)


def test_bad_inputs_raise():
    logits = torch.randn(2, 3, 32, 32)
    with pytest.raises(
        ValueError, match=r"target must have 3 channels like the input \(a label map: pass to_onehot_y=True\)"
    ):
        MultiScaleSSIMLoss(softmax=True)(logits, torch.zeros(2, 1, 32, 32))
    bad_label = torch.zeros(2, 1, 32, 32)
    bad_label[0, 0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"label values must lie in \[0, 2\].*got values in \[0, 3\]"):
        MultiScaleSSIMLoss(softmax=True, to_onehot_y=True)(logits, bad_label)
    with pytest.raises(ValueError, match=r"got input \(2, 3, 32, 32\) and target \(2, 1, 16, 16\)"):
        MultiScaleSSIMLoss(to_onehot_y=True)(logits, torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"input must be \(B, C, H, W\) or \(B, C, H, W, D\); got shape \(2, 3, 32\)"):
        MultiScaleSSIMLoss()(torch.randn(2, 3, 32), torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="softmax=True needs at least 2 channels"):
        MultiScaleSSIMLoss(softmax=True)(torch.randn(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="win_size must be a positive odd integer; got 4"):
        MultiScaleSSIMLoss(win_size=4)
    with pytest.raises(ValueError, match="more than one of sigmoid=True, softmax=True"):
        MultiScaleSSIMLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        MultiScaleSSIMLoss(reduction="max")
    with pytest.raises(ValueError, match="scale_weights must be"):
        MultiScaleSSIMLoss(scale_weights=(0.5, -0.5))
    with pytest.raises(ValueError, match=r"inputs must have the same shape; got \(1, 1, 20, 20\) and \(1, 1, 20, 21\)"):
        compute_ms_ssim(torch.rand(1, 1, 20, 20), torch.rand(1, 1, 20, 21))
