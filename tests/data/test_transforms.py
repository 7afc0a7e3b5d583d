"""Case validation (every kind of bad input, with the case and file named) and 2.5D slice stacking."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from unet_monai.data import (
    CheckCaseFilesd,
    InvalidCaseError,
    ValidateCased,
    check_case_files,
    generate_case,
    slice_neighbours,
    slice_stack_to_volume,
    validate_case,
    validate_datalist,
    volume_to_slice_stack,
)


def _write(path, array, affine=None, dtype=None):
    img = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One small valid case and its arrays."""
    d = tmp_path_factory.mktemp("good")
    case = generate_case([0, 1], size=40, num_slices=12, spacing=(0.8, 0.8, 2.0))
    image = _write(d / "volume-7.nii.gz", case.image, case.affine)
    label = _write(d / "segmentation-7.nii.gz", case.label, case.affine)
    return {"image": image, "label": label, "case": "volume-7", "arrays": case}


def _pipeline(check_files: bool, **kwargs) -> Compose:
    chain = [CheckCaseFilesd(["image", "label"])] if check_files else []
    chain += [LoadImaged(["image", "label"], image_only=True), ValidateCased(["image", "label"], **kwargs)]
    return Compose([*chain, EnsureChannelFirstd(["image", "label"], channel_dim="no_channel")])


def _root(e: BaseException) -> BaseException:
    while isinstance(e, RuntimeError) and e.__cause__ is not None:
        e = e.__cause__
    return e


def _fails(record, match: str, error=InvalidCaseError, check_files=(True, False), **kwargs):
    """The bad case fails with ``match`` via validate_case and via the MONAI pipeline (header or data checks)."""
    with pytest.raises(error, match=match):
        validate_case(record, **kwargs)
    for cf in check_files:
        with pytest.raises(RuntimeError) as info:
            _pipeline(cf, **kwargs)({k: v for k, v in record.items() if k != "arrays"})
        root = _root(info.value)
        assert isinstance(root, error) and re.search(match, str(root)), repr(root)


def test_valid_case_passes(good):
    info = validate_case(good)
    assert info == {"case": "volume-7", "shape": [40, 40, 12], "spacing": [0.8, 0.8, 2.0], "orientation": "RAS"}
    out = _pipeline(True)(good)
    assert out["image"].shape == (1, 40, 40, 12) and out["label"].shape == (1, 40, 40, 12)
    assert check_case_files(good) == {"image": (40, 40, 12), "label": (40, 40, 12)}


def test_shape_mismatch(good, tmp_path):
    label = _write(tmp_path / "seg.nii.gz", good["arrays"].label[:, :, :10], good["arrays"].affine)
    _fails({**good, "label": label}, r"case 'volume-7'.*has shape \(40, 40, 12\) but label .*seg.nii.gz has shape")


def test_affine_mismatch(good, tmp_path):
    affine = good["arrays"].affine.copy()
    affine[2, 3] += 2.5
    label = _write(tmp_path / "seg.nii.gz", good["arrays"].label, affine)
    _fails({**good, "label": label}, r"case 'volume-7'.*affines of image .* and label .*seg.nii.gz differ by up to 2.5")


def test_affine_within_tolerance_passes(good, tmp_path):
    affine = good["arrays"].affine.copy()
    affine[0, 3] += 5e-4
    label = _write(tmp_path / "seg.nii.gz", good["arrays"].label, affine)
    validate_case({**good, "label": label})


def test_label_values_outside_the_set(good, tmp_path):
    lbl = good["arrays"].label.copy()
    lbl[0, 0, 0], lbl[1, 0, 0] = 3, 255
    label = _write(tmp_path / "segmentation-7.nii.gz", lbl, good["arrays"].affine)
    _fails({**good, "label": label}, r"case 'volume-7', file .*segmentation-7.nii.gz: .*values \{3, 255\} outside")


def test_non_integer_label(good, tmp_path):
    lbl = good["arrays"].label.astype(np.float32)
    lbl[0, 0, 0] = 0.5
    label = _write(tmp_path / "seg.nii.gz", lbl, good["arrays"].affine)
    _fails({**good, "label": label}, r"non-integer values, e.g. \[0.5\]")


def test_custom_label_values(good):
    with pytest.raises(InvalidCaseError, match=r"values \{2\} outside the expected \{0, 1\}"):
        validate_case(good, label_values=(0, 1))


@pytest.mark.parametrize(
    "shape, match",
    [((40, 40), r"shape \(40, 40\) \(a 2D image\)"), ((40, 40, 12, 2), r"shape \(40, 40, 12, 2\) \(a 4D series\)")],
)
def test_wrong_dimensionality(good, tmp_path, shape, match):
    image = _write(tmp_path / "volume-7.nii.gz", np.zeros(shape, np.int16))
    _fails({**good, "image": image}, r"case 'volume-7', file .*volume-7.nii.gz: the image has " + match)


