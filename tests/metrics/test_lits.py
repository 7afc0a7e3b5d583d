"""LiTS metrics: hand-checkable values, the empty-region conventions, mm spacing, the pooled Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unet_monai.metrics import LITS_METRICS, LITS_REGIONS, global_dice, lits_case_metrics, region_metrics


def cube(shape=(12, 12, 10), lo=(2, 2, 2), hi=(6, 6, 6)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_identical_masks_are_perfect():
    values, counts = region_metrics(cube(), cube(), spacing=(0.7, 0.7, 2.5))
    assert values == {"dice": 1.0, "voe": 0.0, "rvd": 0.0, "assd": 0.0, "hd95": 0.0}
    assert (counts.pred, counts.ref, counts.intersection) == (64, 64, 64)


def test_overlap_values_by_hand():
    """Reference 4x4x4 = 64 voxels; prediction the same cube plus one 4x4 layer: 80 voxels, 64 shared."""
    pred = cube(hi=(7, 6, 6))
    values, _ = region_metrics(pred, cube())
    assert values["dice"] == pytest.approx(2 * 64 / (80 + 64))
    assert values["voe"] == pytest.approx(1 - 64 / 80)
    assert values["rvd"] == pytest.approx((80 - 64) / 64)
    under, _ = region_metrics(cube(), pred)
    assert under["rvd"] == pytest.approx((64 - 80) / 80)  # signed: under-segmentation is negative


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.7, 3.0)])
def test_distances_in_mm(spacing):
    """Two one-voxel-thick planes 3 voxels apart along x: every surface distance is 3 * spacing_x mm."""
    ref, pred = np.zeros((10, 8, 6), bool), np.zeros((10, 8, 6), bool)
    ref[2], pred[5] = True, True
    values, _ = region_metrics(pred, ref, spacing=spacing)
    assert values["hd95"] == pytest.approx(3 * spacing[0])
    assert values["assd"] == pytest.approx(3 * spacing[0])
    assert values["dice"] == 0.0 and values["voe"] == 1.0 and values["rvd"] == 0.0


def test_empty_regions():
    empty = np.zeros((8, 8, 8), bool)
    both, _ = region_metrics(empty, empty)
    assert both == {"dice": 1.0, "voe": 0.0, "rvd": 0.0, "assd": 0.0, "hd95": 0.0}
    missed, _ = region_metrics(empty, cube((8, 8, 8)))
    assert missed["dice"] == 0.0 and missed["voe"] == 1.0 and missed["rvd"] == -1.0
    assert math.isnan(missed["assd"]) and math.isnan(missed["hd95"])
    false_alarm, _ = region_metrics(cube((8, 8, 8)), empty)
    assert false_alarm["dice"] == 0.0 and math.isnan(false_alarm["rvd"]) and math.isnan(false_alarm["hd95"])


def test_case_metrics_regions_and_global_dice():
    ref = np.zeros((12, 12, 10), np.uint8)
    ref[cube()] = 1
    ref[3:5, 3:5, 3:5] = 2
    pred = ref.copy()
    pred[3:5, 3:5, 3:5] = 1  # the tumour called liver
    values, counts = lits_case_metrics(pred, ref)
    assert list(values) == [f"{m}_{r}" for m in LITS_METRICS for r in LITS_REGIONS]
    assert values["dice_liver_tumour"] == 1.0  # the whole liver is right
    assert values["dice_tumour"] == 0.0
    assert values["dice_liver"] == pytest.approx(2 * 56 / (64 + 56))
    # pooled over cases: a perfect small case and a poor large one
    small = {"liver": counts["liver"], "tumour": counts["tumour"], "liver_tumour": counts["liver_tumour"]}
    big_ref = np.zeros((20, 20, 20), np.uint8)
    big_ref[:10] = 1
    big_pred = np.zeros_like(big_ref)
    big_pred[5:15] = 1
    _, big = lits_case_metrics(big_pred, big_ref)
    pooled = global_dice([small, big])
    expected = 2 * (56 + 2000) / ((64 + 56) + (4000 + 4000))
    assert pooled["liver"] == pytest.approx(expected)
    assert pooled["tumour"] == 0.0  # 8 reference voxels, never predicted


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        region_metrics(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))
