"""The MONAI Label launcher: app folder preparation and the server command, without MONAI Label installed."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from unet_monai.apps.monailabel import launcher
from unet_monai.apps.monailabel.launcher import (
    available_bundles,
    find_monailabel_python,
    main,
    prepare_app_dir,
    server_command,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLES = [
    "liver_ct_unet3plus_2d_segmentation",
    "liver_ct_unet3plus_3d_segmentation",
    "liver_ct_unetplusplus_2d_segmentation",
    "liver_ct_unetplusplus_3d_segmentation",
]


def fake_bundle(root: Path, name: str) -> Path:
    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    (bundle / "eval").mkdir()
    return bundle


def test_available_bundles_are_the_four_lits_bundles():
    assert list(available_bundles(REPO / "bundles")) == BUNDLES


def test_app_dir_links_the_bundles(tmp_path):
    bundle = fake_bundle(tmp_path / "bundles", "liver_ct_x_segmentation")
    app = prepare_app_dir(tmp_path / "app", {bundle.name: bundle})
    entry = app / "model" / bundle.name
    assert entry.is_symlink() and entry.resolve() == bundle.resolve()
    main_py = (app / "main.py").read_text()
    assert "from unet_monai.apps.monailabel.app.main import LiverSegmentationApp" in main_py
    # training through the link writes into the bundle itself
    (entry / "models" / "model.pt").write_bytes(b"trained")
    assert (bundle / "models" / "model.pt").read_bytes() == b"trained"
    # idempotent, and a link to another folder is replaced
    other = fake_bundle(tmp_path / "other", bundle.name)
    prepare_app_dir(app, {bundle.name: other})
    assert entry.resolve() == other.resolve()


def test_app_dir_copies_keep_trained_weights(tmp_path):
    bundle = fake_bundle(tmp_path / "bundles", "liver_ct_x_segmentation")
    app = prepare_app_dir(tmp_path / "app", {bundle.name: bundle}, copy=True)
    entry = app / "model" / bundle.name
    assert entry.is_dir() and not entry.is_symlink()
    assert (entry / "configs" / "metadata.json").is_file() and not (entry / "eval").exists()
    (entry / "models" / "model.pt").write_bytes(b"trained in the copy")
    prepare_app_dir(app, {bundle.name: bundle}, copy=True)
    assert (entry / "models" / "model.pt").read_bytes() == b"trained in the copy"
    assert (bundle / "models" / "model.pt").read_bytes() == b"weights"
    with pytest.raises(FileExistsError, match="--copy"):
        prepare_app_dir(app, {bundle.name: bundle})


def test_server_command_binds_to_localhost_by_default():
    cmd = server_command("/venv/bin/python", "/app", "/studies", ["a", "b"])
    assert cmd[:4] == ["/venv/bin/python", "-m", "monailabel.main", "start_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "8000"
    assert cmd[cmd.index("--conf") + 1 : cmd.index("--conf") + 3] == ["models", "a,b"]


def test_find_monailabel_python(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "_REPO", tmp_path)
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv(launcher.VENV_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"install_monailabel\.sh"):
        find_monailabel_python()
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "monailabel").write_text("")
    shutil.copy(sys.executable, venv / "bin" / "python")
    monkeypatch.setenv(launcher.VENV_ENV, str(venv))
    assert find_monailabel_python() == venv / "bin" / "python"


def test_main_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "find_monailabel_python", lambda: Path("/venv/bin/python"))
    studies = tmp_path / "studies"
    studies.mkdir()
    bundle = fake_bundle(tmp_path / "bundles", "liver_ct_x_segmentation")
    app = tmp_path / "app"
    args = ["start", "--studies", str(studies), "--app-dir", str(app), "--bundles", str(bundle), "--dry-run"]
    assert main([*args, "--", "--conf", "preload", "true"]) == 0
    out = capsys.readouterr().out
    command = out.split("command: ", 1)[1].split()
    assert command[command.index("--studies") + 1] == str(studies.resolve())
    assert command[-3:] == ["--conf", "preload", "true"]
    assert f"training writes {bundle.resolve() / 'models' / 'model.pt'}" in out
    assert (app / "model" / bundle.name).is_symlink()
    # errors are reported, not raised
    assert main(["start", "--studies", str(tmp_path / "missing"), "--app-dir", str(app), "--dry-run"]) == 2
    assert main(["start", "--studies", str(studies), "--bundles", "no_such_bundle", "--dry-run"]) == 2
    assert "no_such_bundle" in capsys.readouterr().err
