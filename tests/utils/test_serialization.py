"""Safe checkpoint loading: weights load, pickled code is refused and never runs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from unet_monai.utils.serialization import UnsafeCheckpointError, load_checkpoint, load_state_dict


class _RunsCode:
    """Unpickling this object would create a marker file: it stands for any code a crafted file could run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _RunsCode(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load .*model\.pt: it is not a plain-weights file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_crafted_torch_save_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"network": {"w": torch.ones(1)}, "extra": _RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"ckpt\.pt: it holds pickled code \(posix\.system\)"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"\x80\x02garbage", "not a plain-weights file")])
def test_empty_or_garbage_file(tmp_path, content, match):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


def test_truncated_real_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"model\.pt"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize("wrap", [None, "network", "model"])
def test_load_state_dict_plain_wrapped_and_ddp_prefixed(tmp_path, wrap):
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, tmp_path / "w.pt")
    load_state_dict(dst, tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_load_state_dict_mismatch_names_file(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt do not fit Linear"):
        load_state_dict(torch.nn.Linear(4, 2), tmp_path / "w.pt")
