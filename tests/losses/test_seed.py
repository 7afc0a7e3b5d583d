"""CrossEntropyIoUDiceLoss: hand-computed values, the seed's Keras formula, WeightedLoss, deep supervision, AMP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.losses import DeepSupervisionLoss

from unet_monai.losses import CrossEntropyIoUDiceLoss, WeightedLoss

SEED_WEIGHTS = {0: 1.0, 1: 50.0, 2: 70.0}
LN2, LN3 = math.log(2.0), math.log(3.0)


def _hand_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 1x3 images, 3 classes, logits with simple softmax values.

    Sample 0: pixel classes 0, 1, 2 with probabilities (1/2, 1/4, 1/4), (1/4, 1/2, 1/4), (1/8, 1/8, 3/4).
    Sample 1: every pixel class 0, uniform probabilities 1/3.
    """
    logits = torch.zeros(2, 3, 1, 3)
    logits[0, 0, 0, 0] = LN2
    logits[0, 1, 0, 1] = LN2
    logits[0, 2, 0, 2] = math.log(6.0)
    label = torch.tensor([[[[0, 1, 2]]], [[[0, 0, 0]]]], dtype=torch.float32)
    return logits, label


# Hand computation (see _hand_batch):
# sample 0: CE = ln 2, ln 2, ln(4/3); I = 1/2 + 1/2 + 3/4 = 7/4, S = 3 + 3 = 6,
#           IoU = (7/4 + 1) / (6 - 7/4 + 1) = 11/21, Dice = (7/2 + 1) / (6 + 1) = 9/14
# sample 1: CE = ln 3 (x3);       I = 1, S = 6, IoU = 2/6 = 1/3, Dice = 3/7
# L_iou = -ln((11/21 + 1/3) / 2) = -ln(3/7),  L_dice = -ln((9/14 + 3/7) / 2) = -ln(15/28)
CE = [LN2, LN2, math.log(4 / 3), LN3, LN3, LN3]
L_IOU, L_DICE = -math.log(3 / 7), -math.log(15 / 28)


def test_value_by_hand():
    logits, label = _hand_batch()
    loss = CrossEntropyIoUDiceLoss(to_onehot_y=True)
    value = loss(logits, label)
    expected = sum(CE) / 6 + L_IOU + L_DICE
    assert value.dtype == torch.float32
    assert math.isclose(float(value), expected, rel_tol=1e-6)
    parts = loss.get_components()
    assert math.isclose(float(parts["ce"]), sum(CE) / 6, rel_tol=1e-6)
    assert math.isclose(float(parts["iou"]), L_IOU, rel_tol=1e-6)
    assert math.isclose(float(parts["dice"]), L_DICE, rel_tol=1e-6)


