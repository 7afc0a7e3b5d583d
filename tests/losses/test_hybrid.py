"""HybridLoss: equality with its separately computed terms, deep supervision, the CGM BCE term, components, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.losses import DiceLoss, FocalLoss

from unet_monai.losses import HybridLoss, MultiScaleSSIMLoss, WeightedLoss

SPATIAL = {2: (32, 32), 3: (20, 20, 20)}


def _data(dims: int, n_classes: int = 3, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, n_classes, *SPATIAL[dims], generator=g)
    label = torch.randint(0, n_classes, (batch, 1, *SPATIAL[dims]), generator=g).float()
    return logits, label


def _onehot(label: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(label[:, 0].long(), n).movedim(-1, 1).float()


def _separate_terms(logits, label, softmax: bool, onehot_target: bool) -> dict[str, torch.Tensor]:
    """The three terms from MONAI's FocalLoss and DiceLoss and MultiScaleSSIMLoss, each called on its own."""
    n = logits.shape[1]
    target = _onehot(label, n) if onehot_target else label
    to_onehot = not onehot_target
    return {
        "focal": FocalLoss(to_onehot_y=to_onehot, use_softmax=softmax, gamma=2.0)(logits, target),
        "ms_ssim": MultiScaleSSIMLoss(to_onehot_y=to_onehot, softmax=softmax, sigmoid=not softmax)(logits, target),
        "iou": DiceLoss(to_onehot_y=to_onehot, softmax=softmax, sigmoid=not softmax, jaccard=True)(logits, target),
    }


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("softmax", [True, False])
@pytest.mark.parametrize("onehot_target", [True, False])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.3)])
def test_equals_weighted_sum_of_separate_terms(dims, softmax, onehot_target, lambdas):
    logits, label = _data(dims)
    target = _onehot(label, 3) if onehot_target else label
    loss = HybridLoss(
        to_onehot_y=not onehot_target,
        sigmoid=not softmax,
        lambda_focal=lambdas[0],
        lambda_ms_ssim=lambdas[1],
        lambda_iou=lambdas[2],
    )
    total = loss(logits, target)
    expected = _separate_terms(logits, label, softmax, onehot_target)
    components = loss.get_components()
    assert set(components) == {"focal", "ms_ssim", "iou"}
    for name in expected:
        torch.testing.assert_close(components[name], expected[name], atol=1e-6, rtol=1e-6)
    weighted = lambdas[0] * expected["focal"] + lambdas[1] * expected["ms_ssim"] + lambdas[2] * expected["iou"]
    torch.testing.assert_close(total, weighted, atol=1e-6, rtol=1e-6)
    assert all(not c.requires_grad for c in components.values())


@pytest.mark.parametrize("dims", [2, 3])
def test_focal_without_background_uses_the_full_softmax(dims):
    """Background left out after the softmax over all classes (MONAI's FocalLoss would renormalise over 1..C-1)."""
    logits, label = _data(dims, n_classes=2)
    loss = HybridLoss(to_onehot_y=True, include_background=False, lambda_ms_ssim=0, lambda_iou=0)
    value = loss(logits, label)
    p = torch.softmax(logits, 1)[:, 1:]
    t = _onehot(label, 2)[:, 1:]
    by_hand = (-((1 - p) ** 2) * torch.log(p) * t).mean()
    torch.testing.assert_close(value, by_hand, atol=1e-6, rtol=1e-6)
    # MONAI's FocalLoss(include_background=False, use_softmax=True) sees one channel and returns exactly 0
    monai_value = FocalLoss(include_background=False, to_onehot_y=True, use_softmax=True)(logits, label)
    assert monai_value.item() == 0.0 and value.item() > 0.01


def test_include_background_false_for_ms_ssim_and_iou():
    logits, label = _data(2)
    loss = HybridLoss(to_onehot_y=True, include_background=False, lambda_focal=0)
    loss(logits, label)
    components = loss.get_components()
    probs = torch.softmax(logits, 1)
    onehot = _onehot(label, 3)
    torch.testing.assert_close(components["ms_ssim"], MultiScaleSSIMLoss()(probs[:, 1:], onehot[:, 1:]))
    torch.testing.assert_close(components["iou"], DiceLoss(jaccard=True)(probs[:, 1:], onehot[:, 1:]))
    assert components["focal"].item() == 0.0  # skipped, lambda 0


