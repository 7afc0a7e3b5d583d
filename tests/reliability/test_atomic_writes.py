"""Atomic outputs: a process killed in the middle of writing a checkpoint or a NIfTI leaves the old file intact.

A child process writes through the project's real writers: :func:`save_torch_atomic` (``torch.save``
serialising a state dict, the path of ``checkpoint.pt`` and ``model.pt``) and
:class:`AtomicNibabelWriter` behind MONAI's ``SaveImage`` (the bundles' predictions). The low-level write
is slowed down so that the test can SIGKILL the child once part of the new file is on disk; the
destination must then still hold the complete old content, and the temporary file it left behind is what
:func:`remove_stale_temporaries` cleans up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import SaveImage

from unet_monai.data.writers import AtomicNibabelWriter
from unet_monai.utils.io import remove_stale_temporaries, save_torch_atomic

REPO = Path(__file__).resolve().parents[2]

# runs in the child: after `threshold` bytes, flush what was written, signal the parent, and hang
SLOW_TORCH = """
import io, pathlib, time, torch
real_save = torch.save
class SlowFile(io.FileIO):
    written = 0
    def write(self, b):
        n = super().write(b)
        SlowFile.written += n
        if SlowFile.written > 100_000:
            self.flush(); os.fsync(self.fileno())
            pathlib.Path(STARTED).touch()
            time.sleep(120)
        return n
def slow_save(obj, f, *args, **kwargs):
    with SlowFile(f, "wb") as fh:
        real_save(obj, fh, *args, **kwargs)
torch.save = slow_save
"""
SLOW_GZIP = """
import gzip, pathlib, time
real_write = gzip.GzipFile.write
written = 0
def slow_write(self, data):
    global written
    n = real_write(self, data)
    written += n
    if written > 100_000:
        self.flush(); self.fileobj.flush(); os.fsync(self.fileobj.fileno())
        pathlib.Path(STARTED).touch()
        time.sleep(120)
    return n
gzip.GzipFile.write = slow_write
"""


def kill_mid_write(script: str, started: Path) -> None:
    """Run ``script`` in a child and SIGKILL it once it signals that it is half-way through its write."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            if proc.poll() is not None:
                pytest.fail(f"the writer exited before the kill point:\n{proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "the writer did not reach the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def leftovers(folder: Path, keep: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != keep and p.name != "started"]


def test_checkpoint_save_killed_mid_write_keeps_old_checkpoint(tmp_path):
    dest = tmp_path / "checkpoint.pt"
    old = {"network": {"w": torch.arange(10.0)}, "trainer": {"epoch": 1, "iteration": 5}}
    save_torch_atomic(old, dest)
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import os, torch
        STARTED = {str(started)!r}
        {textwrap.indent(SLOW_TORCH, "        ").strip()}
        from unet_monai.utils.io import save_torch_atomic
        save_torch_atomic({{"network": {{"w": torch.ones(1_000_000)}}, "trainer": {{"epoch": 2}}}}, {str(dest)!r})
        """
    )
    kill_mid_write(script, started)

    partial = leftovers(tmp_path, dest.name)
    assert len(partial) == 1 and partial[0].stat().st_size > 100_000  # the new content was half written
    loaded = torch.load(dest, weights_only=True)
    assert torch.equal(loaded["network"]["w"], old["network"]["w"]) and loaded["trainer"] == old["trainer"]
    assert remove_stale_temporaries(dest) == partial and leftovers(tmp_path, dest.name) == []


def save_prediction(folder: Path, array: np.ndarray) -> Path:
    """What the bundles' SaveImaged does with a prediction: ``<case>_seg.nii.gz`` via AtomicNibabelWriter."""
    saver = SaveImage(
        output_dir=str(folder),
        output_postfix="seg",
        output_ext=".nii.gz",
        output_dtype=np.uint8,
        resample=False,
        separate_folder=False,
        writer=AtomicNibabelWriter,
        print_log=False,
    )
    image = MetaTensor(torch.as_tensor(array)[None], meta={"filename_or_obj": "case_1.nii.gz", "affine": np.eye(4)})
    saver(image)
    return folder / "case_1_seg.nii.gz"


def test_prediction_write_killed_mid_write_keeps_old_nifti(tmp_path):
    rng = np.random.default_rng(0)
    old = rng.integers(0, 3, (16, 16, 8), dtype=np.uint8)
    dest = save_prediction(tmp_path, old)
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        STARTED = {str(started)!r}
        {textwrap.indent(SLOW_GZIP, "        ").strip()}
        from pathlib import Path
        from tests.reliability.test_atomic_writes import save_prediction
        new = np.random.default_rng(1).integers(0, 3, (96, 96, 64), dtype=np.uint8)
        save_prediction(Path({str(tmp_path)!r}), new)
        """
    )
    kill_mid_write(script, started)

    partial = leftovers(tmp_path, dest.name)
    assert len(partial) == 1 and partial[0].name.endswith(".nii.gz") and partial[0].stat().st_size > 0
    np.testing.assert_array_equal(np.asarray(nib.load(dest).dataobj), old)
    assert remove_stale_temporaries(dest) == partial
