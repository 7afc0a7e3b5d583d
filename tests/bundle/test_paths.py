"""resolve_bundle_root: a bundle writes into its own folder whatever the current directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unet_monai.bundle.paths import _from_argv, bundle_root_of, resolve_bundle_root


@pytest.fixture()
def bundle(tmp_path):
    root = tmp_path / "my_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    return root


@pytest.mark.parametrize(
    "argv",
    [
        ["--config_file", "{cfg}"],
        ["--config_file={cfg}"],
        ["--config_file", "['{cfg}', 'other/configs/evaluate.json']"],
        ["--meta_file", "{meta}"],
    ],
)
def test_from_argv(bundle, argv):
    argv = [a.format(cfg=bundle / "configs" / "train.json", meta=bundle / "configs" / "metadata.json") for a in argv]
    assert _from_argv(["-m", "monai.bundle", "run", *argv]) == bundle.resolve()


def test_bundle_root_of_plain_folder(tmp_path):
    assert bundle_root_of(tmp_path / "train.json") == tmp_path.resolve()


def test_cwd_fallback_and_error(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.chdir(bundle)
    assert resolve_bundle_root() == str(bundle.resolve())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="pass --bundle_root"):
        resolve_bundle_root()


@pytest.mark.parametrize("cwd", ["outside", "bundle"])
def test_monai_bundle_run_resolves_from_any_cwd(bundle, tmp_path, cwd):
    """`python -m monai.bundle run` with the config given relative to the cwd writes into the bundle."""
    config = {
        "imports": ["$import pathlib"],
        "bundle_root": {"_target_": "unet_monai.bundle.paths.resolve_bundle_root"},
        "run": ["$pathlib.Path(@bundle_root, 'marker.txt').write_text('here')"],
    }
    (bundle / "configs" / "train.json").write_text(json.dumps(config))
    workdir = tmp_path / "elsewhere" if cwd == "outside" else bundle
    workdir.mkdir(exist_ok=True)
    rel = (bundle / "configs" / "train.json").relative_to(workdir) if cwd == "bundle" else bundle / "configs/train.json"
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(rel)],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    assert (bundle / "marker.txt").read_text() == "here"
    assert not (workdir / "marker.txt").exists() or workdir == bundle
