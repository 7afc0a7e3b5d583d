"""Pre-emption: a real bundle training killed with SIGKILL mid-epoch and re-run with ``--resume true``.

Each case trains a copy of a bundle on tiny generated data through ``python -m monai.bundle run training``
three times: uninterrupted (the reference), interrupted by SIGKILL in the middle of an epoch (the test
reads the training log as it is written and kills the process at a chosen iteration), and resumed with
``--resume true``. The resumed run's final weights and optimizer state must EQUAL the reference's
bitwise: on CPU with one thread every operation is deterministic, and the per-epoch seeding
(``EpochSeeder``) plus the checkpoint (weights, optimizer, scheduler, position, RNG states) leave nothing
that differs between the two runs.

- end-of-epoch checkpoints: the kill loses the partial epoch, which is re-run from its start;
- ``--save_interval_iterations 1``: the kill lands after a mid-epoch checkpoint, and the resumed run replays
  the interrupted epoch's data order, skips the batches already trained on and continues from there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unet_monai.data import generate_dataset

REPO = Path(__file__).resolve().parents[2]
TINY = ["--features", "[4,8,8,16,16]", "--num_workers", "0", "--val_interval", "1", "--val_fraction", "0.34"]
KINDS = {
    "2d": (
        "liver_ct_unet3plus_2d_segmentation",
        [*TINY, "--spatial_size", "[32,32]", "--batch_size", "2", "--sw_batch_size", "8"],
    ),
    "3d": (
        "liver_ct_unetplusplus_3d_segmentation",
        [*TINY, "--spacing", "[3.0,3.0,3.0]", "--patch_size", "[24,24,24]", "--num_samples", "2", "--batch_size", "1"],
    ),
}
EPOCHS = 3
#: the training subprocesses' environment: CPU even where a GPU is present (bitwise equality is a CPU property;
#: on CUDA, cuDNN autotuning and atomic adds make two runs agree only to within rounding)
CPU_ONLY = os.environ | {"CUDA_VISIBLE_DEVICES": ""}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lits")
    generate_dataset(root, num_cases=3, seed=3, size=40, slices=(12, 16))
    return root


def copy_bundle(name: str, dest: Path) -> Path:
    target = dest / name
    ignore = shutil.ignore_patterns("models", "eval", "data", "predictions")
    shutil.copytree(REPO / "bundles" / name, target, ignore=ignore)
    return target


def training_command(bundle: Path, dataset: Path, kind: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(bundle / "configs" / "train.json"), "--dataset_dir", str(dataset),
        "--epochs", str(EPOCHS), *KINDS[kind][1], *extra,
    ]  # fmt: skip


def run_to_end(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=CPU_ONLY)
    assert result.returncode == 0, f"training failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def run_and_kill(command: list[str], cwd: Path, epoch: int, iteration: int) -> str:
    """Start training and SIGKILL it as soon as it logs ``Epoch: <epoch>/.., Iter: <iteration>/..``."""
    pattern = re.compile(rf"Epoch: {epoch}/\d+, Iter: {iteration}/\d+ ")
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=CPU_ONLY)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if pattern.search(line):
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "training did not reach the kill point in time"
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, f"the process was not killed mid-training:\n{log[-3000:]}"
    return log


def assert_same_state(a: dict, b: dict, where: str = "") -> None:
    """Bitwise equality of two nested checkpoint structures."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where} keys differ"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where} lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """One uninterrupted run per bundle kind, shared by the resume cases."""
    runs: dict[str, dict] = {}

    def get(kind: str) -> dict:
        if kind not in runs:
            tmp = tmp_path_factory.mktemp(f"reference_{kind}")
            bundle = copy_bundle(KINDS[kind][0], tmp)
            run_to_end(training_command(bundle, dataset, kind), cwd=tmp)
            runs[kind] = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
        return runs[kind]

    return get


@pytest.mark.parametrize(
    "kind, save_interval_iterations, kill_at",
    [("2d", 0, (2, 3)), ("2d", 1, (3, 2)), ("3d", 1, (2, 1))],
    ids=["2d-epoch-checkpoint", "2d-iteration-checkpoint", "3d-iteration-checkpoint"],
)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(
    kind, save_interval_iterations, kill_at, dataset, reference, tmp_path
):
    bundle = copy_bundle(KINDS[kind][0], tmp_path)
    interval = ["--save_interval_iterations", str(save_interval_iterations)]
    command = training_command(bundle, dataset, kind, *interval)

    run_and_kill(command, cwd=tmp_path, epoch=kill_at[0], iteration=kill_at[1])
    killed = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert (bundle / "eval" / "history.json").is_file()
    trainer = killed["trainer"]
    length = trainer["epoch_length"]
    if save_interval_iterations:  # a checkpoint from inside the killed epoch
        assert trainer["epoch"] == kill_at[0] - 1 and 0 < trainer["iteration"] - trainer["epoch"] * length < length
    else:  # the last end-of-epoch checkpoint
        assert trainer["epoch"] == kill_at[0] - 1 and trainer["iteration"] == trainer["epoch"] * length
    assert sorted(p.name for p in (bundle / "models").iterdir() if p.name.startswith(".")) == []  # no temp files

    log = run_to_end([*command, "--resume", "true"], cwd=tmp_path)
    assert "resumed training from" in log
    resumed = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    expected = reference(kind)
    assert resumed["trainer"] == expected["trainer"]
    assert_same_state(resumed["network"], expected["network"], "network")
    assert_same_state(resumed["optimizer"], expected["optimizer"], "optimizer")
    assert_same_state(resumed["lr_scheduler"], expected["lr_scheduler"], "lr_scheduler")
    assert resumed["best_metric"] == expected["best_metric"]
    assert resumed["best_metric_epoch"] == expected["best_metric_epoch"]