def test_trailing_singleton_dimension_is_squeezed(good, tmp_path):
    arr = good["arrays"]
    image = _write(tmp_path / "v.nii.gz", arr.image[..., None], arr.affine)
    record = {**good, "image": image}
    assert validate_case(record)["shape"] == [40, 40, 12]
    out = _pipeline(True)(record)
    assert out["image"].shape == (1, 40, 40, 12)
    assert np.array_equal(out["image"][0].numpy(), arr.image.astype(np.float32))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_file(good, tmp_path, ext):
    arr = good["arrays"]
    full = _write(tmp_path / f"full{ext}", arr.image, arr.affine)
    raw = open(full, "rb").read()
    cut = tmp_path / f"volume-7{ext}"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    _fails({**good, "image": str(cut)}, r"case 'volume-7', file .*volume-7\.nii.*truncated", check_files=(True,))
    with pytest.raises(InvalidCaseError, match="truncated"):
        check_case_files({**good, "image": str(cut)})


def test_unreadable_file(good, tmp_path):
    bad = tmp_path / "volume-7.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a NIfTI header" * 3))
    _fails({**good, "image": str(bad)}, r"case 'volume-7', file .*volume-7.nii.gz: cannot read the image header",
           check_files=(True,))  # fmt: skip
    garbage = tmp_path / "segmentation-7.nii"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InvalidCaseError, match="cannot read the label header"):
        check_case_files({**good, "label": str(garbage)})


def test_missing_file(good, tmp_path):
    record = {**good, "label": str(tmp_path / "segmentation-7.nii.gz")}
    _fails(record, r"case 'volume-7': the label file .*segmentation-7.nii.gz does not exist", FileNotFoundError,
           check_files=(True,))  # fmt: skip


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_voxels_error_or_fill(good, tmp_path, bad_value):
    arr = good["arrays"]
    img = arr.image.astype(np.float32)
    img[5, 5, 5] = bad_value
    image = _write(tmp_path / "v.nii.gz", img, arr.affine)
    record = {**good, "image": image}
    _fails(record, r"case 'volume-7', file .*v.nii.gz: the image holds 1 non-finite voxel")
    out = _pipeline(False, nan_policy="fill", fill_value=-1024)(record)
    assert torch.isfinite(out["image"]).all() and float(out["image"][0, 5, 5, 5]) == -1024
    validate_case(record, nan_policy="fill")


def test_nan_in_label_always_fails(good, tmp_path):
    lbl = good["arrays"].label.astype(np.float32)
    lbl[1, 1, 1] = np.nan
    label = _write(tmp_path / "seg.nii.gz", lbl, good["arrays"].affine)
    with pytest.raises(InvalidCaseError, match="the label holds 1 non-finite"):
        validate_case({**good, "label": label}, nan_policy="fill")


def test_scaled_big_endian_int16_is_read_like_plain(good, tmp_path):
    """Real NIfTI may be int16 with scl_slope/inter and big-endian: values must come out in HU."""
    arr = good["arrays"]
    stored = ((arr.image.astype(np.float32) + 1024) / 2).astype(">i2")
    img = nib.Nifti1Image(stored, arr.affine)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "v.nii"))
    out = _pipeline(True)({**good, "image": str(tmp_path / "v.nii")})
    assert np.array_equal(out["image"][0].numpy(), stored.astype(np.float32) * 2 - 1024)


def test_validate_datalist_reports_all_bad_cases(good, tmp_path):
    bad1 = {"image": str(tmp_path / "volume-1.nii.gz"), "label": good["label"], "case": "volume-1"}
    bad2 = {**good, "case": "volume-2", "image": _write(tmp_path / "v2.nii.gz", np.zeros((5, 5), np.int16))}
    with pytest.raises(ValueError, match=r"2 of 3 cases are invalid:\n.*'volume-1'.*\n.*'volume-2'.*2D"):
        validate_datalist([good, bad1, bad2])
    assert len(validate_datalist([good], check_data=True)) == 1


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="nan_policy"):
        ValidateCased(["image"], nan_policy="ignore")


# ----------------------------------------------------------------------------- slice stacking


@pytest.mark.parametrize("num_slices", [1, 3, 5])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_volume_to_slice_stack_neighbours_and_borders(num_slices, as_numpy):
    depth = 6
    vol = torch.arange(depth, dtype=torch.float32).reshape(1, 1, 1, depth).expand(1, 2, 3, depth).contiguous()
    vol = vol.numpy() if as_numpy else vol
    stack = volume_to_slice_stack(vol, num_slices)
    assert tuple(stack.shape) == (depth, num_slices, 2, 3)
    assert type(stack) is type(vol)
    half = num_slices // 2
    for z in range(depth):
        expected = [min(max(z + o, 0), depth - 1) for o in range(-half, half + 1)]
        assert [float(stack[z, c, 0, 0]) for c in range(num_slices)] == expected
    sub = volume_to_slice_stack(vol, num_slices, indices=[0, 5])
    assert np.array_equal(np.asarray(sub), np.asarray(stack)[[0, 5]])


def test_slice_stack_round_trip():
    vol = torch.rand(1, 4, 5, 7)
    stack = volume_to_slice_stack(vol, 1)  # (7, 1, 4, 5)
    assert torch.equal(slice_stack_to_volume(stack), vol)
    assert np.array_equal(slice_stack_to_volume(stack.numpy()), vol.numpy())


def test_slice_stacking_errors():
    with pytest.raises(ValueError, match="odd positive"):
        slice_neighbours([0], 5, 4)
    with pytest.raises(ValueError, match="single-channel"):
        volume_to_slice_stack(torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\(D, C, H, W\)"):
        slice_stack_to_volume(torch.zeros(4, 4, 3))
