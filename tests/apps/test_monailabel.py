"""The MONAI Label app against a real ``monailabel start_server``.

The server runs from the MONAI Label virtual environment (``$UNET_MONAI_MONAILABEL_VENV``, default
``<repo>/.venv-monailabel``, made by ``scripts/install_monailabel.sh``), started through the project's
launcher on 127.0.0.1 and a free port. It serves shrunken copies of one 2D and one 3D bundle (the server
reads configs from disk, so the copies' configs are edited) on a studies folder of three tiny synthetic
CT volumes (one stored RAS, two LPS) whose labels sit where MONAI Label's local datastore keeps final
labels. One test function drives the whole session, so that ``pytest -n 2`` starts one server:

- ``GET /info/`` lists both models with labels liver = 1, tumour = 2, as 3D models, and both trainers;
- ``POST /infer/<model>?image=<id>&output=image`` returns a NIfTI label with the study's shape and
  affine and values in {0, 1, 2}, for the 2D bundle (applied slice by slice) and the 3D bundle;
- ``POST /train/<model>`` with ``max_epochs`` 1 runs to ``DONE`` and replaces the bundle's
  ``models/model.pt``; the next inference loads the new file (the app logs the file and its mtime).

The server's process group is killed at teardown, whatever happened. Skipped, with the reason, only
when the MONAI Label environment is missing or broken; with ``UNET_MONAI_REQUIRE_MONAILABEL=1`` (CI,
after installing it) that fails instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from unet_monai.data import generate_dataset

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("UNET_MONAI_MONAILABEL_VENV") or REPO / ".venv-monailabel")
INSTALL_HINT = "install it with `bash scripts/install_monailabel.sh` (or set UNET_MONAI_MONAILABEL_VENV to one)"

MODEL_2D = "liver_ct_unetplusplus_2d_segmentation"
MODEL_3D = "liver_ct_unet3plus_3d_segmentation"
# top-level config values that shrink a bundle to CPU-test size (as in tests/bundle/test_bundles.py)
TINY = {"features": [4, 8, 8, 16, 16], "num_workers": 0}
TINY_2D = {**TINY, "spatial_size": [32, 32], "batch_size": 4, "sw_batch_size": 8}
TINY_3D = {**TINY, "spacing": [3.0, 3.0, 3.0], "patch_size": [24, 24, 24], "num_samples": 2}

START_TIMEOUT = 240  # s until GET /info/ answers (imports of torch + MONAI Label, app init)
REQUEST_TIMEOUT = 120  # s for one inference
TRAIN_TIMEOUT = 300  # s for a 1-epoch training in the server's subprocess

pytestmark = pytest.mark.slow


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail where MONAI Label is required (``UNET_MONAI_REQUIRE_MONAILABEL=1``)."""
    if os.environ.get("UNET_MONAI_REQUIRE_MONAILABEL", "") not in ("", "0"):
        pytest.fail(f"{reason} (UNET_MONAI_REQUIRE_MONAILABEL is set)")
    pytest.skip(reason)


