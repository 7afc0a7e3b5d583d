"""Atomic writes: the destination holds the old or the complete new content, never a truncated file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from unet_monai.utils.io import atomic_path, full_suffix, save_json_atomic, save_torch_atomic


@pytest.mark.parametrize(
    "path, suffix",
    [("a/case.nii.gz", ".nii.gz"), ("model.pt", ".pt"), ("volume-1.5mm.nii", ".nii"), ("README", "")],
)
def test_full_suffix(path, suffix):
    assert full_suffix(path) == suffix


def test_atomic_path_keeps_extension_and_replaces(tmp_path):
    dest = tmp_path / "case.nii.gz"
    dest.write_text("old")
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != dest
        tmp.write_text("new")
        assert dest.read_text() == "old"  # not visible before the rename
    assert dest.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


def test_atomic_path_error_keeps_old_file_and_removes_temp(tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_atomic_path_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"), atomic_path(tmp_path / "nope" / "x.json"):
        pass


def test_json_and_torch_roundtrip(tmp_path):
    save_json_atomic({"a": [1, 2]}, tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == {"a": [1, 2]}
    save_torch_atomic({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], torch.arange(3))


def test_writer_killed_mid_write_leaves_old_file_intact(tmp_path):
    """SIGKILL a process in the middle of a large atomic save: the previous model.pt still loads."""
    dest = tmp_path / "model.pt"
    save_torch_atomic({"w": torch.zeros(4)}, dest)
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from unet_monai.utils.io import atomic_path
        with atomic_path({str(dest)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 1_000_000)
                f.flush()
                pathlib.Path({str(started)!r}).touch()
                time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not started.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert torch.equal(torch.load(dest, weights_only=True)["w"], torch.zeros(4))
