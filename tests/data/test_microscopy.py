"""2D microscopy data path: mask decoding, discovery and splits, pipelines, inference at the input's size, writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet
from PIL import Image

from unet_monai.data.lits import load_datalist
from unet_monai.data.microscopy import (
    SEED_COLORS,
    DecodeMaskd,
    SaveMicroscopyPredictiond,
    colorize_mask,
    decode_mask,
    find_image_pairs,
    microscopy_inferer,
    microscopy_postprocessing,
    microscopy_transforms,
    overlay_mask,
    prepare_microscopy_datalist,
    read_mask,
    save_mask,
    segment_images,
)

PALETTE = np.array([SEED_COLORS[c] for c in range(3)], dtype=np.uint8)


def _label(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), dtype=np.uint8)
    label[2:9, 3:12] = 1
    label[12:14, 5:25] = 2
    label[rng.random((h, w)) < 0.05] = 2
    return label


def _write_pair(root, stem: str, label: np.ndarray, image_ext: str = ".png", colour: bool = True) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    # the image encodes its label (red channel), so that alignment can be checked after spatial transforms
    image = np.stack([label * 100 + 20, np.full_like(label, 40), (label == 1) * 90 + 10], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / f"{stem}{image_ext}")
    Image.fromarray(PALETTE[label] if colour else label).save(root / "masks" / f"{stem}.png")


# --------------------------------------------------------------------------- decoding


def test_seed_colours_decode():
    label = _label()
    assert np.array_equal(decode_mask(PALETTE[label]), label)
    rgba = np.concatenate([PALETTE[label], np.full((*label.shape, 1), 255, np.uint8)], axis=-1)
    assert np.array_equal(decode_mask(rgba, mask_format="color"), label)


@pytest.mark.parametrize("form", ["grey", "grey_rgb", "grey16", "palette"])
def test_index_masks_decode(form, tmp_path):
    label = _label()
    if form == "grey":
        array = label
    elif form == "grey_rgb":
        array = np.stack([label] * 3, axis=-1)
    elif form == "grey16":
        array = label.astype(np.uint16)
    else:
        img = Image.fromarray(label, mode="L").convert("P")
        img.save(tmp_path / "p.png")
        assert np.array_equal(read_mask(tmp_path / "p.png"), label)
        return
    assert np.array_equal(decode_mask(array), label)
    assert np.array_equal(decode_mask(array, mask_format="index"), label)


def test_unknown_colours_name_the_file_colours_and_counts():
    rgb = PALETTE[_label()]
    rgb[0, :4] = (0, 0, 255)
    rgb[1, 0] = (12, 200, 3)
    with pytest.raises(ValueError) as err:
        decode_mask(rgb, source="/data/masks/007.png")
    text = str(err.value)
    assert "/data/masks/007.png" in text
    assert "(0, 0, 255) in 4 pixel(s)" in text and "(12, 200, 3) in 1 pixel(s)" in text
    assert "(255, 0, 0) -> 1" in text  # the known colours are listed


def test_index_out_of_range_is_named():
    label = _label().astype(np.int64)
    label[0, 0] = 7
    with pytest.raises(ValueError, match=r"mask m\.png: values 7 in 1 pixel\(s\) are not class indices 0\.\.2"):
        decode_mask(label, mask_format="index", source="m.png")
    with pytest.raises(ValueError, match=r"m\.png: values 7 in 1 pixel\(s\) are neither class indices 0\.\.2 nor"):
        decode_mask(label, source="m.png")  # auto: neither indices nor known grey colours
    with pytest.raises(ValueError, match="has colours"):
        decode_mask(PALETTE[_label()], mask_format="index")


def test_tolerance_for_lossy_masks():
    label = _label()
    noisy = PALETTE[label].astype(np.int16) + np.random.default_rng(0).integers(-20, 21, (*label.shape, 3))
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match="tolerance"):
        decode_mask(noisy, source="x.jpg")
    assert np.array_equal(decode_mask(noisy, tolerance=20), label)
    with pytest.raises(ValueError, match="too large"):
        decode_mask(noisy, tolerance=128)


def test_custom_colour_maps():
    colors = {"0": "#000000", "1": ["#ff0000", [200, 0, 0]], "2": (255, 255, 255)}
    label = _label()
    rgb = np.array([[0, 0, 0], [200, 0, 0], [255, 255, 255]], np.uint8)[label]
    assert np.array_equal(decode_mask(rgb, colors=colors), label)
    assert np.array_equal(colorize_mask(label, colors), np.array([[0, 0, 0], [255, 0, 0], [255, 255, 255]])[label])
    binary = (label > 0).astype(np.uint8) * 255  # a grey 0/255 mask, decoded by its grey levels
    assert np.array_equal(decode_mask(binary, colors={0: (0, 0, 0), 1: (255, 255, 255)}), (label > 0))
    with pytest.raises(ValueError, match="given for classes"):
        decode_mask(rgb, colors={0: (0, 0, 0), 1: (0, 0, 0)})
    with pytest.raises(ValueError, match="#rrggbb"):
        decode_mask(rgb, colors={0: "black"})
    with pytest.raises(ValueError, match="integers"):
        decode_mask(np.full((4, 4), 0.5))


def test_mask_writers_round_trip(tmp_path):
    label = _label()
    save_mask(label, tmp_path / "index.png")
    save_mask(torch.from_numpy(label)[None], tmp_path / "colour.png", colored=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "index.png")), label)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "colour.png")), PALETTE[label])
    assert np.array_equal(read_mask(tmp_path / "colour.png"), label)
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files
    with pytest.raises(ValueError, match="JPEG"):
        save_mask(label, tmp_path / "mask.jpg")


def test_overlay_blends_only_labelled_pixels():
    label = _label()
    image = np.full((*label.shape, 3), 100, np.uint8)
    out = overlay_mask(image, label, alpha=0.5)
    assert np.array_equal(out[label == 0], image[label == 0])
    assert np.array_equal(out[label == 1][0], [178, 50, 50])  # (100 + 255) / 2 rounded, 100 / 2
    assert np.array_equal(out[label == 2][0], [178, 178, 50])


# --------------------------------------------------------------------------- discovery and splits


def test_find_pairs_by_stem(tmp_path):
    for stem in ["10", "2", "1"]:
        _write_pair(tmp_path, stem, _label(), image_ext=".jpg")
    (tmp_path / "images" / ".hidden.png").write_bytes(b"")
    (tmp_path / "images" / "notes.txt").write_text("x")
    (tmp_path / "masks" / "99.png").write_bytes(b"")  # a mask without image: ignored with a warning
    records = find_image_pairs(tmp_path)
    assert [r["case"] for r in records] == ["1", "2", "10"]
    assert records[0]["image"].endswith("images/1.jpg") and records[0]["label"].endswith("masks/1.png")


def test_find_pairs_layout_variants(tmp_path):
    root = tmp_path / "archive"
    _write_pair(root, "001", _label())
    (root / "masks" / "001.png").rename(root / "masks" / "001_mask.png")
    with pytest.raises(ValueError, match=r"have no mask.*001\.png"):
        find_image_pairs(tmp_path)  # the single sub-folder is found, the suffix is not
    records = find_image_pairs(tmp_path, mask_suffix="_mask")
    assert records[0]["label"].endswith("001_mask.png")
    assert "label" not in find_image_pairs(tmp_path, require_masks=False)[0]
    _write_pair(root, "001", _label(), image_ext=".tif")
    with pytest.raises(ValueError, match="more than one file per stem"):
        find_image_pairs(root, mask_suffix="_mask")
    with pytest.raises(ValueError, match="cannot find images/"):
        find_image_pairs(root / "masks")
    with pytest.raises(FileNotFoundError):
        find_image_pairs(tmp_path / "missing")


def test_split_by_file_is_deterministic_and_saved(tmp_path):
    root = tmp_path / "data"
    for i in range(10):
        _write_pair(root, f"{i:03d}", _label(seed=i))
    first = prepare_microscopy_datalist(root, tmp_path / "split.json", val_fraction=0.3, seed=1)
    again = prepare_microscopy_datalist(root, val_fraction=0.3, seed=1)
    train, val = [r["case"] for r in first["training"]], [r["case"] for r in first["validation"]]
    assert len(val) == 3 and sorted(train + val) == [f"{i:03d}" for i in range(10)]
    assert first == again
    assert [r["case"] for r in load_datalist(tmp_path / "split.json", "validation")] == val
    assert json.loads((tmp_path / "split.json").read_text())["metadata"]["num_cases"] == 10


# --------------------------------------------------------------------------- pipelines


@pytest.fixture()
def pair(tmp_path):
    _write_pair(tmp_path, "a", _label(36, 52))
    return {"image": str(tmp_path / "images" / "a.png"), "label": str(tmp_path / "masks" / "a.png")}


@pytest.mark.parametrize("spatial_mode", ["crop", "resize"])
@pytest.mark.parametrize("mode", ["train", "val", "infer"])
def test_pipeline_shapes(pair, mode, spatial_mode):
    tr = microscopy_transforms(mode, spatial_size=32, spatial_mode=spatial_mode, num_samples=3)
    out = tr(pair if mode != "infer" else {"image": pair["image"]})
    items = out if isinstance(out, list) else [out]
    assert len(items) == (3 if mode == "train" and spatial_mode == "crop" else 1)
    native = mode != "train" and spatial_mode == "crop"
    size = (36, 52) if native else (32, 32)
    for item in items:
        image = item["image"]
        assert image.shape == (3, *size) and image.dtype == torch.float32
        # training samples are plain tensors (fast network steps); val/infer keep the metadata to invert and save
        assert isinstance(image, MetaTensor) == (mode != "train")
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        if mode != "infer":
            assert item["label"].shape == (1, *size)
            assert set(torch.unique(item["label"]).tolist()) <= {0.0, 1.0, 2.0}
    if native and mode != "infer":  # the pipeline does not move pixels: the label is the file's, (H, W) in row order
        assert np.array_equal(items[0]["label"][0].numpy(), _label(36, 52))
        assert np.isclose(float(items[0]["image"][0, 0, 0]), 20 / 255)


def test_augmentation_keeps_image_and_label_aligned(pair):
    tr = microscopy_transforms(
        "train", spatial_size=32, num_samples=4, flip_prob=0.5, rotate90_prob=1.0, intensity_prob=0.0, noise_prob=0
    )
    tr.set_random_state(seed=3)
    for item in tr(pair):
        red = torch.round(item["image"][0] * 255)
        expected = item["label"][0] * 100 + 20
        inside = red > 0  # padding (zeros) may enter the crop
        assert torch.equal(red[inside], expected[inside])


def test_colour_jitter_changes_channels_separately(pair):
    tr = microscopy_transforms(
        "train",
        spatial_size=32,
        spatial_mode="resize",
        flip_prob=0,
        rotate90_prob=0,
        intensity_prob=1.0,
        brightness=0.0,
        contrast=0.0,
        color_shift=0.3,
        noise_prob=0,
    )
    tr.set_random_state(seed=0)
    ref = microscopy_transforms("val", spatial_size=32, spatial_mode="resize")(pair)["image"]
    out = tr(pair)["image"]
    ratios = [float(out[c].sum() / ref[c].sum()) for c in range(3)]
    assert len({round(r, 3) for r in ratios}) == 3 and all(0.7 <= r <= 1.3 for r in ratios)


@pytest.mark.parametrize(
    "name, value", [("flip_prob", 1.5), ("rotate90_prob", -0.1), ("intensity_prob", "0.5"), ("noise_prob", 2)]
)
def test_augmentation_probabilities_outside_0_1_are_rejected(name, value):
    """MONAI's random transforms would clip them silently: a typo must not become 'always' or 'never'."""
    with pytest.raises(ValueError, match=rf"{name} must be a probability in \[0, 1\], got {value!r}"):
        microscopy_transforms("train", spatial_size=32, **{name: value})


