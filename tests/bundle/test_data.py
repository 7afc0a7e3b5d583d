"""Datalists of the bundles: which cases ``evaluate.json`` scores."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from unet_monai.bundle import evaluation_cases
from unet_monai.data import generate_dataset
from unet_monai.data.synthetic_microscopy import generate_dataset as generate_darkfield_dataset

from .common import cpu_parser

LITS_BUNDLES = [
    "liver_ct_unet3plus_2d_segmentation",
    "liver_ct_unetplusplus_2d_segmentation",
    "liver_ct_unet3plus_3d_segmentation",
    "liver_ct_unetplusplus_3d_segmentation",
]
SPLIT = {
    "training": [{"image": "a.nii.gz", "label": "sa.nii.gz"}],
    "validation": [{"image": "b.nii.gz", "label": "sb.nii.gz"}],
}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out")
    generate_dataset(root, num_cases=2, seed=5, size=32, slices=8)
    return root


@pytest.mark.parametrize("test_dir", ["", None, "None"])
def test_without_a_test_folder_the_validation_split_is_evaluated(test_dir):
    assert evaluation_cases(SPLIT, test_dir) == SPLIT["validation"]


def test_a_test_folder_gives_all_its_labelled_cases(held_out):
    cases = evaluation_cases(SPLIT, held_out)
    assert [c["case"] for c in cases] == ["volume-0", "volume-1"]
    assert all(c["label"].endswith(f"segmentation-{i}.nii.gz") for i, c in enumerate(cases))


@pytest.fixture
def data_log(caplog, monkeypatch):
    """The module's log records, caught on its own logger: earlier tests in the same worker may have left the
    package logger not propagating or the logger disabled (logging configuration by the tools they run)."""
    logger = logging.getLogger("unet_monai.bundle.data")
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_training_cases_in_the_test_folder_are_named_in_a_warning(held_out, data_log):
    caplog = data_log
    split = {"training": [{"image": str(held_out / "volume-1.nii.gz")}], "validation": []}
    assert len(evaluation_cases(split, held_out)) == 2
    assert "holds 1 of the training cases (volume-1)" in caplog.text
    caplog.clear()
    evaluation_cases(SPLIT, held_out)
    assert not [r for r in caplog.records if r.name == "unet_monai.bundle.data"]  # other modules may log INFO


def test_a_missing_test_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test_dir: .*nowhere.* does not exist"):
        evaluation_cases(SPLIT, tmp_path / "nowhere")


def test_a_test_folder_with_an_unlabelled_image_is_refused(held_out, tmp_path):
    for name in ("volume-0.nii.gz", "volume-1.nii.gz", "segmentation-0.nii.gz"):
        (tmp_path / name).write_bytes((held_out / name).read_bytes())
    with pytest.raises((FileNotFoundError, ValueError), match=r"test_dir: .*volume-1"):
        evaluation_cases(SPLIT, tmp_path)


@pytest.mark.parametrize("bundle", LITS_BUNDLES)
def test_evaluate_config_reads_test_dir(bundle, held_out, tmp_path):
    parser = cpu_parser(bundle, "train.json", "evaluate.json", test_dir=str(held_out), output_dir=str(tmp_path))
    parser["datalist"] = SPLIT
    assert [c["case"] for c in parser.get_parsed_content("validate#dataset#data")] == ["volume-0", "volume-1"]
    parser["test_dir"] = ""
    parser.parse()
    assert parser.get_parsed_content("validate#dataset#data") == SPLIT["validation"]


def test_an_unknown_layout_is_named():
    with pytest.raises(ValueError, match=r"layout must be one of \['lits', 'microscopy'\], got 'nifti'"):
        evaluation_cases(SPLIT, "", layout="nifti")


@pytest.fixture(scope="module")
def held_out_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_out_images")
    generate_darkfield_dataset(root, num_images=2, seed=5, size=64)
    return root


def test_microscopy_evaluate_config_reads_test_dir(held_out_images, tmp_path):
    bundle = "darkfield_microscopy_unetplusplus_segmentation"
    parser = cpu_parser(bundle, "train.json", "evaluate.json", test_dir=str(held_out_images), output_dir=str(tmp_path))
    parser["datalist"] = SPLIT
    cases = parser.get_parsed_content("validate#dataset#data")
    assert [Path(c["image"]).parent for c in cases] == [held_out_images / "images"] * 2
    assert all("label" in c for c in cases)
    parser["test_dir"] = ""
    parser.parse()
    assert parser.get_parsed_content("validate#dataset#data") == SPLIT["validation"]


def test_a_microscopy_test_folder_without_masks_is_refused(held_out_images, tmp_path):
    (tmp_path / "images").mkdir()
    for image in (held_out_images / "images").iterdir():
        (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    with pytest.raises(ValueError, match=r"test_dir: .*has no masks/ folder"):
        evaluation_cases(SPLIT, tmp_path, layout="microscopy")
