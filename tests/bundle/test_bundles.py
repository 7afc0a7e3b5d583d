"""The four LiTS bundles, tested the way the model zoo tests its bundles.

Each bundle is copied to a temporary folder and run through the real ``python -m monai.bundle`` command
line on a few tiny generated volumes, with reduced widths and sizes through config overrides: one epoch
of training (from another working directory: outputs must land in the bundle), evaluation (from inside
the bundle folder), inference on a folder of NIfTI files, ``verify_metadata``, ``verify_net_in_out``,
``ckpt_export`` (TorchScript) and ``onnx_export``, plus ``check_properties()`` and a 2-process gloo run
of ``multi_gpu_train.json``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from unet_monai.data import generate_dataset
from unet_monai.handlers import WeightAveraging
from unet_monai.inferers import AutocastInferer

from .common import REPO, cpu_parser

SCHEMA = REPO / "bundles" / "schema" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
BUNDLES = {
    "liver_ct_unet3plus_2d_segmentation": "2d",
    "liver_ct_unetplusplus_2d_segmentation": "2d",
    "liver_ct_unet3plus_3d_segmentation": "3d",
    "liver_ct_unetplusplus_3d_segmentation": "3d",
}
TINY = {"features": "[4,8,8,16,16]"}
TINY_2D = {**TINY, "spatial_size": "[32,32]", "num_workers": "0", "batch_size": "4", "sw_batch_size": "8"}
TINY_3D = {**TINY, "spacing": "[3.0,3.0,3.0]", "patch_size": "[24,24,24]", "num_samples": "2", "num_workers": "0"}

pytestmark = pytest.mark.slow


def overrides(kind: str, **extra: object) -> list[str]:
    """Command-line overrides that shrink a bundle to CPU-test size."""
    values = {**(TINY_2D if kind == "2d" else TINY_3D), **{k: str(v) for k, v in extra.items()}}
    return [arg for key, value in values.items() for arg in (f"--{key}", value)]


def monai_bundle(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"monai.bundle {args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three small LiTS-layout cases (RAS and LPS): two for training, one for validation."""
    root = tmp_path_factory.mktemp("lits")
    generate_dataset(root, num_cases=3, seed=3, size=40, slices=(12, 16))
    return root


