"""Input discovery, the ITK (LPS) <-> NIfTI (RAS) geometry conversion and the RAS views."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from unet_monai.cli.io import (
    InputError,
    case_name,
    collect_inputs,
    from_ras,
    itk_to_nifti_affine,
    nifti_to_itk_geometry,
    open_volume,
    ras_affine,
    ras_shape,
    to_ras,
)


def oblique_affine(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    return affine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_itk_affine_matches_itk_nifti_reader(tmp_path, seed):
    """ITK reading a NIfTI gives LPS direction/spacing/origin that convert back to the NIfTI affine."""
    affine = oblique_affine(seed)
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, tmp_path / "x.nii.gz")
    itk = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(
        itk_to_nifti_affine(itk.GetDirection(), itk.GetSpacing(), itk.GetOrigin()), affine, atol=1e-4
    )
    direction, spacing, origin = nifti_to_itk_geometry(affine)
    np.testing.assert_allclose(direction, itk.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(spacing, itk.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(origin, itk.GetOrigin(), atol=1e-4)


def test_itk_2d_affine():
    # direction [[0, 1], [1, 0]] times spacing diag(0.5, 0.25), then x and y negated (LPS -> RAS)
    affine = itk_to_nifti_affine((0.0, 1.0, 1.0, 0.0), (0.5, 0.25), (10.0, -20.0))
    expected = np.array([[0, -0.25, 0, -10], [-0.5, 0, 0, 20], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(affine, expected)


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("R", "A", "S"), ("A", "S", "L"), ("S", "R", "P")])
def test_ras_views(codes):
    """to_ras equals nibabel's closest canonical image; from_ras undoes it; no copy is made."""
    ornt = nib.orientations.axcodes2ornt(codes)
    shape = (4, 5, 6)
    affine = nib.orientations.inv_ornt_aff(ornt, shape) @ np.diag([0.8, 0.9, 2.0, 1.0])
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    view = to_ras(data, affine)
    np.testing.assert_array_equal(view, np.asarray(canonical.dataobj))
    assert np.shares_memory(view, data)
    np.testing.assert_allclose(ras_affine(affine, shape), canonical.affine)
    assert ras_shape(shape, affine) == view.shape
    np.testing.assert_array_equal(from_ras(view, affine), data)
    channels = np.stack([data, -data], axis=-1)  # trailing axes are carried along
    np.testing.assert_array_equal(from_ras(to_ras(channels, affine), affine), channels)


def test_collect_inputs(lits_data, tmp_path):
    # a LiTS dataset folder: its volumes, not its segmentations
    assert [i.case for i in collect_inputs(lits_data)] == ["volume-0", "volume-1"]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("b10.nii.gz", "b2.nrrd", "a.mha", ".hidden.nii.gz"):
        (folder / name).write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    items = collect_inputs(folder)
    assert [(i.path.name, i.case, i.kind) for i in items] == [
        ("a.mha", "a", "itk"), ("b2.nrrd", "b2", "itk"), ("b10.nii.gz", "b10", "nifti"),
    ]  # fmt: skip
    single = collect_inputs(folder / "b10.nii.gz")
    assert [(i.case, i.kind) for i in single] == [("b10", "nifti")]
    with pytest.raises(InputError, match="does not exist"):
        collect_inputs(tmp_path / "nope")
    os.symlink(tmp_path / "gone", tmp_path / "link.nii.gz")
    with pytest.raises(InputError, match="broken symbolic link"):
        collect_inputs(tmp_path / "link.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image"):
        collect_inputs(tmp_path / "empty")


def test_collect_dicom_folders(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16))
    for name in ("study/s1", "study/s2"):
        (tmp_path / name).mkdir(parents=True)
        for i in range(3):
            s = image[:, :, i]
            s.SetMetaData("0020|000e", f"1.2.3.{name[-1]}")
            s.SetMetaData("0020|0013", str(i))
            s.SetMetaData("0020|0032", f"0\\0\\{i}")
            sitk.WriteImage(s, str(tmp_path / name / f"{i}.dcm"))
    items = collect_inputs(tmp_path / "study")
    assert [(i.case, i.kind) for i in items] == [("s1", "dicom"), ("s2", "dicom")]
    assert [(i.case, i.kind) for i in collect_inputs(tmp_path / "study" / "s1")] == [("s1", "dicom")]


def test_case_name(tmp_path):
    assert case_name("/x/volume-3.nii.gz") == "volume-3"
    assert case_name("/x/ct.scan.1.5mm.nrrd") == "ct.scan.1.5mm"
    assert case_name(tmp_path) == tmp_path.name


def test_open_volume_refusals(tmp_path):
    """Several DICOM series in one folder, colour images: one clear problem each."""
    folder = tmp_path / "two_series"
    folder.mkdir()
    image = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the series uid set below
    for series in ("1.2.3.1", "1.2.3.2"):
        for i in range(3):
            s = image[:, :, i]
            s.SetMetaData("0020|000e", series)
            s.SetMetaData("0020|0032", f"0\\0\\{i}")
            writer.SetFileName(str(folder / f"{series}_{i}.dcm"))
            writer.Execute(s)
    (item,) = collect_inputs(folder)
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        open_volume(item, 3, tmp_path)
    rgb = sitk.GetImageFromArray(np.zeros((6, 8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    (item,) = collect_inputs(tmp_path / "rgb.mha")
    with pytest.raises(InputError, match="3 components per voxel"):
        open_volume(item, 3, tmp_path)
