"""``unet-monai evaluate``: case matching, CSV contents checked by hand, the summary table, bad pairs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet_monai.cli import main
from unet_monai.cli.evaluate import match_key


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
    return path


@pytest.mark.parametrize(
    "pred, label",
    [
        ("volume-3_seg.nii.gz", "segmentation-3.nii.gz"),
        ("liver_7_seg.nii.gz", "liver_7.nii.gz"),
        ("case_a.nii", "case_a.nii.gz"),
        ("volume-12_seg.nrrd", "segmentation-12.nii"),
    ],
)
def test_match_key(pred, label):
    assert match_key(pred, prediction=True) == match_key(label)


def test_identical_predictions(lits_data, tmp_path, capsys):
    """Labels copied as predictions: Dice 1, VOE 0, RVD 0, ASSD 0, HD95 0 for every case and region."""
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in sorted(lits_data.glob("segmentation-*.nii.gz")):
        shutil.copy(label, pred / label.name.replace("segmentation", "volume").replace(".nii.gz", "_seg.nii.gz"))
    (pred / "volume-0_prob.nii.gz").write_bytes(b"ignored")  # probabilities are not predictions
    assert main(["evaluate", "--pred", str(pred), "--label", str(lits_data)]) == 0
    rows = read_csv(pred / "metrics_per_case.csv")
    assert [r["case"] for r in rows] == ["volume-0", "volume-1"]
    for row in rows:
        for key, value in row.items():
            if key == "case":
                continue
            assert float(value) == (1.0 if key.startswith("dice") else 0.0), (key, value)
    summary = {r["metric"]: r for r in read_csv(pred / "metrics_summary.csv")}
    assert float(summary["global_dice_liver_tumour"]["mean"]) == 1.0
    assert summary["dice_liver"]["n"] == "2"
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["metric", "liver", "tumour", "liver_tumour"]
    assert "global dice" in out and "hd95 (mm)" in out and "2 case(s) evaluated" in out


def test_values_by_hand(tmp_path):
    """One case, anisotropic voxels: liver over-segmented by one slab, tumour shifted by 2 voxels along x."""
    affine = np.diag([2.0, 0.8, 3.0, 1.0])
    label = np.zeros((16, 12, 8), np.uint8)
    label[2:10, 2:10, 2:6] = 1  # liver 8x8x4 = 256
    label[4] = np.where(label[4] == 1, 2, 0)  # a one-voxel-thick tumour plane: 32 voxels
    pred = label.copy()
    pred[4] = np.where(pred[4] == 2, 1, pred[4])
    pred[6] = np.where(pred[6] == 1, 2, 0)  # tumour plane moved by 2 voxels along x (2 mm each)
    pred[10, 2:10, 2:6] = 1  # 32 extra liver voxels
    (tmp_path / "pred").mkdir()
    (tmp_path / "label").mkdir()
    save(pred, affine, tmp_path / "pred" / "c1_seg.nii.gz")
    save(label, affine, tmp_path / "label" / "c1.nii.gz")
    out = tmp_path / "tables"
    assert (
        main(["evaluate", "--pred", str(tmp_path / "pred"), "--label", str(tmp_path / "label"), "--out", str(out)]) == 0
    )
    (row,) = read_csv(out / "metrics_per_case.csv")
    # whole liver: reference 256, prediction 288, overlap 256
    assert float(row["dice_liver_tumour"]) == pytest.approx(2 * 256 / (256 + 288), abs=1e-6)
    assert float(row["voe_liver_tumour"]) == pytest.approx(1 - 256 / 288, abs=1e-6)
    assert float(row["rvd_liver_tumour"]) == pytest.approx(32 / 256, abs=1e-6)
    # tumour: two disjoint planes 2 voxels apart along x (2 mm voxels): every surface distance is 4 mm
    assert float(row["dice_tumour"]) == 0.0 and float(row["rvd_tumour"]) == 0.0
    assert float(row["hd95_tumour"]) == pytest.approx(4.0) and float(row["assd_tumour"]) == pytest.approx(4.0)
    # liver (label 1): reference 224, prediction 256, overlap 192
    assert float(row["dice_liver"]) == pytest.approx(2 * 192 / (224 + 256), abs=1e-6)


def test_bad_pairs(lits_data, tmp_path, capsys):
    pred, label = tmp_path / "pred", tmp_path / "label"
    pred.mkdir()
    label.mkdir()
    seg = nib.load(lits_data / "segmentation-0.nii.gz")
    data = np.asarray(seg.dataobj)
    save(data, seg.affine, label / "good.nii.gz")
    save(data, seg.affine, pred / "good_seg.nii.gz")
    save(data, seg.affine, label / "shape.nii.gz")
    save(data[:, :, :-1], seg.affine, pred / "shape_seg.nii.gz")
    save(data, seg.affine, label / "moved.nii.gz")
    shifted = seg.affine.copy()
    shifted[0, 3] += 5
    save(data, shifted, pred / "moved_seg.nii.gz")
    save(data, seg.affine, label / "values.nii.gz")
    save(np.where(data == 1, 7, data), seg.affine, pred / "values_seg.nii.gz")
    save(data, seg.affine, pred / "orphan_seg.nii.gz")
    save(data, seg.affine, label / "unpredicted.nii.gz")
    (label / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    save(data, seg.affine, pred / "broken_seg.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--label", str(label)]) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    expected = {
        pred / "shape_seg.nii.gz": "shape (40, 40, 15) differs from the label shape.nii.gz (40, 40, 16)",
        pred / "moved_seg.nii.gz": "affine differs from the label moved.nii.gz by up to 5 mm",
        pred / "values_seg.nii.gz": "values [7] outside {0, 1, 2}",
        pred / "orphan_seg.nii.gz": "no label for case 'orphan'",
        label / "unpredicted.nii.gz": "no prediction for case 'unpredicted'",
        label / "broken.nii.gz": "cannot read the label map",
    }
    assert len(lines) == len(expected), lines
    for path, problem in expected.items():
        (line,) = [x for x in lines if x.startswith(f"error: {path}: ")]
        assert problem in line, line
    assert [r["case"] for r in read_csv(pred / "metrics_per_case.csv")] == ["good"]


def test_missing_folders(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path / "nope"), "--label", str(tmp_path)]) == 1
    assert f"error: {tmp_path / 'nope'}: does not exist." in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "empty"), "--label", str(tmp_path / "empty")]) == 1
    assert "no case could be evaluated" in capsys.readouterr().err


def test_skip_unpredicted(lits_data, tmp_path, capsys):
    """A whole dataset as --label and the predictions of one case: an error, unless --skip-unpredicted."""
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(lits_data / "segmentation-1.nii.gz", pred / "volume-1_seg.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--label", str(lits_data)]) == 1
    assert "no prediction for case 'volume-0'" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--label", str(lits_data), "--skip-unpredicted"]) == 0
    assert [r["case"] for r in read_csv(pred / "metrics_per_case.csv")] == ["volume-1"]