def test_image_kinds_are_converted_to_rgb(tmp_path):
    grey16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g.tif")
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 255, 7
    Image.fromarray(rgba).save(tmp_path / "c.png")
    tr = microscopy_transforms("infer")
    grey = tr({"image": str(tmp_path / "g.tif")})["image"]
    assert grey.shape == (3, 20, 30) and torch.allclose(grey[0], grey[2])
    assert np.isclose(float(grey[0, 19, 29]), grey16[19, 29] / 65535, atol=1e-6)
    colour = tr({"image": str(tmp_path / "c.png")})["image"]
    assert colour.shape == (3, 20, 30) and float(colour[1].min()) == 1.0 and float(colour[0].max()) == 0.0


def test_pipeline_errors_name_the_file(tmp_path, pair):
    bad = PALETTE[_label(36, 52)]
    bad[5, 5] = (0, 0, 255)
    Image.fromarray(bad).save(tmp_path / "masks" / "a.png")
    with pytest.raises(RuntimeError) as err:
        microscopy_transforms("val")(pair)
    assert "masks/a.png" in str(err.value.__cause__) and "(0, 0, 255) in 1 pixel(s)" in str(err.value.__cause__)
    Image.fromarray(_label(36, 50)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(RuntimeError) as err:
        microscopy_transforms("val")(pair)
    assert "is 36x52 (HxW) but its mask" in str(err.value.__cause__)
    with pytest.raises(ValueError, match="square"):
        microscopy_transforms("train", spatial_size=(32, 48))
    with pytest.raises(ValueError, match="spatial_mode"):
        microscopy_transforms("val", spatial_mode="tile")


def test_bundle_config_builds_the_chains(pair):
    parser = ConfigParser(
        {
            "train": {
                "_target_": "unet_monai.data.microscopy.microscopy_transforms",
                "mode": "train",
                "spatial_size": [32, 32],
                "colors": {"0": [0, 0, 0], "1": "ff0000", "2": [255, 255, 0]},
            },
            "pre": {"_target_": "unet_monai.data.microscopy.microscopy_transforms", "mode": "infer"},
            "post": {"_target_": "unet_monai.data.microscopy.microscopy_postprocessing", "preprocessing": "@pre"},
            "inferer": {"_target_": "unet_monai.data.microscopy.microscopy_inferer", "spatial_size": [32, 32]},
        }
    )
    item = parser.get_parsed_content("train")(pair)[0]
    assert item["image"].shape == (3, 32, 32)
    assert parser.get_parsed_content("inferer").roi_size == (32, 32)


# --------------------------------------------------------------------------- inference at the input's size


@pytest.mark.parametrize("spatial_mode", ["crop", "resize"])
def test_segment_images_returns_the_input_size(tmp_path, spatial_mode):
    _write_pair(tmp_path, "odd", _label(37, 53))
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=3, features=(4, 4, 8, 8, 16, 4))
    out_dir = tmp_path / "out"
    masks = segment_images(
        net,
        [tmp_path / "images" / "odd.png"],
        spatial_size=32,
        spatial_mode=spatial_mode,
        output_dir=out_dir,
        write_color=True,
    )
    assert masks[0].shape == (37, 53) and masks[0].dtype == np.uint8 and masks[0].max() <= 2
    assert net.training  # mode restored
    for name in ("odd_mask.png", "odd_mask_color.png", "odd_overlay.png"):
        assert Image.open(out_dir / name).size == (53, 37)
    assert np.array_equal(np.asarray(Image.open(out_dir / "odd_mask.png")), masks[0])


def test_postprocessing_inverts_the_resize_and_the_saver_checks_sizes(pair, tmp_path):
    pre = microscopy_transforms("infer", spatial_size=32, spatial_mode="resize")
    item = pre({"image": pair["image"]})
    logits = torch.randn(3, 32, 32)
    logits[2] += 10.0  # class 2 everywhere
    out = microscopy_postprocessing(pre)({**item, "pred": logits})
    assert out["pred"].shape == (1, 36, 52) and bool((out["pred"] == 2).all())
    assert isinstance(microscopy_inferer(32, "resize"), type(microscopy_inferer(32, "resize")))
    saver = SaveMicroscopyPredictiond("pred", output_dir=tmp_path / "o")
    with pytest.raises(ValueError, match="invert the preprocessing first"):
        saver({"image": item["image"], "pred": torch.zeros(1, 32, 32)})


def test_decode_maskd_on_plain_arrays():
    d = DecodeMaskd("label")({"label": np.moveaxis(PALETTE[_label()], -1, 0)})
    assert d["label"].shape == (1, 20, 30) and np.array_equal(d["label"][0].numpy(), _label())
