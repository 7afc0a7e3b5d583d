"""The ``unet-monai`` entry point: the installed executable, ``python -m unet_monai``, help and usage errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nibabel as nib
import pytest

from unet_monai import __version__
from unet_monai.cli import build_parser, main


@pytest.mark.slow
def test_console_script(tmp_path):
    """The executable pip installs (setup.cfg console_scripts) runs a command end to end."""
    exe = shutil.which("unet-monai")
    if exe is None:
        pytest.skip("unet-monai is not on PATH: run pip install -e . first")
    out = tmp_path / "data"
    result = subprocess.run(
        [exe, "synth", "--out", str(out), "--cases", "1", "--size", "32", "--slices", "8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert nib.load(out / "volume-0.nii.gz").shape == (32, 32, 8)
    result = subprocess.run(
        [sys.executable, "-m", "unet_monai", "--version"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == f"unet-monai {__version__}"


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("predict", "evaluate", "synth", "report"):
        assert command in out
    for command in ("predict", "evaluate", "report"):
        assert main([command, "--help"]) == 0
        assert "--quiet" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["predict", "-i", "x"]) == 2  # --bundle and -o missing
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_parser_lists_every_command():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == ["evaluate", "export", "predict", "report", "synth"]