@pytest.mark.parametrize("n_outputs", [4, 5])  # UNet++ and UNet 3+
@pytest.mark.parametrize(
    "mode,weights", [("same", None), ("exp", None), ("two", None), ("same", [1.0, 0.8, 0.6, 0.4, 0.2])]
)
def test_deep_supervision_weighting(n_outputs, mode, weights):
    g = torch.Generator().manual_seed(1)
    outputs = [torch.randn(2, 3, 32, 32, generator=g) for _ in range(n_outputs)]
    label = torch.randint(0, 3, (2, 1, 32, 32), generator=g)
    loss = HybridLoss(to_onehot_y=True, ds_weight_mode=mode, ds_weights=weights)
    expected_w = {
        "same": [1.0] * n_outputs,
        "exp": [1.0, 0.5, 0.25, 0.125, 0.0625][:n_outputs],
        "two": [1.0] + [0.5] * (n_outputs - 1),
    }[mode]
    if weights is not None:
        expected_w = weights[:n_outputs]
    single = HybridLoss(to_onehot_y=True)
    per_output = []
    for out in outputs:
        single(out, label)
        per_output.append(single.get_components())
    total = loss(outputs, label)
    components = loss.get_components()
    for name in ("focal", "ms_ssim", "iou"):
        expected = sum(w * c[name] for w, c in zip(expected_w, per_output))
        torch.testing.assert_close(components[name], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(total, sum(components.values()), atol=1e-6, rtol=1e-6)
    # a tuple is accepted like a list
    torch.testing.assert_close(loss(tuple(outputs), label), total)


def test_deep_supervision_output_at_lower_resolution_uses_resized_target():
    g = torch.Generator().manual_seed(2)
    full = torch.randn(1, 3, 32, 32, generator=g)
    half = torch.randn(1, 3, 16, 16, generator=g)
    label = torch.randint(0, 3, (1, 1, 32, 32), generator=g).float()
    loss = HybridLoss(to_onehot_y=True, win_size=3)
    value = loss([full, half], label)
    small_label = F.interpolate(label, size=(16, 16), mode="nearest-exact")
    expected = loss(full, label) + loss(half, small_label)
    torch.testing.assert_close(value, expected)


def _cls_by_hand(cls: torch.Tensor, present: list[int]) -> float:
    total = 0.0
    for logits, p in zip(cls.tolist(), present):
        for z, t in zip(logits, [1 - p, p]):
            s = 1 / (1 + math.exp(-z))
            total += -(t * math.log(s) + (1 - t) * math.log(1 - s))
    return total / (2 * len(present))


@pytest.mark.parametrize("target_form", ["label_map", "onehot"])
def test_cgm_bce_term_against_hand_computation(target_form):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 3, 32, 32, generator=g)
    label = torch.zeros(3, 1, 32, 32)
    label[1, 0, 5:9, 5:9] = 2  # tumour only
    label[2, 0, 0, 0] = 1  # a single liver voxel
    present = [0, 1, 1]
    cls = torch.tensor([[2.0, -1.0], [0.3, 0.7], [-1.5, 2.5]])
    to_onehot = target_form == "label_map"
    target = label if to_onehot else _onehot(label, 3)
    loss = HybridLoss(to_onehot_y=to_onehot, lambda_cls=0.7)
    total = loss({"seg": logits, "cls": cls}, target)
    components = loss.get_components()
    assert components["cls"].item() == pytest.approx(_cls_by_hand(cls, present), abs=1e-6)
    seg_only = HybridLoss(to_onehot_y=to_onehot)(logits, target)
    torch.testing.assert_close(total, seg_only + 0.7 * components["cls"])
    # with deep supervision the BCE term is added once, not per output
    total_ds = loss({"seg": [logits, logits], "cls": cls}, target)
    torch.testing.assert_close(total_ds, 2 * seg_only + 0.7 * components["cls"])


def test_cgm_presence_with_sigmoid_counts_every_channel():
    """With sigmoid and background included there is no background channel: any positive voxel is foreground."""
    logits = torch.randn(2, 2, 32, 32)
    target = torch.zeros(2, 2, 32, 32)
    target[1, 0, 3, 3] = 1  # sample 1 has a voxel in channel 0 only
    cls = torch.zeros(2, 2)
    loss = HybridLoss(sigmoid=True)
    loss({"seg": logits, "cls": cls.clone()}, target)
    assert loss.get_components()["cls"].item() == pytest.approx(_cls_by_hand(cls, [0, 1]), abs=1e-6)
    # with softmax channel 0 is background, so sample 1 counts as empty; the values differ only through
    # the targets, so compare against the hand computation with other logits
    cls2 = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    softmax_loss = HybridLoss()
    softmax_loss({"seg": logits, "cls": cls2}, target)
    assert softmax_loss.get_components()["cls"].item() == pytest.approx(_cls_by_hand(cls2, [0, 0]), abs=1e-6)


