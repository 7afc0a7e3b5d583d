"""``unet-monai synth``: the generator's options passed through, and a clear error for a bad output folder."""

from __future__ import annotations

import json

import nibabel as nib

from unet_monai.cli import main


def test_synth_lits_layout(tmp_path, capsys):
    out = tmp_path / "data"
    args = [
        "synth",
        "--out",
        str(out),
        "--cases",
        "2",
        "--seed",
        "5",
        "--size",
        "32",
        "--slices",
        "8",
        "--layout",
        "lits",
    ]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "segmentation-0.nii.gz", "segmentation-1.nii.gz", "volume-0.nii.gz", "volume-1.nii.gz",
    ]  # fmt: skip
    assert nib.load(out / "volume-1.nii.gz").shape == (32, 32, 8)
    assert json.loads((out / "generation.json").read_text())["arguments"]["seed"] == 5
    assert "wrote 2 cases" in capsys.readouterr().out


def test_synth_msd_layout_and_help(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "msd"), "--cases", "1", "--size", "32", "--slices", "8",
                 "--layout", "msd"]) == 0  # fmt: skip
    assert (tmp_path / "msd" / "imagesTr" / "liver_0.nii.gz").is_file()
    assert main(["synth", "--help"]) == 0
    assert "--max-tumours" in capsys.readouterr().out
    assert main(["synth", "--cases", "1"]) == 2  # --out is required: a usage error


def test_synth_output_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["synth", "--out", str(blocker), "--cases", "1", "--size", "32", "--slices", "8"]) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: {blocker}: ")
    assert blocker.read_text() == "x"
