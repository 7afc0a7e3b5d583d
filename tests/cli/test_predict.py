"""``unet-monai predict``: outputs with the input's geometry, the streamed path equal to the bundle's, bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.cli.conftest import TINY, TINY_2D, TINY_3D, make_bundle, override_args
from unet_monai.cli import main
from unet_monai.cli.io import itk_to_nifti_affine

ARGS_2D = override_args(TINY_2D)
ARGS_3D = override_args(TINY_3D)


def predict(bundle: Path, inputs: list[Path] | Path, out: Path, *extra: str) -> int:
    paths = [inputs] if isinstance(inputs, Path) else inputs
    return main(["predict", "-q", "--bundle", str(bundle), "-i", *map(str, paths), "-o", str(out), *extra])


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name]


def assert_same_geometry(pred_path: Path, image_path: Path) -> None:
    pred, image = nib.load(pred_path), nib.load(image_path)
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
    assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(image.affine)
    assert pred.get_data_dtype() == np.uint8
    assert int(pred.header["sform_code"]) == int(image.header["sform_code"])
    assert int(pred.header["qform_code"]) == int(image.header["qform_code"])
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2}


def variants(lits_data: Path, dest: Path) -> list[Path]:
    """The two generated cases plus awkward storage: int16 scaled big-endian, axial axis first, 2D slice."""
    dest.mkdir(exist_ok=True)
    paths = [shutil.copy(lits_data / f"volume-{i}.nii.gz", dest) for i in (0, 1)]
    img = nib.load(lits_data / "volume-1.nii.gz")
    hu = np.asarray(img.dataobj).astype(np.int32)
    scaled = nib.Nifti1Image((hu + 1024).astype(">i2"), img.affine)
    scaled.header.set_slope_inter(1.0, -1024.0)
    nib.save(scaled, dest / "scaled_be.nii.gz")
    permuted = nib.Nifti1Image(
        np.ascontiguousarray(hu.astype(np.int16).transpose(2, 0, 1)), img.affine[:, [2, 0, 1, 3]]
    )
    nib.save(permuted, dest / "axial_first.nii")
    nib.save(nib.Nifti1Image(hu.astype(np.int16)[..., None], img.affine), dest / "singleton4d.nii.gz")
    extra = ["scaled_be.nii.gz", "axial_first.nii", "singleton4d.nii.gz"]
    return [Path(p) for p in paths] + [dest / name for name in extra]


def test_predict_folder_keeps_geometry(bundle_2d, lits_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(bundle_2d, lits_data, out, *ARGS_2D) == 0
    volumes = sorted(lits_data.glob("volume-*.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == sorted(v.name.replace(".nii.gz", "_seg.nii.gz") for v in volumes)
    for volume in volumes:
        assert_same_geometry(out / volume.name.replace(".nii.gz", "_seg.nii.gz"), volume)
    assert error_lines(capsys.readouterr().err) == []


def test_streamed_equals_bundle_pipeline(conv_bundle, lits_data, tmp_path):
    """Slabs of 4 slices (2 kept, 2.5D border 1 each side) give exactly the whole-volume pipeline's results."""
    data = variants(lits_data, tmp_path / "in")
    small = ["--batch-size", "2", "--slab", "4", "--override", "spatial_size=[32,32]", "--save-probabilities"]
    streamed, whole = tmp_path / "streamed", tmp_path / "whole"
    assert predict(conv_bundle, data, streamed, *small) == 0
    assert predict(conv_bundle, data, whole, *small, "--no-stream") == 0
    classes = set()
    for path in data:
        case = path.name.split(".")[0]
        a, b = labels_of(streamed / f"{case}_seg.nii.gz"), labels_of(whole / f"{case}_seg.nii.gz")
        np.testing.assert_array_equal(a, b)
        pa = np.asarray(nib.load(streamed / f"{case}_prob.nii.gz").dataobj.get_unscaled())
        pb = np.asarray(nib.load(whole / f"{case}_prob.nii.gz").dataobj.get_unscaled())
        np.testing.assert_array_equal(pa, pb)
        assert_same_geometry(streamed / f"{case}_seg.nii.gz", path)
        classes |= set(np.unique(a).tolist())
    assert classes == {0, 1, 2}
    # the same labels whatever the storage: scaled big-endian int16 and axial-first copies of volume-1
    ref = labels_of(streamed / "volume-1_seg.nii.gz")
    np.testing.assert_array_equal(labels_of(streamed / "scaled_be_seg.nii.gz"), ref)
    np.testing.assert_array_equal(labels_of(streamed / "axial_first_seg.nii.gz").transpose(1, 2, 0), ref)
    np.testing.assert_array_equal(labels_of(streamed / "singleton4d_seg.nii.gz"), ref[..., None])  # (X, Y, Z, 1) kept