def test_cls_logits_gradient_reaches_the_classifier():
    cls = torch.zeros(2, 2, 1, 1, requires_grad=True)  # a (B, 2, 1, 1) head output is accepted too
    logits, label = _data(2)
    HybridLoss(to_onehot_y=True)({"seg": logits, "cls": cls}, label).backward()
    assert cls.grad is not None and cls.grad.abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(dims, reduction):
    logits, label = _data(dims)
    loss = HybridLoss(to_onehot_y=True, reduction=reduction)
    value = loss({"seg": logits, "cls": torch.zeros(2, 2)}, label)
    c = loss.get_components()
    if reduction == "none":
        assert value.shape == logits.shape
        assert c["ms_ssim"].shape == c["iou"].shape == (2, 3, *[1] * dims)
        assert c["cls"].shape == (2, 1, *[1] * dims)
    else:
        assert value.ndim == 0
    torch.testing.assert_close(value, c["focal"] + c["ms_ssim"] + c["iou"] + c["cls"])
    if reduction == "sum":
        onehot = _onehot(label, 3)
        focal_map = FocalLoss(use_softmax=True, reduction="none")(logits, onehot)
        torch.testing.assert_close(c["focal"], focal_map.flatten(2).mean(2).sum())
        assert c["cls"].item() == pytest.approx(4 * _cls_by_hand(torch.zeros(2, 2), [1, 1]), abs=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("case", ["all_background", "all_foreground", "empty_class"])
def test_finite_values_and_gradients(dims, case):
    logits = torch.zeros(2, 3, *SPATIAL[dims], requires_grad=True)
    label = {"all_background": 0.0, "all_foreground": 1.0, "empty_class": 2.0}[case] * torch.ones(2, 1, *SPATIAL[dims])
    if case == "empty_class":
        label[:, :, :10] = 0  # background and tumour, liver empty
    loss = HybridLoss(to_onehot_y=True)
    value = loss({"seg": [logits, 2 * logits], "cls": torch.zeros(2, 2)}, label)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert all(torch.isfinite(v) for v in loss.get_components().values())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_autocast(dtype):
    logits, label = _data(2)
    logits = logits.to(dtype)
    expected = HybridLoss(to_onehot_y=True)(logits.float(), label)
    value = HybridLoss(to_onehot_y=True)([logits, logits], label)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, 2 * expected, atol=1e-5, rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = HybridLoss(to_onehot_y=True)(logits.float(), label)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, atol=1e-6, rtol=1e-6)


def test_components_before_and_after_forward():
    loss = HybridLoss(to_onehot_y=True, lambda_focal=2.0, lambda_iou=0.5, lambda_cls=0.25)
    assert loss.get_components() == {}
    logits, label = _data(2)
    value = loss({"seg": logits, "cls": torch.randn(2, 2)}, label)
    c = loss.get_components()
    torch.testing.assert_close(value, 2.0 * c["focal"] + c["ms_ssim"] + 0.5 * c["iou"] + 0.25 * c["cls"])
    c["focal"] = None  # the returned dict is a copy
    assert loss.components["focal"] is not None
    # a later call without the classification output drops the "cls" key
    loss(logits, label)
    assert "cls" not in loss.get_components()


