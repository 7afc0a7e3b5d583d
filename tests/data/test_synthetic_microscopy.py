"""Synthetic darkfield generator: determinism, appearance, label geometry, file formats, learnability."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet
from PIL import Image
from scipy import ndimage

from unet_monai.data.microscopy import SEED_COLORS, find_image_pairs, microscopy_transforms, read_mask
from unet_monai.data.synthetic_microscopy import _PALETTE, generate_dataset, generate_image, main
from unet_monai.losses import CrossEntropyIoUDiceLoss


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_same_bytes_and_prefix_property(tmp_path):
    generate_dataset(tmp_path / "a", num_images=3, seed=5, size=64)
    generate_dataset(tmp_path / "b", num_images=5, seed=5, size=64)
    generate_dataset(tmp_path / "c", num_images=3, seed=6, size=64)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 6 and all(b[k] == v for k, v in a.items())
    assert a["images/000.png"] != c["images/000.png"]


def test_kaggle_layout_and_both_mask_formats(tmp_path):
    index = generate_dataset(tmp_path / "i", num_images=2, seed=1, size=(48, 72), mask_format="index")
    colour = generate_dataset(tmp_path / "c", num_images=2, seed=1, size=(48, 72), mask_format="color", ext=".jpg")
    assert [r["case"] for r in find_image_pairs(tmp_path / "i")] == ["000", "001"]
    assert index[0]["image"].endswith("images/000.png") and colour[0]["image"].endswith("images/000.jpg")
    grey = np.asarray(Image.open(index[0]["label"]))
    rgb = np.asarray(Image.open(colour[0]["label"]))
    assert grey.shape == (48, 72) and rgb.shape == (48, 72, 3)
    assert np.array_equal(read_mask(colour[0]["label"]), grey)  # the colours are the seed's
    assert np.asarray(Image.open(index[0]["image"])).shape == (48, 72, 3)
    meta = json.loads((tmp_path / "i" / "generation.json").read_text())
    assert meta["arguments"]["size"] == [48, 72] and len(meta["images"]) == 2


def test_palette_is_the_seed_colour_map():
    assert _PALETTE.tolist() == [list(SEED_COLORS[c]) for c in range(3)]


def test_darkfield_appearance():
    sample = generate_image(seed=[0, 1], size=256)
    image, label = sample.image.astype(np.float32), sample.label
    assert image.dtype == np.float32 and set(np.unique(label)) == {0, 1, 2}
    background, cells, bacteria = (image[label == c] for c in range(3))
    assert background.mean() < 40  # dark field
    assert cells[:, 0].mean() > 1.5 * cells[:, 1].mean()  # red blood cells
    assert bacteria.mean() > 3 * background.mean()  # bright bacteria
    assert bacteria[:, 1].mean() > bacteria[:, 2].mean()  # yellowish


@pytest.mark.parametrize("size", [128, 512])
def test_bacteria_are_thin_and_long(size):
    label = generate_image(seed=[3, 0], size=size, num_bacteria=(3, 3)).label
    bacteria = label == 2
    depth = ndimage.distance_transform_edt(bacteria)
    assert 1.0 <= depth.max() <= 4.0  # a few pixels wide at most (more only where two cross)
    parts, n = ndimage.label(bacteria, structure=np.ones((3, 3)))
    extents = [max(s.stop - s.start for s in sl) for sl in ndimage.find_objects(parts)]
    assert n >= 1 and max(extents) > 0.1 * size  # elongated


def test_cells_vary_in_size_and_some_overlap():
    sample = generate_image(seed=[0, 2], size=256, num_cells=(12, 12), num_bacteria=0, overlap_fraction=1.0)
    _, n = ndimage.label(sample.label == 1)
    assert n < 12  # overlapping cells merge
    radii = sample.params["cell_radii"]
    assert max(radii) > 1.5 * min(radii)


def test_generation_is_fast():
    start = time.perf_counter()
    for i in range(20):
        generate_image(seed=[0, i], size=256)
    assert time.perf_counter() - start < 10.0  # about 0.5 s on one core


def test_command_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--images", "2", "--seed", "3", "--size", "64", "--mask-format", "color"]) == 0
    assert "wrote 2 images (color masks)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["000.png", "001.png"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": 16}, "at least 32"),
        ({"mask_format": "rgb"}, "mask_format"),
        ({"ext": ".gif"}, "ext"),
        ({"num_cells": (5, 2)}, "num_cells"),
        ({"num_images": 0}, "num_images"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path, **{"num_images": 1, **kwargs})


def test_a_small_network_learns_the_synthetic_darkfield(tmp_path):
    """The data is learnable: a tiny 2D U-Net trained with the seed's loss segments cells and bacteria in 40 steps."""
    datalist = generate_dataset(tmp_path, num_images=12, seed=0, size=64)
    pre = microscopy_transforms("val", spatial_size=64)
    items = [pre(d) for d in datalist]
    x = torch.stack([i["image"].as_tensor() for i in items])
    y = torch.stack([i["label"].as_tensor() for i in items])
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=3, features=(8, 8, 16, 16, 32, 8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = CrossEntropyIoUDiceLoss(to_onehot_y=True)
    g = torch.Generator().manual_seed(0)
    losses: list[float] = []
    for step in range(40):
        idx = torch.randperm(len(x), generator=g)[:6]
        xb, yb = (x[idx], y[idx]) if step % 2 else (x[idx].flip(-1), y[idx].flip(-1))
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1, keepdim=True)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.4 * first, (first, last)
    for c in (1, 2):
        dice = 2 * ((pred == c) & (y == c)).sum() / ((pred == c).sum() + (y == c).sum())
        assert dice > 0.5, (c, float(dice))
