"""The synthetic LiTS-like generator: layout, determinism, realistic HU, geometry and the CLI."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from unet_monai.data import find_cases, generate_case, generate_dataset
from unet_monai.data.synthetic import main

SMALL = {"size": (56, 72), "slices": (20, 32)}


@pytest.fixture(scope="module")
def lits_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "lits"
    datalist = generate_dataset(out, num_cases=4, seed=7, **SMALL)
    return out, datalist


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_lits_layout_files_and_datalist(lits_dir):
    out, datalist = lits_dir
    assert [d["case"] for d in datalist] == [f"volume-{i}" for i in range(4)]
    for d in datalist:
        assert d["image"].endswith(".nii.gz") and "volume-" in d["image"]
        assert d["label"].endswith(".nii.gz") and "segmentation-" in d["label"]
    assert find_cases(out) == datalist
    meta = json.loads((out / "generation.json").read_text())
    assert meta["arguments"]["seed"] == 7 and len(meta["cases"]) == 4


def test_storage_types_values_spacing_and_orientations(lits_dir):
    _, datalist = lits_dir
    orientations = []
    for d in datalist:
        img, seg = nib.load(d["image"]), nib.load(d["label"])
        assert img.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        assert img.shape == seg.shape and np.allclose(img.affine, seg.affine)
        nx, ny, nz = img.shape
        assert 56 <= nx <= 72 and nx == ny and 20 <= nz <= 32
        sx, sy, sz = img.header.get_zooms()
        assert 0.6 <= sx <= 0.9 and sx == sy and 1.0 <= sz <= 5.0
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
        assert np.asarray(seg.dataobj).max() >= 1  # every case has a liver
        orientations.append("".join(nib.aff2axcodes(img.affine)))
    assert orientations == ["RAS", "LPS", "RAS", "LPS"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path, lits_dir):
    out, _ = lits_dir
    again = generate_dataset(tmp_path / "again", num_cases=2, seed=7, **SMALL)
    for d in again:
        name = d["image"].split("/")[-1]
        assert _md5(d["image"]) == _md5(out / name)  # nibabel writes gzip without a timestamp
    a = generate_case([1, 0], size=48, num_slices=16)
    b = generate_case([1, 0], size=48, num_slices=16)
    c = generate_case([2, 0], size=48, num_slices=16)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)


def test_a_case_does_not_depend_on_the_dataset_size(tmp_path):
    one = generate_dataset(tmp_path / "one", num_cases=1, seed=5, size=48, slices=16)
    three = generate_dataset(tmp_path / "three", num_cases=3, seed=5, size=48, slices=16)
    assert _md5(one[0]["image"]) == _md5(three[0]["image"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_realistic_hounsfield_units(seed):
    case = generate_case([seed, 0], size=96, num_slices=40, spacing=(0.7, 0.7, 2.5))
    img, lbl, p = case.image.astype(float), case.label, case.params
    liver = img[lbl == 1]
    # liver about 55..110 HU depending on the contrast phase, clearly above muscle but not trivially
    assert 45 < np.median(liver) < 120
    assert 10 < np.median(liver) - p["muscle_hu"] < 80
    assert 10 <= p["noise_std_hu"] <= 25
    # air in the field-of-view corners: -1000 HU with noise, or the scanner's padding value
    corner = img[:5, :5, :]
    if p["outside_fov_value"] is None:
        assert abs(corner.mean() + 1000) < 10 and 5 < corner.std() < 30
    else:
        assert np.all(corner == p["outside_fov_value"])
    assert img.max() > 600  # bone
    assert (img < -800).mean() > 0.05  # air / lung
    for t in p["tumours"]:
        assert abs(t["delta_hu"]) >= 20 and t["voxels"] > 0
    if (lbl == 2).any():
        assert abs(np.median(img[lbl == 2]) - np.median(liver)) > 10


def test_shapes_vary_between_cases():
    masks = [generate_case([0, i], size=64, num_slices=24).label > 0 for i in range(3)]
    fractions = [m.mean() for m in masks]
    assert 0.01 < min(fractions) and max(fractions) < 0.2
    for i in range(3):
        for j in range(i + 1, 3):
            dice = 2 * (masks[i] & masks[j]).sum() / (masks[i].sum() + masks[j].sum())
            assert dice < 0.95


def test_liver_has_free_slices_above_and_below():
    lbl = generate_case([0, 4], size=64, num_slices=48).label
    z = np.flatnonzero(lbl.any(axis=(0, 1)))
    assert z.min() > 0 and z.max() < 47 and 8 < z.size < 47


def test_tumours_lie_inside_the_liver():
    for i in range(6):
        case = generate_case([3, i], size=64, num_slices=32, max_tumours=3)
        lbl = case.label
        if not (lbl == 2).any():
            continue
        # tumours sit in the liver: their surroundings are mostly liver (subcapsular ones may touch the surface)
        from scipy import ndimage

        ring = ndimage.binary_dilation(lbl == 2) & ~(lbl == 2)
        assert np.mean(lbl[ring] == 1) > 0.6


def test_lps_is_the_ras_case_flipped_and_anatomy_stays_in_world_space():
    ras = generate_case([0, 9], size=64, num_slices=24, spacing=(0.8, 0.8, 3.0), orientation="RAS")
    lps = generate_case([0, 9], size=64, num_slices=24, spacing=(0.8, 0.8, 3.0), orientation="LPS")
    assert np.array_equal(lps.image, ras.image[::-1, ::-1])
    assert "".join(nib.aff2axcodes(lps.affine)) == "LPS"
    for case in (ras, lps):
        idx = np.argwhere(case.label > 0)
        world = nib.affines.apply_affine(case.affine, idx).mean(axis=0)
        centre = nib.affines.apply_affine(case.affine, (np.array(case.label.shape) - 1) / 2)
        assert world[0] > centre[0]  # the liver lies on the patient's right (+x in RAS world)
    w_ras = nib.affines.apply_affine(ras.affine, np.argwhere(ras.label > 0)).mean(axis=0)
    w_lps = nib.affines.apply_affine(lps.affine, np.argwhere(lps.label > 0)).mean(axis=0)
    assert np.allclose(w_ras, w_lps, atol=1e-6)


def test_msd_layout(tmp_path):
    datalist = generate_dataset(tmp_path / "Task03_Liver", num_cases=2, seed=1, layout="msd", size=48, slices=16)
    meta = json.loads((tmp_path / "Task03_Liver" / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["training"][0]["image"] == "./imagesTr/liver_0.nii.gz"
    assert [d["case"] for d in datalist] == ["liver_0", "liver_1"]
    assert find_cases(tmp_path / "Task03_Liver") == datalist


def test_nii_extension_and_512_in_plane(tmp_path):
    datalist = generate_dataset(tmp_path, num_cases=1, seed=0, size=512, slices=8, ext=".nii")
    assert datalist[0]["image"].endswith("volume-0.nii")
    assert nib.load(datalist[0]["image"]).shape[:2] == (512, 512)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layout": "nnunet"}, "layout"),
        ({"ext": ".mha"}, "ext"),
        ({"orientations": ["LAS"]}, "orientations"),
        ({"size": (96, 64)}, "size"),
        ({"size": 1024}, "512"),
        ({"num_cases": 0}, "num_cases"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path, **kwargs)


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "cli"), "--cases", "2", "--seed", "3", "--size", "48", "--slices", "16"]) == 0
    assert "wrote 2 cases" in capsys.readouterr().out
    assert len(find_cases(tmp_path / "cli")) == 2
