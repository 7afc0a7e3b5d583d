"""Bundle loading for predict: overrides, device choice, 2D/3D from metadata, flip TTA, the streaming plan."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli.conftest import TINY, TINY_2D
from unet_monai.cli import main
from unet_monai.cli.bundle import BundleError, FlipTTA, load_bundle, parse_overrides, resolve_device
from unet_monai.cli.inference import SliceStreamPredictor, WholeVolumePredictor, make_predictor, streaming_plan
from unet_monai.cli.predict import CPU_BATCH_SIZE, choose_batch_size


def test_parse_overrides():
    assert parse_overrides(["features=[4,8,8,16,16]", "amp=false", "mode=gaussian", "inferer#overlap=0.25", "x="]) == {
        "features": [4, 8, 8, 16, 16], "amp": False, "mode": "gaussian", "inferer#overlap": 0.25, "x": "",
    }  # fmt: skip
    for bad in ("features", "=3"):
        with pytest.raises(BundleError, match="KEY=VALUE"):
            parse_overrides([bad])


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BundleError, match="unknown device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(BundleError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_flip_tta_averages_flipped_softmax():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(2, 3, 9, 7)
    expected = (
        sum(
            torch.softmax(net(x.flip(d) if d else x), 1).flip(d) if d else torch.softmax(net(x), 1)
            for d in [(), (2,), (3,), (2, 3)]
        )
        / 4
    )
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(FlipTTA(net)(x), 1), expected, rtol=1e-5, atol=1e-6)
    net3d = torch.nn.Conv3d(1, 2, 3, padding=1)
    assert FlipTTA(net3d)(torch.rand(1, 1, 5, 6, 4)).shape == (1, 2, 5, 6, 4)


def test_load_bundle(bundle_2d, bundle_3d):
    b2 = load_bundle(bundle_2d, "cpu", TINY_2D)
    assert b2.spatial_dims == 2 and b2.class_names == ["background", "liver", "tumour"]
    assert not b2.network.training and b2.weights.name == "model.pt" and b2.amp is False
    assert isinstance(make_predictor(b2), SliceStreamPredictor)
    assert isinstance(make_predictor(b2, stream=False), WholeVolumePredictor)
    b3 = load_bundle(bundle_3d, "cpu", TINY)
    assert b3.spatial_dims == 3 and streaming_plan(b3) == "the bundle is 3D"
    assert isinstance(make_predictor(b3), WholeVolumePredictor)
    with pytest.raises(BundleError, match=r"configs/metadata\.json not found"):
        load_bundle(bundle_2d / "configs", "cpu")


def test_batch_size(bundle_2d):
    """A bundle's batch is capped on CPU, unless asked for (option or override)."""
    bundle = load_bundle(bundle_2d, "cpu", TINY)
    assert bundle.inferer.sw_batch_size == 1  # the 2D bundles: 32 slices per pass on CUDA, 1 on CPU
    assert choose_batch_size(bundle, None, TINY) == 1
    bundle.inferer.sw_batch_size = 32  # a bundle tuned for GPUs only
    assert choose_batch_size(bundle, None, TINY) == CPU_BATCH_SIZE == bundle.inferer.sw_batch_size
    assert choose_batch_size(bundle, 16, TINY) == 16 == bundle.inferer.sw_batch_size
    overridden = load_bundle(bundle_2d, "cpu", TINY_2D)
    assert choose_batch_size(overridden, None, TINY_2D) == TINY_2D["sw_batch_size"]
    with pytest.raises(ValueError, match="at least 1"):
        choose_batch_size(bundle, 0, TINY)


def test_volume_dependent_preprocessing_is_not_streamed(bundle_2d, lits_data, tmp_path, capsys):
    """crop_foreground crops to the body of the whole volume: predict falls back to whole volumes."""
    overrides = {**TINY_2D, "preprocessing#crop_foreground": True}
    plan = streaming_plan(load_bundle(bundle_2d, "cpu", overrides))
    assert plan == "its preprocessing step CropForegroundd is not per-slice"
    args = [f"--override={k}={json.dumps(v)}" for k, v in overrides.items()]
    out = tmp_path / "out"
    assert main(["predict", "-b", str(bundle_2d), "-i", str(lits_data / "volume-0.nii.gz"), "-o", str(out), *args]) == 0
    assert "streaming slices is not possible" in capsys.readouterr().err
    assert (out / "volume-0_seg.nii.gz").is_file()