def monailabel_python() -> Path:
    """The MONAI Label environment's interpreter, or skip the test saying why and how to install it."""
    python = VENV / "bin" / "python"
    if not python.is_file() or not (VENV / "bin" / "monailabel").is_file():
        unavailable(f"MONAI Label is not installed: no environment with monailabel at {VENV}; {INSTALL_HINT}")
    probe = subprocess.run(
        [str(python), "-c", "import monailabel, torchvision.utils, unet_monai; print(unet_monai.__file__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        unavailable(f"the MONAI Label environment {VENV} is broken ({reason}); {INSTALL_HINT}")
    source = Path(probe.stdout.strip()).resolve()
    if not source.is_relative_to(REPO / "unet_monai"):
        unavailable(
            f"the MONAI Label environment {VENV} runs unet_monai from {source.parent}, not {REPO}; {INSTALL_HINT}"
        )
    return python


def tiny_bundle(name: str, dest: Path, settings: dict) -> Path:
    """A copy of the project's bundle with shrunken configs and freshly initialized weights in models/model.pt."""
    bundle = dest / name
    shutil.copytree(
        REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "data", "predictions")
    )
    for config in ("inference.json", "train.json"):
        path = bundle / "configs" / config
        content = json.loads(path.read_text())
        content.update({k: v for k, v in settings.items() if k in content})
        path.write_text(json.dumps(content, indent=4))
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def studies_folder(root: Path) -> Path:
    """Three tiny LiTS-like volumes as MONAI Label studies, their labels as final labels."""
    generated = generate_dataset(root / "generated", num_cases=3, seed=5, size=40, slices=(12, 16))
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for case in generated:
        shutil.copy(case["image"], studies / f"{case['case']}.nii.gz")
        shutil.copy(case["label"], studies / "labels" / "final" / f"{case['case']}.nii.gz")
    return studies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    studies: Path
    bundles: dict[str, Path]

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else "(no server log)"

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = REQUEST_TIMEOUT) -> bytes:
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.url + path, data=data if method == "POST" else None, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[-2000:]
            raise AssertionError(f"{method} {path} -> {e.code}: {detail}\nserver log:\n{self.log_tail()}") from e

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        return json.loads(self.request(method, path, body))


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (server and training subprocesses), then kill what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    python = monailabel_python()
    bundles = {
        MODEL_2D: tiny_bundle(MODEL_2D, tmp_path / "bundles", TINY_2D),
        MODEL_3D: tiny_bundle(MODEL_3D, tmp_path / "bundles", TINY_3D),
    }
    studies = studies_folder(tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    cmd = [
        str(python), "-m", "unet_monai.apps.monailabel", "start",
        "--studies", str(studies), "--port", str(port), "--app-dir", str(tmp_path / "app"),
        "--bundles", *map(str, bundles.values()),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    srv = Server(f"http://127.0.0.1:{port}", process, log, studies, bundles)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode} before answering:\n{srv.log_tail()}")
            try:
                srv.request("GET", "/info/", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer GET /info/ within {START_TIMEOUT} s:\n{srv.log_tail()}")
                time.sleep(1)
        yield srv
    finally:
        stop(process)


def infer(server: Server, model: str, image: str, dest: Path) -> nib.Nifti1Image:
    """``POST /infer/<model>?image=<id>&output=image``; the label, loaded from a copy in ``dest``."""
    body = server.request("POST", f"/infer/{model}?image={image}&output=image")
    assert body[:2] == b"\x1f\x8b", f"the label is not a gzip (NIfTI .nii.gz) file: {body[:64]!r}"
    dest.write_bytes(body)
    label = nib.load(dest)
    label.get_fdata()  # the whole file decodes
    return label


def assert_label_on_image_grid(label: nib.Nifti1Image, image_file: Path) -> np.ndarray:
    image = nib.load(image_file)
    assert label.shape == image.shape, f"label shape {label.shape} != image shape {image.shape}"
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-3)
    values = np.asarray(label.dataobj)
    assert set(np.unique(values).tolist()) <= {0, 1, 2}
    return values


def train(server: Server, model: str, params: dict) -> None:
    """``POST /train/<model>`` with ``params``, then poll ``GET /train/`` until the task ends ``DONE``."""
    task = server.json("POST", f"/train/{model}", params)
    assert task.get("status") in ("SUBMITTED", "RUNNING"), task
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while task.get("status") in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training did not finish within {TRAIN_TIMEOUT} s:\n{server.log_tail()}"
        time.sleep(2)
        task = server.json("GET", "/train/")
    details = "\n".join(task.get("details") or [])
    assert task["status"] == "DONE", f"training ended {task['status']}:\n{details}\nserver log:\n{server.log_tail()}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_serves_and_trains_the_bundles(server: Server, tmp_path: Path):
    # the models and their labels, read from the bundles' metadata
    info = server.json("GET", "/info/")
    assert set(info["models"]) == {MODEL_2D, MODEL_3D}, info["models"].keys()
    for model in (MODEL_2D, MODEL_3D):
        assert info["models"][model]["labels"] == {"liver": 1, "tumour": 2}
        assert info["models"][model]["dimension"] == 3  # the 2D bundle too: 3D study in, 3D label out
        assert info["models"][model]["type"] == "segmentation"
    assert set(info["trainers"]) == {MODEL_2D, MODEL_3D}
    assert info["labels"] == ["liver", "tumour"]

    # inference: a 3D label on each study's grid (volume-1 is stored LPS), for the 2D and the 3D bundle
    for model, image in ((MODEL_2D, "volume-0"), (MODEL_2D, "volume-1"), (MODEL_3D, "volume-1")):
        label = infer(server, model, image, tmp_path / f"{model}-{image}.nii.gz")
        assert_label_on_image_grid(label, server.studies / f"{image}.nii.gz")
    before = np.asarray(nib.load(tmp_path / f"{MODEL_2D}-volume-1.nii.gz").dataobj)

    # training for one epoch replaces models/model.pt: the 2D bundle from its weights (pretrained, the
    # default), the 3D bundle from the network's initialization (pretrained false crashes MONAI Label 0.8.5)
    for model, pretrained in ((MODEL_2D, True), (MODEL_3D, False)):
        weights = server.bundles[model] / "models" / "model.pt"
        old_hash, old_mtime = sha256(weights), weights.stat().st_mtime_ns
        train(server, model, {"max_epochs": 1, "val_split": 0.34, "pretrained": pretrained, "multi_gpu": False})
        new_mtime = weights.stat().st_mtime_ns
        assert sha256(weights) != old_hash and new_mtime > old_mtime, f"training did not replace {weights}"
        state = torch.load(weights, weights_only=True)
        assert isinstance(state, dict) and not any(k.startswith("module.") for k in state)

    # the next inference loads the new weights
    weights = server.bundles[MODEL_2D] / "models" / "model.pt"
    new_mtime = weights.stat().st_mtime_ns
    label = infer(server, MODEL_2D, "volume-1", tmp_path / "after-training.nii.gz")
    after = assert_label_on_image_grid(label, server.studies / "volume-1.nii.gz")
    served = [line for line in server.log.read_text(errors="replace").splitlines() if "serving weights" in line]
    assert any(f"st_mtime_ns {new_mtime}" in line for line in served), f"new weights not loaded; loads: {served}"
    print(f"voxels whose label changed after training: {int((after != before).sum())} of {after.size}")
