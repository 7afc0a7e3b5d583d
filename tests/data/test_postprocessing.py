"""Opening of predicted label maps with a ball in mm: the reference opening, bridges cut, labels kept, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, KeepLargestConnectedComponentd
from scipy import ndimage

from unet_monai.data import OpenForeground, OpenForegroundd, open_foreground


def _ball_footprint(radius: float, spacing) -> np.ndarray:
    """Voxel offsets within ``radius`` mm: the structuring element the opening must behave as."""
    reach = [int(radius // s) for s in spacing]
    grids = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(reach, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius**2


def _reference_opening(foreground: np.ndarray, radius: float, spacing) -> np.ndarray:
    footprint = _ball_footprint(radius, spacing)
    # border_value=1: outside the image is not background, as for a distance transform
    eroded = ndimage.binary_erosion(foreground, footprint, border_value=1)
    return ndimage.binary_dilation(eroded, footprint)


def _blobs(spatial_dims: int, seed: int = 0) -> np.ndarray:
    """Random smooth blobs: a foreground with necks, protrusions and a few thin parts."""
    shape = (40, 36, 24)[:spatial_dims]
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(noise, 2.0) > 0.05


def _organ_with_bridge(spacing=(1.0, 1.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """A large ellipsoid 'organ' (label 1, a 'tumour' 2 inside) joined to a neighbour blob by a 2 mm bridge."""
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip((64, 48, 20), spacing)], indexing="ij")
    organ = ((grid[0] - 20) / 14) ** 2 + ((grid[1] - 24) / 14) ** 2 + ((grid[2] - 20) / 14) ** 2 <= 1
    neighbour = ((grid[0] - 52) / 6) ** 2 + ((grid[1] - 24) / 6) ** 2 + ((grid[2] - 20) / 6) ** 2 <= 1
    bridge = (grid[0] >= 30) & (grid[0] <= 48) & (np.abs(grid[1] - 24) <= 1) & (np.abs(grid[2] - 20) <= 1)
    labels = np.zeros(organ.shape, np.uint8)
    labels[organ | neighbour | bridge] = 1
    tumour = ((grid[0] - 20) ** 2 + (grid[1] - 24) ** 2 + (grid[2] - 20) ** 2) <= 16
    labels[tumour] = 2
    return labels, organ | tumour


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("radius", [1.5, 3.0])
def test_matches_the_opening_with_a_ball_of_the_radius_in_mm(spatial_dims, radius):
    spacing = (0.8, 1.0, 2.5)[:spatial_dims]
    for seed in range(3):
        foreground = _blobs(spatial_dims, seed)
        labels = torch.from_numpy(foreground.astype(np.uint8))[None]
        opened = open_foreground(labels, radius, spacing)
        expected = _reference_opening(foreground, radius, spacing)
        assert expected.sum() > 0
        np.testing.assert_array_equal(opened[0].numpy() > 0, expected)


def test_cuts_the_bridge_so_the_largest_component_drops_the_neighbour():
    labels, organ = _organ_with_bridge()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    post = Compose(
        [
            OpenForegroundd("pred", radius_mm=3.0),
            KeepLargestConnectedComponentd("pred", applied_labels=[1, 2], independent=False),
        ]
    )
    plain = KeepLargestConnectedComponentd("pred", applied_labels=[1, 2], independent=False)
    data = {"pred": MetaTensor(torch.from_numpy(labels)[None], affine=affine)}
    kept_without = plain(dict(data))["pred"][0].numpy()
    kept = post(dict(data))["pred"][0].numpy()
    assert (kept_without > 0).sum() == (labels > 0).sum()  # joined by the bridge: one component, all kept
    assert not kept[40:, :, :].any()  # bridge and neighbour gone
    dice = 2 * ((kept > 0) & organ).sum() / ((kept > 0).sum() + organ.sum())
    assert dice > 0.97  # the organ itself is left (only its surface voxels' corners may go)
    assert ((kept > 0) & ~(labels > 0)).sum() == 0  # nothing added
    np.testing.assert_array_equal(kept[labels == 2], 2)  # the tumour stays a tumour
    assert set(np.unique(kept)) == {0, 1, 2}


def test_spacing_comes_from_the_affine_and_metadata_is_kept():
    labels, _ = _organ_with_bridge(spacing=(1.0, 1.0, 2.0))
    affine = torch.tensor([[0.0, -1.0, 0.0, 5.0], [1.0, 0.0, 0.0, -3.0], [0.0, 0.0, 2.0, 7.0], [0, 0, 0, 1]])
    meta = MetaTensor(torch.from_numpy(labels)[None], affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    opened = OpenForeground(3.0)(meta)
    explicit = open_foreground(torch.from_numpy(labels)[None], 3.0, spacing=(1.0, 1.0, 2.0))
    assert isinstance(opened, MetaTensor)
    torch.testing.assert_close(opened.affine, meta.affine)
    assert opened.meta["filename_or_obj"] == "case.nii.gz"
    assert opened.dtype == meta.dtype
    torch.testing.assert_close(opened.as_tensor(), explicit)
    assert int((meta > 0).sum()) == int((torch.from_numpy(labels) > 0).sum())  # the input is not modified


def test_numpy_in_numpy_out_and_channels_opened_on_their_own():
    first, _ = _organ_with_bridge()
    second = np.zeros_like(first)
    second[10:14, 10:14, 8:12] = 1  # 4 x 4 x 8 mm: thinner than a 3 mm ball everywhere
    stacked = np.stack([first, second])
    opened = open_foreground(stacked, 3.0, spacing=(1.0, 1.0, 2.0))
    assert isinstance(opened, np.ndarray) and opened.dtype == stacked.dtype
    np.testing.assert_array_equal(opened[0], open_foreground(first[None], 3.0, (1.0, 1.0, 2.0))[0])
    np.testing.assert_array_equal(opened[1], second)  # the ball fits nowhere: left as it was, not erased


@pytest.mark.parametrize("labels", [np.zeros((1, 8, 8, 8), np.uint8), np.ones((1, 8, 8, 8), np.uint8)])
def test_empty_and_full_label_maps_pass(labels):
    opened = open_foreground(labels, 2.0, spacing=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(opened, labels)


def test_radius_zero_is_the_identity():
    labels = torch.from_numpy(_blobs(3).astype(np.uint8))[None]
    assert OpenForeground(0)(labels) is labels
    assert OpenForegroundd("pred", radius_mm=0.0)({"pred": labels})["pred"] is labels


@pytest.mark.parametrize("radius", [-1.0, float("nan"), "big", None])
def test_bad_radius_names_the_argument(radius):
    with pytest.raises(ValueError, match="radius_mm must be a finite number >= 0"):
        OpenForegroundd("pred", radius_mm=radius)


def test_missing_or_bad_spacing_is_explained():
    labels = torch.from_numpy(_blobs(3).astype(np.uint8))[None]
    with pytest.raises(ValueError, match="spacing is needed"):
        open_foreground(labels, 2.0)
    with pytest.raises(ValueError, match=r"spacing must be 3 positive values"):
        open_foreground(labels, 2.0, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"spacing must be 3 positive values"):
        open_foreground(labels, 2.0, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"channel-first"):
        open_foreground(labels[0, 0], 2.0, spacing=(1.0, 1.0))