def test_equals_bundle_workflow(conv_bundle, lits_data, tmp_path):
    """The streamed labels equal what the bundle's own inference workflow (monai.bundle) writes."""
    from monai.bundle import ConfigWorkflow

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    # both on the CPU: a GPU's float16 autocast moves a voxel near a class boundary (1 in 25,600 on an H100)
    assert predict(conv_bundle, lits_data, ours, "--override", "spatial_size=[32,32]", "--device", "cpu") == 0
    workflow = ConfigWorkflow(
        config_file=str(conv_bundle / "configs" / "inference.json"),
        workflow_type="infer",
        bundle_root=str(conv_bundle),
        dataset_dir=str(lits_data),
        output_dir=str(theirs),
        spatial_size=[32, 32],
        device=torch.device("cpu"),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    for volume in sorted(lits_data.glob("volume-*.nii.gz")):
        name = volume.name.replace(".nii.gz", "_seg.nii.gz")
        np.testing.assert_array_equal(labels_of(ours / name), labels_of(theirs / name))


def test_tta(conv_bundle, lits_data, tmp_path):
    volume = lits_data / "volume-1.nii.gz"
    plain, tta, tta_whole = tmp_path / "plain", tmp_path / "tta", tmp_path / "tta_whole"
    args = ["--override", "spatial_size=[32,32]"]
    assert predict(conv_bundle, volume, plain, *args) == 0
    assert predict(conv_bundle, volume, tta, *args, "--tta") == 0
    assert predict(conv_bundle, volume, tta_whole, *args, "--tta", "--no-stream") == 0
    a, b = labels_of(plain / "volume-1_seg.nii.gz"), labels_of(tta / "volume-1_seg.nii.gz")
    assert a.shape == b.shape and (a != b).any()  # the network is not flip-symmetric
    np.testing.assert_array_equal(b, labels_of(tta_whole / "volume-1_seg.nii.gz"))


def test_skip_and_overwrite(bundle_2d, lits_data, tmp_path, capsys):
    volume, out = lits_data / "volume-0.nii.gz", tmp_path / "out"
    assert predict(bundle_2d, volume, out, *ARGS_2D) == 0
    seg = out / "volume-0_seg.nii.gz"
    os.utime(seg, (1, 1))
    capsys.readouterr()
    assert main(["predict", "-b", str(bundle_2d), "-i", str(volume), "-o", str(out), *ARGS_2D]) == 0
    assert "skipping" in capsys.readouterr().err and seg.stat().st_mtime == 1
    # an output asked for that is missing: predicted again
    assert predict(bundle_2d, volume, out, *ARGS_2D, "--overlay") == 0
    assert (out / "volume-0_overlay.png").is_file() and seg.stat().st_mtime > 1
    os.utime(seg, (1, 1))
    assert predict(bundle_2d, volume, out, *ARGS_2D, "--overwrite") == 0
    assert seg.stat().st_mtime > 1


def test_probabilities_and_overlay(conv_bundle, lits_data, tmp_path):
    volume, out = lits_data / "volume-1.nii.gz", tmp_path / "out"
    assert (
        predict(conv_bundle, volume, out, "--override", "spatial_size=[32,32]", "--save-probabilities", "--overlay")
        == 0
    )
    labels = labels_of(out / "volume-1_seg.nii.gz")
    prob_img = nib.load(out / "volume-1_prob.nii.gz")
    assert prob_img.get_data_dtype() == np.uint8 and prob_img.shape == (*labels.shape, 3)
    np.testing.assert_allclose(prob_img.affine, nib.load(volume).affine, atol=1e-5)
    prob = prob_img.get_fdata()
    assert prob.min() >= 0 and prob.max() <= 1 + 1e-6  # scl_slope is a float32 1/255
    np.testing.assert_allclose(prob.sum(-1), 1.0, atol=2 / 255)
    assert (prob.argmax(-1) == labels).mean() > 0.99  # quantisation may tie near-equal classes
    png = (out / "volume-1_overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def _itk_image(lits_data: Path) -> sitk.Image:
    """volume-1 as an ITK image with an oblique direction and an origin (geometry in LPS)."""
    image = sitk.ReadImage(str(lits_data / "volume-1.nii.gz"))
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple((rotation @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel()))
    image.SetOrigin((12.5, -40.0, 300.0))
    return image


def _assert_itk_geometry(seg: Path, image: sitk.Image) -> None:
    out = sitk.ReadImage(str(seg))
    assert out.GetSize() == image.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(out.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(out.GetDirection(), image.GetDirection(), atol=1e-5)
    expected = itk_to_nifti_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    np.testing.assert_allclose(nib.load(seg).affine, expected, atol=1e-3)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_itk_input(conv_bundle, lits_data, tmp_path, ext):
    plain = sitk.ReadImage(str(lits_data / "volume-1.nii.gz"))
    oblique = _itk_image(lits_data)
    sitk.WriteImage(plain, str(tmp_path / f"plain{ext}"))
    sitk.WriteImage(oblique, str(tmp_path / f"oblique{ext}"))
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ["--override", "spatial_size=[32,32]"]
    assert predict(conv_bundle, [tmp_path / f"plain{ext}", tmp_path / f"oblique{ext}"], out, *args) == 0
    assert predict(conv_bundle, lits_data / "volume-1.nii.gz", ref, *args) == 0
    _assert_itk_geometry(out / "oblique_seg.nii.gz", oblique)
    _assert_itk_geometry(out / "plain_seg.nii.gz", plain)
    # read back by ITK, the labels of the NRRD/MHA copy are those of the NIfTI original, voxel for voxel
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "plain_seg.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(ref / "volume-1_seg.nii.gz")))
    np.testing.assert_array_equal(a, b)


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.4242"
    d = image.GetDirection()
    for i in range(image.GetDepth()):
        s = image[:, :, i]
        tags = {
            "0020|000e": uid, "0020|000d": uid + ".1", "0008|0060": "CT", "0020|0013": str(i),
            "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, i))),
            "0028|1052": "0", "0028|1053": "1",
        }  # fmt: skip
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series(conv_bundle, lits_data, tmp_path):
    image = _itk_image(lits_data)
    _write_dicom_series(image, tmp_path / "series_1")
    out = tmp_path / "out"
    assert predict(conv_bundle, tmp_path / "series_1", out, "--override", "spatial_size=[32,32]") == 0
    assert sorted(p.name for p in out.iterdir()) == ["series_1_seg.nii.gz"]
    _assert_itk_geometry(out / "series_1_seg.nii.gz", image)


def test_2d_image_with_2d_bundle(conv_bundle, lits_data, tmp_path):
    img = nib.load(lits_data / "volume-0.nii.gz")
    slice_2d = nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 7], img.affine)
    nib.save(slice_2d, tmp_path / "slice.nii.gz")
    out = tmp_path / "out"
    assert predict(conv_bundle, tmp_path / "slice.nii.gz", out, "--override", "spatial_size=[32,32]") == 0
    seg = nib.load(out / "slice_seg.nii.gz")
    assert seg.shape == slice_2d.shape
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-5)


