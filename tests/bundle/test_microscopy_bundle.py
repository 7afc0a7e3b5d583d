"""The darkfield microscopy bundle: the seed's UNet++ and loss, trained, evaluated and used on generated images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from tests.bundle.test_bundles import REPO, SCHEMA, SCHEMA_MD5, monai_bundle
from unet_monai.data.synthetic_microscopy import generate_dataset

NAME = "darkfield_microscopy_unetplusplus_segmentation"
TINY = ["--features", "[4,8,8,16,16]", "--inner_features", "4", "--spatial_size", "[48,48]"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("darkfield")
    generate_dataset(root, num_images=4, seed=1, size=(64, 80))
    return root


def test_network_is_the_keras_seed():
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / NAME / "configs" / "train.json"))
    net = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in net.parameters()) == 8_187_235
    weights = parser.get_parsed_content("loss").class_weights
    assert weights.tolist() == [1.0, 50.0, 70.0]  # the seed's intent, not its 1, 2, 3


def test_train_evaluate_infer_export(images, tmp_path):
    bundle = tmp_path / NAME
    shutil.copytree(REPO / "bundles" / NAME, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    data = ["--dataset_dir", str(images), "--val_fraction", "0.25"]
    monai_bundle(
        "run", "training", "--config_file", str(bundle / "configs" / "train.json"), "--epochs", "1",
        "--batch_size", "2", "--num_workers", "0", *data, *TINY, cwd=tmp_path,
    )  # fmt: skip
    assert (bundle / "models" / "model.pt").is_file()
    datalist = json.loads((bundle / "eval" / "datalist.json").read_text())
    assert len(datalist["training"]) == 3 and len(datalist["validation"]) == 1

    monai_bundle(
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", *data, *TINY,
        cwd=bundle,
    )  # fmt: skip
    with open(bundle / "eval" / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"dice_blood_cell", "dice_bacteria", "hd95_bacteria"} <= set(rows[0])

    out = tmp_path / "predictions"
    monai_bundle(
        "run", "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
        "--dataset_dir", str(images), "--output_dir", str(out), *TINY, cwd=tmp_path,
    )  # fmt: skip
    for image in sorted((images / "images").iterdir()):
        mask = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        assert mask.shape == np.asarray(Image.open(image)).shape[:2]
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert (out / f"{image.stem}_overlay.png").is_file()

    meta = str(bundle / "configs" / "metadata.json")
    config = str(bundle / "configs" / "inference.json")
    monai_bundle(
        "ckpt_export", "network_def", "--filepath", str(bundle / "models" / "model.ts"),
        "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", meta, "--config_file", config,
        *TINY, cwd=tmp_path,
    )  # fmt: skip
    parser = ConfigParser()
    parser.read_config(config)
    parser.update({"features": [4, 8, 8, 16, 16], "inner_features": 4})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(bundle / "models" / "model.ts")(x), net.eval()(x))


def test_metadata_and_properties(images, tmp_path):
    bundle = tmp_path / NAME
    shutil.copytree(REPO / "bundles" / NAME, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    meta = str(bundle / "configs" / "metadata.json")
    schema = ["--filepath", str(SCHEMA), "--hash_val", SCHEMA_MD5]
    monai_bundle("verify_metadata", "--meta_file", meta, *schema, cwd=tmp_path)
    for config, workflow_type in (("train.json", "train"), ("inference.json", "infer")):
        workflow = ConfigWorkflow(
            config_file=str(bundle / "configs" / config),
            workflow_type=workflow_type,
            bundle_root=str(bundle),
            dataset_dir=str(images),
            features=[4, 8, 8, 16, 16],
            inner_features=4,
            spatial_size=[48, 48],
        )
        workflow.initialize()
        assert workflow.check_properties() == []