def copy_bundle(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(
        REPO / "bundles" / name, target, ignore=shutil.ignore_patterns("models", "eval", "data", "predictions")
    )
    return target


@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_export(name, dataset, tmp_path):
    kind = BUNDLES[name]
    bundle = copy_bundle(name, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data_args = ["--dataset_dir", str(dataset), "--val_fraction", "0.34"]

    # training, run from another folder: everything must be written under the bundle
    monai_bundle(
        "run", "training", "--config_file", str(bundle / "configs" / "train.json"),
        "--epochs", "1", *data_args, *overrides(kind), cwd=elsewhere,
    )  # fmt: skip
    assert list(elsewhere.iterdir()) == []
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and not any(k.startswith("module.") for k in state)
    checkpoint = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer"} <= set(checkpoint)
    assert checkpoint["trainer"]["epoch"] == 1
    history = json.loads((bundle / "eval" / "history.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1]
    assert {"val_mean_dice", "val_dice_liver", "val_dice_tumour"} <= set(history["validation"][0])
    assert (bundle / "eval" / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    datalist = json.loads((bundle / "eval" / "datalist.json").read_text())
    assert len(datalist["training"]) == 2 and len(datalist["validation"]) == 1
    assert not {c["case"] for c in datalist["training"]} & {c["case"] for c in datalist["validation"]}

    # evaluation, run from inside the bundle with relative paths
    monai_bundle(
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
        *data_args, *overrides(kind), cwd=bundle,
    )  # fmt: skip
    with open(bundle / "eval" / "metrics_per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == [c["case"] for c in datalist["validation"]]
    assert set(rows[0]) == {"case"} | {f"{m}_{c}" for m in ("dice", "hd95", "asd") for c in ("liver", "tumour")}
    assert 0.0 <= float(rows[0]["dice_liver"]) <= 1.0
    assert (bundle / "eval" / "metrics_summary.csv").is_file()
    case = datalist["validation"][0]
    saved = nib.load(bundle / "eval" / "predictions" / f"{case['case']}_seg.nii.gz")
    assert saved.shape == nib.load(case["image"]).shape

    # evaluation on a folder of held-out cases (--test_dir): every case in it, written where asked
    held_out = tmp_path / "eval_test"
    monai_bundle(
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
        *data_args, *overrides(kind), "--test_dir", str(dataset), "--output_dir", str(held_out), cwd=bundle,
    )  # fmt: skip
    with open(held_out / "metrics_per_case.csv") as f:
        assert [r["case"] for r in csv.DictReader(f)] == ["volume-0", "volume-1", "volume-2"]

    # inference on the dataset folder: its volumes, not its segmentations
    out = tmp_path / "predictions"
    monai_bundle(
        "run", "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
        "--dataset_dir", str(dataset), "--output_dir", str(out), *overrides(kind), cwd=elsewhere,
    )  # fmt: skip
    volumes = sorted(dataset.glob("volume-*.nii.gz"))
    assert sorted(p.name for p in out.iterdir()) == sorted(v.name.replace(".nii.gz", "_seg.nii.gz") for v in volumes)
    for volume in volumes:
        image = nib.load(volume)
        pred = nib.load(out / volume.name.replace(".nii.gz", "_seg.nii.gz"))
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(image.affine)
        assert pred.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}

    # TorchScript export: the exported model matches the eager one
    meta = str(bundle / "configs" / "metadata.json")
    config = str(bundle / "configs" / "inference.json")
    monai_bundle(
        "ckpt_export", "network_def", "--filepath", str(bundle / "models" / "model.ts"),
        "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", meta, "--config_file", config,
        "--features", TINY["features"], cwd=elsewhere,
    )  # fmt: skip
    net = eager_network(config, bundle)
    scripted = torch.jit.load(bundle / "models" / "model.ts")
    x = torch.rand(1, 3, 32, 32) if kind == "2d" else torch.rand(1, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-5)

    # ONNX export (fixed input shape), checked with onnxruntime
    onnxruntime = pytest.importorskip("onnxruntime")
    shape = "[1,3,32,32]" if kind == "2d" else "[1,1,24,24,24]"
    monai_bundle(
        "onnx_export", "network_def", "--filepath", str(bundle / "models" / "model.onnx"),
        "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", meta, "--config_file", config,
        "--input_shape", shape, "--features", TINY["features"], cwd=elsewhere,
    )  # fmt: skip
    session = onnxruntime.InferenceSession(str(bundle / "models" / "model.onnx"))
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, net(x).numpy(), rtol=1e-3, atol=1e-4)


def eager_network(config: str, bundle: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = str(bundle)
    parser["features"] = json.loads(TINY["features"])
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return net.eval()


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_and_network_io(name, tmp_path):
    bundle = REPO / "bundles" / name
    meta = str(bundle / "configs" / "metadata.json")
    monai_bundle(
        "verify_metadata", "--meta_file", meta, "--filepath", str(SCHEMA), "--hash_val", SCHEMA_MD5, cwd=tmp_path
    )
    monai_bundle(
        "verify_net_in_out", "network_def", "--meta_file", meta,
        "--config_file", str(bundle / "configs" / "inference.json"), "--features", TINY["features"],
        "--bundle_root", str(bundle), cwd=tmp_path,
    )  # fmt: skip
    metadata = json.loads(Path(meta).read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "liver",
        "2": "tumour",
    }


@pytest.mark.parametrize("name", BUNDLES)
def test_check_properties(name, dataset, tmp_path):
    bundle = copy_bundle(name, tmp_path)
    tiny = {k: json.loads(v) for k, v in (TINY_2D if BUNDLES[name] == "2d" else TINY_3D).items()}
    for config, workflow_type in (("train.json", "train"), ("inference.json", "infer")):
        workflow = ConfigWorkflow(
            config_file=str(bundle / "configs" / config),
            workflow_type=workflow_type,
            bundle_root=str(bundle),
            dataset_dir=str(dataset),
            **tiny,
        )
        workflow.initialize()
        assert workflow.check_properties() == [], f"{config}: missing required properties"


@pytest.mark.parametrize("name", ["liver_ct_unet3plus_2d_segmentation", "liver_ct_unetplusplus_3d_segmentation"])
def test_multi_gpu_train_with_two_gloo_processes(name, dataset, tmp_path):
    bundle = copy_bundle(name, tmp_path)
    configs = f"['{bundle}/configs/train.json','{bundle}/configs/multi_gpu_train.json']"
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            "-m", "monai.bundle", "run", "training", "--config_file", configs, "--epochs", "1",
            # two validation cases: MONAI's DistributedSampler needs at least one per rank
            "--dataset_dir", str(dataset), "--val_fraction", "0.67", *overrides(BUNDLES[name]),
        ],
        # on CPU even where a GPU is present: two ranks would need two GPUs (cuda:0, cuda:1) with NCCL
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)  # DDP unwrapped
    history = json.loads((bundle / "eval" / "history.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1]  # written once, by rank 0


@pytest.mark.parametrize("name", [name for name, kind in BUNDLES.items() if kind == "3d"])
def test_3d_patches_are_drawn_per_class_on_request(name):
    def croppers(**overrides: object) -> list[str]:
        chain = cpu_parser(name, "train.json", **overrides).get_parsed_content("train#preprocessing").transforms
        return [type(t).__name__ for t in chain if type(t).__name__.startswith("RandCropBy")]

    assert croppers() == ["RandCropByPosNegLabeld"]
    assert croppers(class_ratios=[1, 1, 1]) == ["RandCropByLabelClassesd"]  # --class_ratios "[1,1,1]"
    for bad in ([1, 1], "1 1 1"):
        with pytest.raises(RuntimeError) as info:
            croppers(class_ratios=bad)
        assert "class_ratios must hold 3 finite numbers" in str(info.value.__cause__)


@pytest.mark.parametrize("name", [name for name, kind in BUNDLES.items() if kind == "3d"])
@pytest.mark.parametrize("augment", [True, False, "false"])  # "false": as --augment false arrives
def test_3d_augmentation_switch(name, augment):
    chain = cpu_parser(name, "train.json", augment=augment).get_parsed_content("train#preprocessing").transforms
    augmenting = [type(t).__name__ for t in chain if type(t).__name__ in ("RandFlipd", "RandAffined")]
    assert augmenting == (["RandFlipd"] * 3 + ["RandAffined"] if augment is True else [])


def _training_probabilities(name: str, transforms: tuple[str, ...], **overrides: object) -> list[float]:
    """The ``prob`` of each of ``transforms`` in a 3D bundle's training chain, parsed with ``overrides``."""
    chain = cpu_parser(name, "train.json", **overrides).get_parsed_content("train#preprocessing").transforms
    return [t.prob for t in chain if type(t).__name__ in transforms]


@pytest.mark.parametrize("name", [name for name, kind in BUNDLES.items() if kind == "3d"])
def test_3d_intensity_augmentation_probability(name):
    def probabilities(**overrides: object) -> list[float]:
        return _training_probabilities(name, ("RandScaleIntensityd", "RandShiftIntensityd"), **overrides)

    # 0.15 each, nnU-Net's probability: on most patches the changes blurred the liver's density (bundle README)
    assert probabilities() == [0.15, 0.15]
    assert probabilities(intensity_prob=0.5) == [0.5, 0.5]  # --intensity_prob 0.5: the bundles up to 0.1.11
    with pytest.raises(RuntimeError) as info:
        probabilities(intensity_prob=1.5)
    assert "intensity_prob must be a probability in [0, 1], got 1.5" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "name, default",
    [("liver_ct_unet3plus_3d_segmentation", 0.0), ("liver_ct_unetplusplus_3d_segmentation", 0.2)],
)
def test_3d_flip_probability(name, default):
    def probabilities(**overrides: object) -> list[float]:
        return _training_probabilities(name, ("RandFlipd",), **overrides)

    # a mirrored patch puts the liver on the patient's left: the UNet 3+ 3D demo missed liver ends (bundle README)
    assert probabilities() == [default] * 3
    assert probabilities(flip_prob=0.5) == [0.5] * 3  # --flip_prob 0.5
    with pytest.raises(RuntimeError) as info:
        probabilities(flip_prob=-0.2)
    assert "flip_prob must be a probability in [0, 1], got -0.2" in str(info.value.__cause__)


@pytest.mark.parametrize("name", [name for name, kind in BUNDLES.items() if kind == "3d"])
def test_3d_overlap_losses_score_the_tumour_over_the_batch_of_patches(name):
    """Per patch, Dice/IoU against the empty tumour masks of most patches suppress the tumour."""
    parser = cpu_parser(name, "train.json")
    if parser["loss"]["_target_"].endswith("HybridLoss"):
        loss = parser.get_parsed_content("loss")
        assert loss.iou.batch and loss.lambda_ms_ssim == 1.0  # GPU default: the full hybrid loss
        # the paper's per-image loss stays one override away
        assert not cpu_parser(name, "train.json", **{"loss#batch": False}).get_parsed_content("loss").iou.batch
        # the CPU demo's 48 x 48 x 24 patches leave MS-SSIM 2 scales of empty windows: it drops the term
        assert cpu_parser(name, "train.json", "demo.json").get_parsed_content("loss").lambda_ms_ssim == 0.0
    else:  # UNet++: class-weighted CE + Dice (the class weights need the data; the Dice term does not)
        assert parser.get_parsed_content("loss#losses#dice").batch


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_amp_and_slice_batch_follow_the_chosen_device(name, device):
    """``--device cpu`` on a GPU machine must not keep the GPU settings (parsed only: no GPU needed)."""
    overrides = {"device": f"$torch.device('{device}')"}
    for config in ("train.json", "inference.json"):
        parser = cpu_parser(name, config, **overrides)
        assert parser.get_parsed_content("amp") is (device == "cuda")
        if BUNDLES[name] == "2d":
            inferer = parser.get_parsed_content("validate#inferer" if config == "train.json" else "inferer")
            # UNet 3+: 32 slices x 1024 channels upsampled to 320 x 320 exceed CUDA's INT_MAX-element kernels
            per_gpu_pass = 8 if "unet3plus" in name else 32
            inferer = getattr(inferer, "inferer", inferer)  # validation's AutocastInferer wraps it
            assert inferer.sw_batch_size == (per_gpu_pass if device == "cuda" else 1)


@pytest.mark.parametrize("name", BUNDLES)
def test_label_filters_open_then_keep_the_largest_component(name):
    """Evaluation and inference: argmax, opening (off unless set; the UNet++ 3D demo's 4.5 mm), largest component."""

    def filters(*files: str, **overrides: object) -> list[tuple[str, float | None]]:
        parser = cpu_parser(name, *files, **overrides)
        key = "postprocessing" if "inference.json" in files else "validate#postprocessing"
        items = parser[key]["transforms"]
        argmax = next(i for i, t in enumerate(items) if t.get("argmax"))
        parsed = [parser.get_parsed_content(f"{key}#transforms#{i}") for i in (argmax + 1, argmax + 2)]
        return [(type(t).__name__, getattr(getattr(t, "opener", None), "radius_mm", None)) for t in parsed]

    demo_radius = 4.5 if name == "liver_ct_unetplusplus_3d_segmentation" else 0.0
    for files in (("train.json", "evaluate.json"), ("inference.json",)):
        assert filters(*files) == [("OpenForegroundd", 0.0), ("KeepLargestConnectedComponentd", None)]
        assert filters(*files, opening_radius_mm=3)[0] == ("OpenForegroundd", 3.0)
    assert filters("train.json", "demo.json", "evaluate.json")[0] == ("OpenForegroundd", demo_radius)
    with pytest.raises(RuntimeError) as info:
        filters("inference.json", opening_radius_mm=-1)
    assert "radius_mm must be a finite number >= 0" in str(info.value.__cause__)


@pytest.mark.parametrize("name", BUNDLES)
def test_cpu_bfloat16_is_wired_to_both_inferers_and_off_unless_asked(name, tmp_path):
    def enabled(*files: str, **overrides: object) -> list[bool]:
        parser = cpu_parser(name, *files, **overrides)
        inferers = [parser.get_parsed_content(f"{part}#inferer") for part in ("train", "validate")]
        assert all(isinstance(i, AutocastInferer) and i.device_type == "cpu" for i in inferers)
        return [i.enabled for i in inferers]

    assert enabled("train.json") == [False, False]
    assert enabled("train.json", "demo.json") == [False, False]  # the demos' figures are float32
    on = tmp_path / "bf16.json"  # a training set-up that switched it on, listed before evaluate.json
    on.write_text('{"cpu_bf16": true}')
    assert enabled("train.json", str(on)) == [True, True]
    assert enabled("train.json", str(on), "evaluate.json") == [False, False]  # evaluation figures: float32
    assert enabled("train.json", cpu_bf16="true") == [True, True]  # as typed on the command line


@pytest.mark.parametrize("name", BUNDLES)
def test_weight_averaging_is_validated_and_evaluation_loads_plain_weights(name):
    def parsed(*files: str, **overrides: object) -> tuple[torch.nn.Module, WeightAveraging, torch.nn.Module]:
        """The network, the weight averaging and the network validation scores."""
        parser = cpu_parser(name, *files, features=[4, 8, 8, 16, 16], **overrides)
        network = parser.get_parsed_content("network")
        averaging = parser.get_parsed_content("weight_averaging")
        return network, averaging, parser.get_parsed_content("validate#evaluator#network")

    network, averaging, _ = parsed("train.json")
    assert averaging.averaged_network is None and averaging.evaluation_network is network  # off by default
    network, averaging, _ = parsed("train.json", ema="true")
    assert averaging.averaged_network is not None and averaging.evaluation_network is not network
    network, _, scored = parsed("train.json", "evaluate.json", ema="true")
    assert scored is network  # evaluation scores the weights CheckpointLoader loads, whatever training kept


def test_weight_averaging_saves_the_average_as_the_model(dataset, tmp_path):
    bundle = copy_bundle("liver_ct_unetplusplus_3d_segmentation", tmp_path)
    monai_bundle(
        "run", "training", "--config_file", str(bundle / "configs" / "train.json"), "--epochs", "1",
        "--dataset_dir", str(dataset), "--val_fraction", "0.34", "--ema", "true", "--ema_momentum", "0.5",
        *overrides("3d"), cwd=tmp_path,
    )  # fmt: skip
    model = torch.load(bundle / "models" / "model.pt", weights_only=True)
    checkpoint = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert set(model) == set(checkpoint["averaged_network"])
    assert all(torch.equal(model[k], checkpoint["averaged_network"][k]) for k in model)  # epoch 1 is the best
    assert not all(torch.equal(model[k], checkpoint["network"][k]) for k in model)  # not the last weights