def test_3d_bundle(bundle_3d, lits_data, tmp_path, capsys):
    volume, out = lits_data / "volume-1.nii.gz", tmp_path / "out"
    slice_2d = tmp_path / "slice.nii.gz"
    img = nib.load(volume)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 3], img.affine), slice_2d)
    assert predict(bundle_3d, [volume, slice_2d], out, *ARGS_3D) == 1
    assert_same_geometry(out / "volume-1_seg.nii.gz", volume)
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {slice_2d}: a 2D image (shape (40, 40))") and "3D bundle" in line
    assert not (out / "slice_seg.nii.gz").exists()


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_in_a_folder(bundle_2d, lits_data, tmp_path, capsys):
    """Each bad file: one line naming it; the good file is still predicted; nothing partial is left."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(lits_data / "volume-0.nii.gz", folder / "good.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    data = (lits_data / "volume-1.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "short.nii").write_bytes(nib.load(lits_data / "volume-1.nii.gz").to_bytes()[:2000])
    img = nib.load(lits_data / "volume-0.nii.gz")
    series = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(series, img.affine), folder / "series4d.nii.gz")
    (folder / "garbage.mha").write_bytes(b"this is not an image\n" * 10)
    nan = np.asarray(img.dataobj).astype(np.float32)
    nan[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, img.affine), folder / "nan.nii.gz")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "out"
    assert predict(bundle_2d, folder, out, *ARGS_2D) == 1
    lines = error_lines(capsys.readouterr().err)
    expected = {
        "empty.nii.gz": "empty file (0 bytes)",
        "truncated.nii.gz": "truncated",
        "short.nii": "truncated",
        "series4d.nii.gz": "a 4D volume (shape (40, 40, 16, 2))",
        "garbage.mha": "not an image SimpleITK can read",
        "nan.nii.gz": "non-finite voxels (1 NaN/Inf",
    }
    assert len(lines) == len(expected), lines
    for name, problem in expected.items():
        (line,) = [x for x in lines if x.startswith(f"error: {folder / name}: ")]
        assert problem in line, line
    assert sorted(p.name for p in out.iterdir()) == ["good_seg.nii.gz"]
    assert_same_geometry(out / "good_seg.nii.gz", folder / "good.nii.gz")


def test_input_folder_is_output_folder(bundle_2d, lits_data, tmp_path):
    """Predicting a folder into itself twice: the outputs of the first run are not inputs of the second."""
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(lits_data / "volume-0.nii.gz", folder / "ct.nii.gz")
    for _ in range(2):
        assert predict(bundle_2d, [folder, folder / "ct.nii.gz"], folder, *ARGS_2D, "--overwrite") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["ct.nii.gz", "ct_seg.nii.gz"]


def test_missing_input(bundle_2d, lits_data, tmp_path, capsys):
    missing = tmp_path / "nope.nii.gz"
    out = tmp_path / "out"
    assert predict(bundle_2d, [missing, lits_data / "volume-0.nii.gz"], out, *ARGS_2D) == 1
    assert error_lines(capsys.readouterr().err) == [f"error: {missing}: does not exist (no such file or folder)."]
    assert (out / "volume-0_seg.nii.gz").is_file()


def test_unreadable_file(bundle_2d, lits_data, tmp_path, capsys, monkeypatch):
    """chmod 000 where permissions apply; as root (permissions bypassed) the denial is simulated."""
    path = tmp_path / "locked.nii.gz"
    shutil.copy(lits_data / "volume-0.nii.gz", path)
    path.chmod(0)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode, **kw: False if Path(p) == path else real_access(p, mode, **kw)
        )
    try:
        assert predict(bundle_2d, path, tmp_path / "out", *ARGS_2D) == 1
    finally:
        path.chmod(0o644)
    assert error_lines(capsys.readouterr().err) == [f"error: {path}: cannot be read: permission denied."]
    assert list((tmp_path / "out").iterdir()) == []


def test_output_folder_not_writable(bundle_2d, lits_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert predict(bundle_2d, lits_data / "volume-0.nii.gz", out, *ARGS_2D) == 1
        (line,) = error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: {out}: cannot ")
    assert blocker.read_text() == "x"


def test_failed_write_leaves_nothing(bundle_2d, lits_data, tmp_path, capsys, monkeypatch):
    def failing_save(img, filename):  # half a file, then the disk is full
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", failing_save)
    out = tmp_path / "out"
    assert predict(bundle_2d, lits_data / "volume-0.nii.gz", out, *ARGS_2D) == 1
    (line,) = error_lines(capsys.readouterr().err)
    seg, volume = out / "volume-0_seg.nii.gz", lits_data / "volume-0.nii.gz"
    assert line == f"error: {seg}: cannot write (No space left on device); input {volume}."
    assert list(out.iterdir()) == []


def test_bundle_problems(bundle_2d, lits_data, tmp_path, capsys):
    volume = lits_data / "volume-0.nii.gz"
    no_weights = tmp_path / "no_weights"
    shutil.copytree(bundle_2d, no_weights, ignore=shutil.ignore_patterns("models"))
    assert predict(no_weights, volume, tmp_path / "o1", *ARGS_2D) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "has no trained weights: models/model.pt (or models/model.ts) not found" in line
    # weights of another width: the overrides must match them
    assert predict(bundle_2d, volume, tmp_path / "o2", "--override", "features=[8,8,8,16,16]") == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "do not fit" in line
    assert predict(bundle_2d, volume, tmp_path / "o3", "--override", "features") == 1
    assert "--override expects KEY=VALUE" in capsys.readouterr().err
    assert predict(tmp_path / "nowhere", volume, tmp_path / "o4") == 1
    assert "does not exist or is not a folder" in capsys.readouterr().err


def test_torchscript_weights(lits_data, tmp_path):
    """A bundle with only models/model.ts (ckpt_export) is used through TorchScript."""
    bundle = make_bundle("liver_ct_unet3plus_2d_segmentation", tmp_path, TINY)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["features"] = TINY["features"]
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    torch.jit.script(net.eval()).save(str(bundle / "models" / "model.ts"))
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert predict(bundle, lits_data / "volume-0.nii.gz", ref, *ARGS_2D) == 0
    (bundle / "models" / "model.pt").unlink()
    assert predict(bundle, lits_data / "volume-0.nii.gz", out, "--override", "spatial_size=[32,32]") == 0
    np.testing.assert_array_equal(labels_of(out / "volume-0_seg.nii.gz"), labels_of(ref / "volume-0_seg.nii.gz"))


@pytest.mark.parametrize("stream", [True, False])
def test_largest_component_filter_of_the_bundle(conv_bundle, lits_data, tmp_path, stream):
    """The bundle's KeepLargestConnectedComponentd is applied: one foreground component, a subset of the raw labels."""
    from scipy import ndimage

    extra = ["--override", "spatial_size=[32,32]", *([] if stream else ["--no-stream"])]
    image = lits_data / "volume-0.nii.gz"
    assert predict(conv_bundle, image, tmp_path / "kept", *extra) == 0
    assert predict(conv_bundle, image, tmp_path / "raw", *extra, "--override", "largest_component_labels=[]") == 0
    kept, raw = (
        labels_of(tmp_path / "kept" / "volume-0_seg.nii.gz"),
        labels_of(tmp_path / "raw" / "volume-0_seg.nii.gz"),
    )
    structure = np.ones((3, 3, 3))  # MONAI's default connectivity: all 26 neighbours
    assert ndimage.label(raw > 0, structure)[1] > 1  # the thresholding network leaves stray voxels
    assert ndimage.label(kept > 0, structure)[1] == 1
    np.testing.assert_array_equal(kept[kept > 0], raw[kept > 0])  # kept voxels keep their class


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", ["volume-0", "volume-1"])  # stored RAS, stored LPS
def test_opening_filter_of_the_bundle_uses_the_input_voxel_size(conv_bundle, lits_data, tmp_path, stream, case):
    """``opening_radius_mm`` applies the bundle's OpenForegroundd in mm of the input's own grid, in any orientation."""
    from unet_monai.data import open_foreground

    extra = ["--override", "spatial_size=[32,32]", "--override", "largest_component_labels=[]"]
    extra += [] if stream else ["--no-stream"]
    image = lits_data / f"{case}.nii.gz"
    assert predict(conv_bundle, image, tmp_path / "raw", *extra) == 0
    assert predict(conv_bundle, image, tmp_path / "open", *extra, "--override", "opening_radius_mm=2.5") == 0
    raw, opened = (labels_of(tmp_path / d / f"{case}_seg.nii.gz") for d in ("raw", "open"))
    spacing = [float(s) for s in nib.load(image).header.get_zooms()[:3]]  # in-plane 0.7 mm, 2.4-4.2 mm slices
    expected = open_foreground(raw[None], 2.5, spacing)[0]
    assert (expected != raw).sum() > 20  # the opening removed something
    np.testing.assert_array_equal(opened, expected)
    assert_same_geometry(tmp_path / "open" / f"{case}_seg.nii.gz", image)
