"""Atomic, checked export of a trained bundle (unet_monai.bundle.export and ``unet-monai export``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import TINY, make_bundle
from unet_monai.bundle.export import export_bundle
from unet_monai.cli import main
from unet_monai.utils.serialization import UnsafeCheckpointError

BUNDLES = {"2d": "liver_ct_unet3plus_2d_segmentation", "3d": "liver_ct_unetplusplus_3d_segmentation"}
SHAPES = {"2d": [1, 3, 48, 40], "3d": [1, 1, 32, 24, 16]}


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def bundle(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, make_bundle(BUNDLES[request.param], tmp_path_factory.mktemp(request.param), TINY)


def _fresh(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    return copy


def _eager(bundle: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser.update(TINY)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return net.eval()


def test_torchscript_export_matches_eager_and_embeds_metadata(bundle, tmp_path):
    dims, root = bundle
    root = _fresh(root, tmp_path)
    path = export_bundle(root, overrides=TINY)
    assert path == root.resolve() / "models" / "model.ts"
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(path), _extra_files=extra)
    assert (
        json.loads(extra["metadata.json"])["name"] == json.loads((root / "configs/metadata.json").read_text())["name"]
    )
    assert json.loads(extra["inference.json"])["network_def"]["_target_"].startswith("unet_monai.networks.")
    x = torch.rand(SHAPES[dims])  # another size than the check's: the scripted network takes any size
    with torch.no_grad():
        torch.testing.assert_close(exported(x), _eager(root)(x), atol=1e-5, rtol=1e-5)
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt", "model.ts"]  # no temporary left


def test_onnx_export_is_valid(bundle, tmp_path):
    pytest.importorskip("onnx")
    dims, root = bundle
    root = _fresh(root, tmp_path)
    out = tmp_path / "net.onnx"
    assert export_bundle(root, fmt="onnx", filepath=out, overrides=TINY, input_shape=SHAPES[dims]) == out
    import onnx

    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == SHAPES[dims]


def test_failed_write_keeps_the_previous_file(bundle, tmp_path, monkeypatch):
    _, root = bundle
    root = _fresh(root, tmp_path)
    old = root / "models" / "model.ts"
    old.write_bytes(b"the previous good export")

    def full_disk(obj, f, *args, **kwargs):  # half a file, then the disk is full
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_bundle(root, overrides=TINY)
    assert old.read_bytes() == b"the previous good export"
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt", "model.ts"]


def test_failed_check_keeps_the_previous_file(bundle, tmp_path):
    _, root = bundle
    root = _fresh(root, tmp_path)
    old = root / "models" / "model.ts"
    old.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"exported model\.ts differs from the eager network by .* > -1"):
        export_bundle(root, overrides=TINY, atol=-1.0)  # no difference passes a negative tolerance
    assert old.read_bytes() == b"previous"
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt", "model.ts"]


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_or_missing_weights(tmp_path):
    root = make_bundle(BUNDLES["2d"], tmp_path, TINY)
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(1), "x": _RunsCode(str(marker))}, root / "models" / "model.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"model\.pt: it holds pickled code"):
        export_bundle(root, overrides=TINY)
    assert not marker.exists()
    assert not (root / "models" / "model.ts").exists()
    (root / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"weights .*model\.pt not found"):
        export_bundle(root)
    with pytest.raises(FileNotFoundError, match=r"configs/inference\.json not found"):
        export_bundle(tmp_path)
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_bundle(root, fmt="tflite")


def test_cli_export(bundle, tmp_path, capsys):
    _, root = bundle
    root = _fresh(root, tmp_path)
    out = tmp_path / "exported" / "m.ts"
    out.parent.mkdir()
    assert main(["export", "--bundle", str(root), "-o", str(out), "--override", "features=[4,8,8,16,16]"]) == 0
    assert torch.jit.load(str(out)) is not None
    assert main(["export", "--bundle", str(root), "-o", str(tmp_path / "missing" / "m.ts"), "--override",
                 "features=[4,8,8,16,16]"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"error: cannot write {tmp_path / 'missing' / 'm.ts'}: the folder {tmp_path / 'missing'} does not exist."
    )
    assert main(["export", "--bundle", str(root)]) == 1  # default widths: the tiny weights do not fit
    assert "error: " in capsys.readouterr().err