def test_bad_arguments_and_inputs_raise():
    logits, label = _data(2)
    loss = HybridLoss(to_onehot_y=True)
    with pytest.raises(ValueError, match="exactly one of sigmoid and softmax"):
        HybridLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="lambda_iou must be a finite number >= 0; got -1"):
        HybridLoss(lambda_iou=-1)
    with pytest.raises(ValueError, match="at least one of lambda_focal"):
        HybridLoss(lambda_focal=0, lambda_ms_ssim=0, lambda_iou=0, lambda_cls=0)
    with pytest.raises(ValueError, match="ds_weight_mode must be one of"):
        HybridLoss(ds_weight_mode="linear")
    with pytest.raises(ValueError, match="ds_weights has 2 values but the network returned 4 outputs"):
        HybridLoss(to_onehot_y=True, ds_weights=[1, 1])([logits] * 4, label)
    with pytest.raises(ValueError, match=r"must have the key 'seg' and optionally 'cls'; got keys \['cls', 'logits'\]"):
        loss({"logits": logits, "cls": torch.zeros(2, 2)}, label)
    with pytest.raises(TypeError, match="non-empty list/tuple of Tensors"):
        loss([], label)
    with pytest.raises(ValueError, match=r"output\['cls'\] must be \(B, 2\) logits .* B = 2; got shape \(2, 3\)"):
        loss({"seg": logits, "cls": torch.zeros(2, 3)}, label)
    with pytest.raises(
        ValueError, match=r"target must have 3 channels like the input \(a label map: pass to_onehot_y=True\)"
    ):
        HybridLoss()(logits, label)
    with pytest.raises(ValueError, match="softmax needs at least 2 output channels"):
        HybridLoss()(torch.randn(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got input \(2, 3, 32, 32\) and target \(2, 1, 32, 32, 1\)"):
        loss(logits, label[..., None])
    with pytest.raises(ValueError, match="reduction='none' needs all deep-supervision outputs at one spatial size"):
        HybridLoss(to_onehot_y=True, reduction="none")([logits, logits[..., :16, :16]], label)


def test_single_channel_sigmoid():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()
    loss = HybridLoss(sigmoid=True)
    total = loss(logits, mask)
    expected = (
        FocalLoss()(logits, mask)
        + MultiScaleSSIMLoss(sigmoid=True)(logits, mask)
        + DiceLoss(sigmoid=True, jaccard=True)(logits, mask)
    )
    torch.testing.assert_close(total, expected, atol=1e-6, rtol=1e-6)


def test_instantiation_from_bundle_config():
    config = {
        "hybrid": {
            "_target_": "unet_monai.losses.HybridLoss",
            "to_onehot_y": True,
            "lambda_cls": 0.5,
            "ds_weight_mode": "exp",
        },
        "ms_ssim": {"_target_": "unet_monai.losses.MultiScaleSSIMLoss", "softmax": True, "win_size": 7},
        "weighted": {
            "_target_": "unet_monai.losses.WeightedLoss",
            "loss": {"_target_": "torch.nn.CrossEntropyLoss", "reduction": "none"},
            "weights": {"0": 1, "1": 50, "2": 70},
        },
    }
    parser = ConfigParser(config)
    hybrid = parser.get_parsed_content("hybrid")
    assert isinstance(hybrid, HybridLoss) and hybrid.lambda_cls == 0.5 and hybrid.ds_weight_mode == "exp"
    ms = parser.get_parsed_content("ms_ssim")
    assert isinstance(ms, MultiScaleSSIMLoss) and ms.win_size == 7
    weighted = parser.get_parsed_content("weighted")
    assert isinstance(weighted, WeightedLoss)
    assert weighted.class_weights.tolist() == [1.0, 50.0, 70.0]


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_iou_is_monai_batch_jaccard(dims):
    """``batch=True``: the IoU term is MONAI's batch Jaccard loss; focal and MS-SSIM do not change."""
    logits, label = _data(dims)
    per_sample, batched = HybridLoss(to_onehot_y=True), HybridLoss(to_onehot_y=True, batch=True)
    per_sample(logits, label)
    batched(logits, label)
    expected = DiceLoss(to_onehot_y=True, softmax=True, jaccard=True, batch=True)(logits, label)
    torch.testing.assert_close(batched.get_components()["iou"], expected)
    for name in ("focal", "ms_ssim"):
        torch.testing.assert_close(batched.get_components()[name], per_sample.get_components()[name])
    # unreduced: the batch IoU broadcasts over the samples, one value per class
    unreduced = HybridLoss(to_onehot_y=True, batch=True, reduction="none", lambda_focal=0, lambda_ms_ssim=0)
    values = unreduced(logits, label)
    assert values.shape == (1, 3) + (1,) * dims
    torch.testing.assert_close(values.mean(), expected)


def test_batch_iou_scores_an_absent_class_over_the_batch():
    """A class missing from one patch but found in the other: per sample, the empty patch costs a full 1 of IoU
    loss for a small false positive there; over the batch, the same prediction costs only its share."""
    target = torch.zeros(2, 1, 16, 16, 16)
    target[0, 0, 4:12, 4:12, 4:12] = 1  # the class in the first patch only
    probs = torch.zeros(2, 2, 16, 16, 16)
    probs[:, 1] = target[:, 0]
    probs[1, 1, 0:2, 0:2, 0:2] = 1.0  # 8 false-positive voxels in the second patch
    probs[:, 0] = 1 - probs[:, 1]
    logits = torch.log(probs.clamp(1e-6, 1))
    kwargs = {"to_onehot_y": True, "include_background": False, "lambda_focal": 0, "lambda_ms_ssim": 0}
    per_sample = HybridLoss(**kwargs)(logits, target)
    batched = HybridLoss(batch=True, **kwargs)(logits, target)
    assert per_sample.item() == pytest.approx(0.5, abs=1e-3)  # (0 + 1) / 2
    assert batched.item() == pytest.approx(8 / 520, abs=1e-3)  # 1 - 512 / (512 + 8)


def test_ms_ssim_skip_empty_is_passed_to_the_ms_ssim_term():
    logits, label = _data(3)
    label[1][label[1] == 2] = 1  # no tumour in the second sample
    loss = HybridLoss(to_onehot_y=True, ms_ssim_skip_empty=True, lambda_focal=0, lambda_iou=0)
    expected = MultiScaleSSIMLoss(to_onehot_y=True, softmax=True, skip_empty=True)(logits, label)
    torch.testing.assert_close(loss(logits, label), expected)
    assert not torch.allclose(expected, MultiScaleSSIMLoss(to_onehot_y=True, softmax=True)(logits, label))
