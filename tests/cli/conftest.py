"""Fixtures of the command-line tests: small generated LiTS data and tiny copies of the real bundles.

A bundle copy holds the repository's configs and a ``models/model.pt`` written from its own
``network_def`` (random weights: predict tests check geometry, types, files and errors, not accuracy).
``conv_bundle`` replaces the network by one 3x3 convolution that thresholds the windowed intensity
(and the neighbour slices), so its labels hold all three classes and depend on the 2.5D neighbours:
the test that the streamed path equals the bundle's whole-volume path then means something.
"""

from __future__ import annotations

import json
import locale
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from unet_monai.data import generate_dataset

REPO = Path(__file__).resolve().parents[2]
TINY = {"features": [4, 8, 8, 16, 16]}
TINY_2D = {**TINY, "spatial_size": [32, 32], "sw_batch_size": 8}
TINY_3D = {**TINY, "spacing": [3.0, 3.0, 3.0], "patch_size": [24, 24, 24], "sw_batch_size": 2}
CONV_NET = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 3, "kernel_size": 3, "padding": 1}


@pytest.fixture(autouse=True)
def _restore_locale():
    """Put the process locale back after each test.

    SimpleITK's DICOM writer (GDCM), used by the tests to make DICOM series, sets the C locale for the
    whole process; Python's default text encoding then becomes ASCII, and later code that reads UTF-8
    files without naming the encoding (``torch.compile`` reading its own sources) fails. The CLI only
    reads DICOM, which leaves the locale alone.
    """
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def override_args(values: dict) -> list[str]:
    """``--override KEY=JSON`` arguments for ``unet-monai predict``."""
    return [arg for k, v in values.items() for arg in ("--override", f"{k}={json.dumps(v, separators=(',', ':'))}")]


def make_bundle(name: str, dest: Path, overrides: dict, network_def: dict | None = None) -> Path:
    """Copy a repository bundle (configs only) and write ``models/model.pt`` for its network with ``overrides``."""
    bundle = dest / name
    shutil.copytree(
        REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "data", "predictions")
    )
    if network_def is not None:
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        config["network_def"] = network_def
        (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    for key, value in overrides.items():
        parser[key] = value
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    if network_def is not None:
        with torch.no_grad():
            network.weight.zero_()
            network.bias.copy_(torch.tensor([0.0, -8.0, -22.0]))
            network.weight[1, 1, 1, 1] = 20.0  # liver: windowed intensity above 0.4
            network.weight[2, 1, 1, 1] = 40.0  # tumour: above 0.7 ...
            network.weight[2, 0, 1, 1] = 6.0  # ... shifted by the slice below and above: 2.5D matters
            network.weight[2, 2, 1, 1] = -6.0
            network.weight[1, 1, 0, 2] = 3.0  # not flip-symmetric: flip TTA changes the result
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


@pytest.fixture(scope="session")
def lits_data(tmp_path_factory) -> Path:
    """Two LiTS-layout cases, 40 x 40 in-plane, 12-16 slices: volume-0 stored RAS, volume-1 LPS."""
    root = tmp_path_factory.mktemp("lits")
    generate_dataset(root, num_cases=2, seed=3, size=40, slices=(12, 16))
    return root


@pytest.fixture(scope="session")
def bundle_2d(tmp_path_factory) -> Path:
    """The UNet 3+ 2D bundle with widths 4..16."""
    return make_bundle("liver_ct_unet3plus_2d_segmentation", tmp_path_factory.mktemp("b2d"), TINY)


@pytest.fixture(scope="session")
def bundle_3d(tmp_path_factory) -> Path:
    """The UNet++ 3D bundle with widths 4..16."""
    return make_bundle("liver_ct_unetplusplus_3d_segmentation", tmp_path_factory.mktemp("b3d"), TINY)


@pytest.fixture(scope="session")
def conv_bundle(tmp_path_factory) -> Path:
    """The UNet 3+ 2D bundle's configs with a one-convolution intensity-threshold network."""
    return make_bundle("liver_ct_unet3plus_2d_segmentation", tmp_path_factory.mktemp("bconv"), {}, CONV_NET)
