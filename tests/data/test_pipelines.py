"""The MONAI chains: 3D patches, 2.5D volume preprocessing, 2D augmentation; orientation and invertibility."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import decollate_batch, list_data_collate
from monai.transforms import ClassesToIndicesd, Compose, Invertd, LoadImaged

from unet_monai.data import (
    InvalidCaseError,
    generate_case,
    generate_dataset,
    lits_2d_augmentation,
    lits_2d_preprocessing,
    lits_3d_transforms,
    pipelines,
)

SMALL_3D = {"spacing": (1.5, 1.5, 3.0), "patch_size": (24, 24, 8)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two cases of the generator (volume-0 RAS, volume-1 LPS)."""
    return generate_dataset(tmp_path_factory.mktemp("pipe"), num_cases=2, seed=4, size=(48, 56), slices=(16, 24))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The same anatomy stored once as RAS and once as LPS."""
    d = tmp_path_factory.mktemp("twin")
    out = {}
    for orientation in ("RAS", "LPS"):
        c = generate_case([9, 9], size=48, num_slices=16, spacing=(0.75, 0.75, 2.5), orientation=orientation)
        paths = {}
        for key, arr in (("image", c.image), ("label", c.label)):
            paths[key] = str(d / f"{key}_{orientation}.nii.gz")
            nib.save(nib.Nifti1Image(arr, c.affine), paths[key])
        out[orientation] = {**paths, "case": f"twin_{orientation}"}
    return out


def _fn_modes():
    return [(lits_3d_transforms, m) for m in ("train", "val", "infer")] + [
        (lits_2d_preprocessing, m) for m in ("val", "infer")
    ]


@pytest.mark.parametrize("fn, mode", _fn_modes())
def test_load_image_is_a_top_level_element(fn, mode):
    transforms = fn(mode).transforms
    assert sum(isinstance(t, LoadImaged) for t in transforms) == 1


@pytest.mark.parametrize("target", ["lits_3d_transforms", "lits_2d_preprocessing", "lits_2d_augmentation"])
def test_bundle_configs_can_build_them(target):
    parser = ConfigParser({"t": {"_target_": f"unet_monai.data.{target}", "hu_window": [-100, 200]}})
    if target == "lits_2d_augmentation":
        parser = ConfigParser({"t": {"_target_": f"unet_monai.data.{target}", "rotate_range": 0.1}})
    assert parser.get_parsed_content("t").transforms


@pytest.mark.parametrize("merge_tumour", [False, True])
@pytest.mark.parametrize("index", [0, 1])
def test_3d_train_patches(cases, merge_tumour, index):
    t = lits_3d_transforms("train", num_samples=3, merge_tumour=merge_tumour, **SMALL_3D)
    t.set_random_state(0)
    patches = t(cases[index])
    assert isinstance(patches, list) and len(patches) == 3
    for p in patches:
        assert p["image"].shape == (1, 24, 24, 8) and p["label"].shape == (1, 24, 24, 8)
        assert p["image"].dtype == torch.float32
        # plain tensors: a MetaTensor input slows every op of the training step (5-8% of a 3D demo's step)
        assert type(p["image"]) is torch.Tensor and type(p["label"]) is torch.Tensor
        assert -0.25 <= float(p["image"].min()) and float(p["image"].max()) <= 1.25  # window + intensity shifts
        assert set(torch.unique(p["label"]).tolist()) <= ({0, 1} if merge_tumour else {0, 1, 2})
    batch = list_data_collate([patches])
    assert batch["image"].shape == (3, 1, 24, 24, 8)


def test_3d_patches_without_augmentation_are_the_crops_alone(cases):
    plain = lits_3d_transforms("train", augment=False, num_samples=3, **SMALL_3D)
    off = lits_3d_transforms("train", num_samples=3, flip_prob=0, affine_prob=0, intensity_prob=0, **SMALL_3D)
    plain.set_random_state(0)
    off.set_random_state(0)
    for a, b in zip(plain(cases[0]), off(cases[0]), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert 0.0 <= float(a["image"].min()) and float(a["image"].max()) <= 1.0  # the HU window, unshifted
    names = {type(t).__name__ for t in plain.transforms}
    assert not names & {"RandFlipd", "RandAffined", "RandScaleIntensityd", "RandShiftIntensityd"}


def test_3d_positive_patches_contain_liver(cases):
    t = lits_3d_transforms("train", pos=1, neg=0, num_samples=4, affine_prob=0, flip_prob=0, **SMALL_3D)
    t.set_random_state(1)
    assert all(float(p["label"].max()) >= 1 for p in t(cases[0]))


@pytest.mark.parametrize("index", [0, 1])
def test_3d_class_ratios_centre_patches_on_the_chosen_class(cases, index):
    """Tumour is 0.6-6% of the foreground here: pos:neg almost never centres a patch on it, class_ratios does."""
    t = lits_3d_transforms("train", num_samples=6, class_ratios=(0, 0, 1), affine_prob=0, flip_prob=0, **SMALL_3D)
    t.set_random_state(0)
    patches = t(cases[index])
    assert all(float(p["label"].max()) == 2 for p in patches)
    batch = list_data_collate([patches])  # the cached class indices are not carried into the patches
    assert batch["image"].shape == (6, 1, 24, 24, 8) and not any("indices" in k for k in batch)


def test_3d_class_ratios_cache_a_bounded_set_of_centres(cases, monkeypatch):
    """The cached class indices are capped per class (evenly spaced), so real volumes do not fill the cache."""
    monkeypatch.setattr(pipelines, "_MAX_CENTRES_PER_CLASS", 50)
    t = lits_3d_transforms("train", num_samples=4, class_ratios=(0, 0, 1), affine_prob=0, flip_prob=0, **SMALL_3D)
    last_cached = next(i for i, x in enumerate(t.transforms) if isinstance(x, ClassesToIndicesd))
    cached = Compose(t.transforms[: last_cached + 1])(cases[0])
    sizes = [len(indices) for indices in cached["label_cls_indices"]]
    assert sizes[0] == 50 and sizes[1] == 50 and 0 < sizes[2] <= 50
    t.set_random_state(0)
    assert all(float(p["label"].max()) == 2 for p in t(cases[0]))


def test_3d_class_ratios_with_merged_tumour_take_two_classes(cases):
    t = lits_3d_transforms("train", num_samples=4, class_ratios=(1, 0), merge_tumour=True, **SMALL_3D)
    t.set_random_state(0)
    assert {float(p["label"].max()) for p in t(cases[0])} <= {0.0, 1.0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_ratios": (1, 1)},
        {"class_ratios": (1, -1, 1)},
        {"class_ratios": (0, 0, 0)},
        {"class_ratios": "1,1,1"},
        {"class_ratios": (1, "a", 1)},
        {"class_ratios": (1, float("inf"), 1)},
        {"class_ratios": (1, 1, 1), "merge_tumour": True},
    ],
)
def test_3d_bad_class_ratios_are_named(kwargs):
    with pytest.raises(ValueError, match=r"class_ratios must hold [23] finite numbers >= 0"):
        lits_3d_transforms("train", **kwargs)


@pytest.mark.parametrize("index", [0, 1])
def test_3d_val_is_ras_resampled_windowed_and_cropped(cases, index):
    out = lits_3d_transforms("val", spacing=(1.5, 1.5, 3.0))(cases[index])
    img, lbl = out["image"], out["label"]
    assert "".join(nib.aff2axcodes(img.affine.numpy())) == "RAS"
    assert np.allclose(np.sqrt((img.affine.numpy()[:3, :3] ** 2).sum(0)), (1.5, 1.5, 3.0))
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    assert img.shape == lbl.shape
    # cropped to the body (HU above the window's lower bound): the box is tight around it
    full = lits_3d_transforms("val", spacing=(1.5, 1.5, 3.0), crop_foreground=False)(cases[index])["image"]
    tight = lits_3d_transforms("val", spacing=(1.5, 1.5, 3.0), crop_margin=0)(cases[index])["image"][0]
    assert tight.shape[0] < full.shape[1] and tight.shape[1] < full.shape[2]
    for axis in range(2):
        assert float(tight.select(axis, 0).max()) > 0 and float(tight.select(axis, -1).max()) > 0


@pytest.mark.parametrize("fn, kwargs", [(lits_3d_transforms, {"spacing": (1.5, 1.5, 3.0)}),
                                        (lits_2d_preprocessing, {"spatial_size": (64, 64)})])  # fmt: skip
@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_ras_and_lps_storage_preprocess_identically(twin, fn, kwargs, orientation):
    ref = fn("val", **kwargs)(twin["RAS"])
    out = fn("val", **kwargs)(twin[orientation])
    assert torch.allclose(ref["image"], out["image"], atol=1e-5)
    assert torch.equal(ref["label"], out["label"])
    assert np.allclose(ref["image"].affine.numpy(), out["image"].affine.numpy(), atol=1e-4)


@pytest.mark.parametrize("fn, kwargs", [(lits_3d_transforms, {"spacing": (1.5, 1.5, 3.0)}),
                                        (lits_2d_preprocessing, {"spatial_size": (64, 64)})])  # fmt: skip
@pytest.mark.parametrize("index", [0, 1])
def test_infer_chain_inverts_to_the_input_grid(cases, fn, kwargs, index):
    """What the inference bundles do: predict on the preprocessed grid, Invertd back to the input file's grid."""
    pre = fn("infer", **kwargs)
    data = pre({"image": cases[index]["image"], "case": cases[index]["case"]})
    # a "prediction": one-hot of the label preprocessed on the same grid (val chain), as probabilities
    label = fn("val", **kwargs)(cases[index])["label"]
    data["pred"] = torch.cat([label == k for k in (0, 1, 2)]).float()
    inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    raw = nib.load(cases[index]["label"])
    assert tuple(inverted.shape[1:]) == raw.shape
    assert np.allclose(inverted.affine.numpy(), raw.affine, atol=1e-4)
    back = inverted.argmax(0).numpy()
    truth = np.asarray(raw.dataobj) > 0
    dice = 2 * ((back > 0) & truth).sum() / ((back > 0).sum() + truth.sum())
    assert dice > 0.85


