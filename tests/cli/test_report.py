"""``unet-monai report``: the sections of a complete run, a bundle folder as RUN_DIR, graceful degradation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet_monai.cli import main
from unet_monai.data.lits import find_cases

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def eval_dir(lits_data, tmp_path) -> Path:
    """What a bundle's train + evaluate configs leave in eval/: history, datalist, per-case metrics, predictions."""
    folder = tmp_path / "bundle" / "eval"
    (folder / "predictions").mkdir(parents=True)
    (tmp_path / "bundle" / "configs").mkdir()
    history = {
        "train": [
            {"epoch": e, "iteration": 4 * e, "loss": 1.5 / e, "focal": 0.5 / e, "lr": 3e-4, "seconds": 2.0}
            for e in (1, 2, 3, 4)
        ],
        "validation": [
            {"epoch": e, "val_mean_dice": d, "val_dice_liver": d + 0.1, "val_dice_tumour": d - 0.1, "val_hd95": 30.0}
            for e, d in ((2, 0.4), (4, 0.6))
        ],
    }  # fmt: skip
    (folder / "history.json").write_text(json.dumps(history))
    cases = find_cases(lits_data)
    (folder / "datalist.json").write_text(json.dumps({"training": [], "validation": cases}))
    rows = []
    for i, case in enumerate(cases):
        label = nib.load(case["label"])
        pred = np.asarray(label.dataobj).copy()
        if i == 1:
            pred[:, : pred.shape[1] // 2] = 0  # the worse case: half of it missed
        nib.save(nib.Nifti1Image(pred, label.affine), folder / "predictions" / f"{case['case']}_seg.nii.gz")
        rows.append({"case": case["case"], "dice_liver": 0.9 - 0.5 * i, "dice_tumour": "nan", "hd95_liver": 3.0 + i})
    with open(folder / "metrics_per_case.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_full_report(eval_dir, capsys):
    assert main(["report", str(eval_dir.parent)]) == 0  # the bundle folder: its eval/ is used
    page = (eval_dir / "report.html").read_text()
    for section in ("Learning curves", "Validation Dice per class", "Per-case metrics (2 cases)",
                    "Best case: volume-0", "Worst case: volume-1"):  # fmt: skip
        assert f"<h2>{section}</h2>" in page, section
    assert page.count('src="data:image/png;base64,') == 4  # curves, Dice per class, best, worst
    assert "best mean Dice 0.6000 at epoch 4" in page
    assert 'class="missing"' not in page
    assert (eval_dir / "report.png").read_bytes()[:8] == PNG
    assert "warning" not in capsys.readouterr().err


def test_partial_report(eval_dir, tmp_path, capsys):
    """Without history.json and predictions: the metric table, and the missing parts named."""
    (eval_dir / "history.json").unlink()
    shutil.rmtree(eval_dir / "predictions")
    out = tmp_path / "report"
    assert main(["report", str(eval_dir), "--out", str(out), "--format", "html"]) == 0
    page = (out / "report.html").read_text()
    assert "<h2>Per-case metrics (2 cases)</h2>" in page and "no history.json" in page
    assert "no predictions/ folder" in page and "data:image/png" not in page
    err = capsys.readouterr().err
    assert "warning: no history.json" in err and not (out / "report.png").exists()


def test_nothing_to_report(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: nothing to report")
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
