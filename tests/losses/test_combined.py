"""CombinedLoss: named terms summed over deep-supervision outputs, with the terms exposed."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceLoss

from unet_monai.losses import CombinedLoss, WeightedLoss


def _terms():
    return {
        "ce": WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), weights=[1.0, 5.0, 30.0]),
        "dice": DiceLoss(to_onehot_y=True, softmax=True, include_background=False),
    }


@pytest.mark.parametrize("spatial", [(16, 12), (8, 8, 6)])
@pytest.mark.parametrize("ds_weight_mode, expected_weights", [("same", [1, 1, 1]), ("exp", [1, 0.5, 0.25])])
def test_value_is_weighted_sum_over_outputs_and_terms(spatial, ds_weight_mode, expected_weights):
    torch.manual_seed(0)
    terms = _terms()
    loss = CombinedLoss(terms, lambdas={"dice": 0.5}, ds_weight_mode=ds_weight_mode)
    outputs = [torch.randn(2, 3, *spatial) for _ in range(3)]
    target = torch.randint(0, 3, (2, 1, *spatial))
    expected = sum(
        w * (terms["ce"](o, target) + 0.5 * terms["dice"](o, target)) for w, o in zip(expected_weights, outputs)
    )
    assert torch.allclose(loss(outputs, target), expected)
    ce = sum(w * terms["ce"](o, target) for w, o in zip(expected_weights, outputs))
    assert torch.allclose(loss.components["ce"], ce)
    assert torch.allclose(
        loss(outputs[0], target), terms["ce"](outputs[0], target) + 0.5 * terms["dice"](outputs[0], target)
    )


def test_lower_resolution_output_gets_a_resized_target():
    loss = CombinedLoss(_terms())
    target = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    target[..., 4:12, 4:12] = 1
    value = loss([torch.randn(1, 3, 16, 16), torch.randn(1, 3, 8, 8)], target)
    assert torch.isfinite(value)


def test_gradients_reach_every_output():
    outputs = [torch.randn(2, 3, 8, 8, requires_grad=True) for _ in range(4)]
    CombinedLoss(_terms())(outputs, torch.randint(0, 3, (2, 1, 8, 8))).backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outputs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"losses": {}}, "at least one loss"),
        ({"losses": {"ce": torch.nn.CrossEntropyLoss()}, "lambdas": {"dice": 1.0}}, r"\['dice'\] that are not"),
        ({"losses": {"ce": torch.nn.CrossEntropyLoss()}, "lambdas": {"ce": -1.0}}, "'ce' must be a finite number"),
        ({"losses": {"ce": torch.nn.CrossEntropyLoss()}, "ds_weight_mode": "linear"}, "ds_weight_mode must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CombinedLoss(**kwargs)


def test_cgm_output_is_rejected_with_a_pointer_to_hybrid_loss():
    with pytest.raises(ValueError, match="use HybridLoss"):
        CombinedLoss(_terms())({"seg": torch.randn(1, 3, 8, 8), "cls": torch.randn(1, 2)}, torch.zeros(1, 1, 8, 8))