def test_2d_preprocessing_shape_window_and_labels(cases):
    raw = nib.load(cases[1]["image"])
    out = lits_2d_preprocessing("val", spatial_size=(64, 80))(cases[1])
    assert out["image"].shape == (1, 64, 80, raw.shape[2]) and out["label"].shape == out["image"].shape
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}
    native = lits_2d_preprocessing("val", spatial_size=None, hu_window=(-100, 300))(cases[0])
    hu = np.asarray(nib.load(cases[0]["image"]).dataobj, dtype=np.float32)  # volume-0 is stored RAS
    assert np.allclose(native["image"][0].numpy(), np.clip((hu + 100) / 400, 0, 1), atol=1e-6)
    merged = lits_2d_preprocessing("val", spatial_size=None, merge_tumour=True)(cases[0])
    assert torch.equal(merged["label"], (native["label"] > 0).float())


def test_2d_augmentation_keeps_shapes_and_label_values():
    aug = lits_2d_augmentation(affine_prob=1.0, flip_prob=0.5, intensity_prob=1.0, noise_prob=1.0)
    aug.set_random_state(0)
    label = torch.zeros(1, 32, 32, dtype=torch.int64)
    label[0, 8:20, 10:22] = 1
    label[0, 12:15, 12:15] = 2
    out = aug({"image": torch.rand(3, 32, 32), "label": label})
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert out["label"].shape == (1, 32, 32) and out["label"].dtype == torch.int64
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}
    assert not torch.equal(out["label"], label)  # the random affine moved it
    assert decollate_batch(list_data_collate([out, out]))[0]["image"].shape == (3, 32, 32)