def test_seed_class_weights_by_hand():
    """WeightedLoss(..., {0: 1, 1: 50, 2: 70}) = mean(w CE) + mean(w) (L_iou + L_dice): the seed's weighting."""
    logits, label = _hand_batch()
    loss = WeightedLoss(CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none"), SEED_WEIGHTS)
    w = [1.0, 50.0, 70.0, 1.0, 1.0, 1.0]
    mean_w = sum(w) / 6  # 124 / 6
    expected = sum(wi * ce for wi, ce in zip(w, CE)) / 6 + mean_w * (L_IOU + L_DICE)
    assert math.isclose(float(loss(logits, label)), expected, rel_tol=1e-6)
    # the weights scale the overlap terms but do not enter the ratios: a uniform weight map changes nothing
    uniform = WeightedLoss(CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none"), [1.0, 1.0, 1.0])
    assert math.isclose(float(uniform(logits, label)), sum(CE) / 6 + L_IOU + L_DICE, rel_tol=1e-6)


def test_per_class_and_foreground_variants_by_hand():
    logits, label = _hand_batch()
    logits, label = logits[:1], label[:1]
    # per class (sample 0): class 0 and 1: I = 1/2, S = 1 + 7/8; class 2: I = 3/4, S = 1 + 5/4
    iou = [(0.5 + 1) / (1.875 - 0.5 + 1)] * 2 + [(0.75 + 1) / (2.25 - 0.75 + 1)]
    dice = [(1 + 1) / (1.875 + 1)] * 2 + [(1.5 + 1) / (2.25 + 1)]
    per_class = CrossEntropyIoUDiceLoss(to_onehot_y=True, pool_classes=False, lambda_ce=0.0)
    assert math.isclose(
        float(per_class(logits, label)), -math.log(np.mean(iou)) - math.log(np.mean(dice)), rel_tol=1e-6
    )
    # foreground pooled: classes 1 and 2 only, I = 1/2 + 3/4, sum t = 2, sum p = 1/2 + 3/4 + 7/8 (per pixel)
    i, s = 1.25, 2 + 2.125
    fg = CrossEntropyIoUDiceLoss(to_onehot_y=True, include_background=False, lambda_ce=0.0)
    expected = -math.log((i + 1) / (s - i + 1)) - math.log((2 * i + 1) / (s + 1))
    assert math.isclose(float(fg(logits, label)), expected, rel_tol=1e-6)


def _keras_seed(y_true: np.ndarray, y_pred: np.ndarray, weights: list[float]) -> float:
    """A numpy transcription of the seed's Keras code (channels last), with the class weights by index."""
    eps = 1e-7
    p = y_pred / y_pred.sum(-1, keepdims=True)
    cce = -(y_true * np.log(np.clip(p, eps, 1 - eps))).sum(-1)  # (B, H, W)
    inter = (y_true * y_pred).sum(axis=(1, 2, 3))
    iou = ((inter + 1) / (y_true.sum(axis=(1, 2, 3)) + y_pred.sum(axis=(1, 2, 3)) - inter + 1)).mean()
    dice = ((2 * inter + 1) / (y_true.sum(axis=(1, 2, 3)) + y_pred.sum(axis=(1, 2, 3)) + 1)).mean()
    per_pixel = cce - np.log(iou) - np.log(dice)
    weight_map = np.asarray(weights)[y_true.argmax(-1)]
    return float((per_pixel * weight_map).mean())  # Keras' default "sum over batch size" reduction


@pytest.mark.parametrize("softmax", [True, False])
def test_matches_the_seed_keras_formula(softmax):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3, 12, 10, generator=g, dtype=torch.float64)
    label = torch.randint(0, 3, (3, 1, 12, 10), generator=g)
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(label[:, 0], 3).numpy().astype(np.float64)
    expected = _keras_seed(onehot, probs.movedim(1, -1).numpy(), [1.0, 50.0, 70.0])
    inner = CrossEntropyIoUDiceLoss(to_onehot_y=True, softmax=softmax, reduction="none")
    value = WeightedLoss(inner, SEED_WEIGHTS)(logits if softmax else probs, label)
    assert math.isclose(float(value), expected, rel_tol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_reductions_and_onehot_target(dims):
    g = torch.Generator().manual_seed(1)
    spatial = (8, 9) if dims == 2 else (4, 5, 6)
    logits = torch.randn(2, 3, *spatial, generator=g)
    label = torch.randint(0, 3, (2, 1, *spatial), generator=g)
    onehot = F.one_hot(label[:, 0], 3).movedim(-1, 1).float()
    full = CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none")(logits, label)
    assert full.shape == (2, 1, *spatial) and full.dtype == torch.float32
    mean = CrossEntropyIoUDiceLoss()(logits, onehot)
    total = CrossEntropyIoUDiceLoss(reduction="sum")(logits, onehot)
    assert torch.allclose(mean, full.mean()) and torch.allclose(total, full.sum(), rtol=1e-5)


def test_lambdas_and_components():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    label = torch.randint(0, 3, (2, 1, 16, 16), generator=g)
    loss = CrossEntropyIoUDiceLoss(to_onehot_y=True, lambda_ce=0.5, lambda_iou=2.0, lambda_dice=0.0)
    value = loss(logits, label)
    parts = loss.get_components()
    assert torch.allclose(value, 0.5 * parts["ce"] + 2.0 * parts["iou"])
    assert torch.allclose(parts["ce"], F.cross_entropy(logits, label[:, 0]))


def test_perfect_prediction_gives_almost_zero_and_gradients_are_finite():
    label = torch.randint(0, 3, (2, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    logits = 30.0 * F.one_hot(label[:, 0], 3).movedim(-1, 1).float()
    assert float(CrossEntropyIoUDiceLoss(to_onehot_y=True)(logits, label)) < 1e-6
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    WeightedLoss(CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none"), SEED_WEIGHTS)(x, label).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode,weights", [("same", [1.0, 1.0]), ("exp", [1.0, 0.5])])
def test_deep_supervision_list(mode, weights):
    g = torch.Generator().manual_seed(4)
    label = torch.randint(0, 3, (2, 1, 16, 16), generator=g).float()
    outputs = [torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 8, 8, generator=g)]
    loss = CrossEntropyIoUDiceLoss(to_onehot_y=True, ds_weight_mode=mode)
    single = CrossEntropyIoUDiceLoss(to_onehot_y=True)
    small = F.interpolate(label, size=(8, 8), mode="nearest-exact")
    expected = weights[0] * single(outputs[0], label) + weights[1] * single(outputs[1], small)
    assert torch.allclose(loss(outputs, label), expected)
    # class weights with deep supervision: MONAI's DeepSupervisionLoss around WeightedLoss
    weighted = WeightedLoss(CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none"), SEED_WEIGHTS)
    ds = DeepSupervisionLoss(weighted, weight_mode=mode)
    manual = weights[0] * weighted(outputs[0], label) + weights[1] * weighted(outputs[1], small)
    assert torch.allclose(ds(outputs, label), manual)


def test_float32_under_autocast():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    label = torch.randint(0, 3, (2, 1, 16, 16), generator=g)
    loss = CrossEntropyIoUDiceLoss(to_onehot_y=True)
    reference = loss(logits, label)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), label)
    assert value.dtype == torch.float32
    assert torch.allclose(value, reference, rtol=2e-2)


def test_bundle_config():
    parser = ConfigParser(
        {
            "loss": {
                "_target_": "unet_monai.losses.WeightedLoss",
                "loss": {
                    "_target_": "unet_monai.losses.CrossEntropyIoUDiceLoss",
                    "to_onehot_y": True,
                    "reduction": "none",
                },
                "weights": {"0": 1, "1": 50, "2": 70},
            }
        }
    )
    loss = parser.get_parsed_content("loss")
    logits, label = _hand_batch()
    assert isinstance(loss.loss, CrossEntropyIoUDiceLoss)
    assert math.isclose(float(loss(logits, label)), float(WeightedLoss(loss.loss, SEED_WEIGHTS)(logits, label)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lambda_ce": -1.0}, "lambda_ce"),
        ({"lambda_ce": 0.0, "lambda_iou": 0.0, "lambda_dice": 0.0}, "at least one"),
        ({"smooth": -1.0}, "smooth"),
        ({"reduction": "max"}, "reduction"),
        ({"ds_weight_mode": "linear"}, "ds_weight_mode"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyIoUDiceLoss(**kwargs)


def test_bad_inputs():
    loss = CrossEntropyIoUDiceLoss(to_onehot_y=True)
    with pytest.raises(ValueError, match="at least 2 output channels"):
        loss(torch.randn(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        loss(torch.randn(1, 3, 8, 8), torch.full((1, 1, 8, 8), 3.0))
    with pytest.raises(ValueError, match="got input"):
        loss(torch.randn(1, 3, 8, 8), torch.zeros(1, 1, 8, 7))
    with pytest.raises(TypeError, match="list/tuple"):
        loss([], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one spatial size"):
        CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none")(
            [torch.randn(1, 3, 8, 8), torch.randn(1, 3, 4, 4)], torch.zeros(1, 1, 8, 8)
        )
