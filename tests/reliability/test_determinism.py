"""Determinism: two CPU trainings of a real bundle with the same seed give bitwise identical weights.

The bundle runs in this process through ``ConfigWorkflow`` (its ``initialize`` seeds with
``monai.utils.set_determinism(@seed)``; ``EpochSeeder`` re-seeds every epoch). A different seed must give
different weights, so the test can fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from unet_monai.data import generate_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "liver_ct_unetplusplus_2d_segmentation"
TINY = {
    "features": [4, 8, 8, 16, 16],
    "spatial_size": [32, 32],
    "num_workers": 0,
    "batch_size": 4,
    "sw_batch_size": 8,
    "val_fraction": 0.34,
    "epochs": 1,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lits")
    generate_dataset(root, num_cases=3, seed=3, size=40, slices=(12, 16))
    return root


def train_once(dataset: Path, folder: Path, seed: int) -> dict[str, torch.Tensor]:
    bundle = folder / BUNDLE
    shutil.copytree(REPO / "bundles" / BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        workflow_type="train",
        logging_file=False,
        bundle_root=str(bundle),
        dataset_dir=str(dataset),
        seed=seed,
        **TINY,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    history = json.loads((bundle / "eval" / "history.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1]
    return torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)["network"]


def test_same_seed_same_weights_other_seed_other_weights(dataset, tmp_path):
    first = train_once(dataset, tmp_path / "a", seed=0)
    second = train_once(dataset, tmp_path / "b", seed=0)
    other = train_once(dataset, tmp_path / "c", seed=1)
    assert first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "same seed, different weights"
    assert not all(torch.equal(first[k], other[k]) for k in first), "the seed has no effect"