def test_bad_case_is_named_through_the_pipeline(cases, tmp_path):
    bad = dict(cases[0], label=str(tmp_path / "segmentation-0.nii.gz"))
    arr = np.asarray(nib.load(cases[0]["label"]).dataobj).copy()
    arr[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(arr, nib.load(cases[0]["label"]).affine), bad["label"])
    with pytest.raises(RuntimeError) as info:
        lits_3d_transforms("val", **SMALL_3D)(bad)
    root = info.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, InvalidCaseError) and "case 'volume-0'" in str(root) and "{7}" in str(root)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lits_3d_transforms("test"), "mode must be"),
        (lambda: lits_2d_preprocessing("val", hu_window=(250, -200)), "hu_window"),
        (lambda: lits_2d_preprocessing("val", spatial_size=(64,)), "spatial_size"),
        # MONAI's random transforms would clip these to [0, 1] without a word
        (lambda: lits_3d_transforms("train", intensity_prob=1.5), r"intensity_prob must be a probability .* 1.5"),
        (lambda: lits_3d_transforms("train", flip_prob=-0.1), "flip_prob must be a probability"),
        (lambda: lits_3d_transforms("train", affine_prob="0.2"), "affine_prob must be a probability"),
        (lambda: lits_2d_augmentation(noise_prob=2), "noise_prob must be a probability"),
        (lambda: lits_2d_augmentation(intensity_prob=True), "intensity_prob must be a probability"),
    ],
)
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
