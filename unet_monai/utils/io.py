"""Atomic file output: every file the project writes goes to a temporary file that is renamed into place.

A crash, a kill or a full disk in the middle of a write therefore never leaves a truncated model,
prediction or table behind: the destination holds either the old content or the complete new one.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "full_suffix", "remove_stale_temporaries", "save_json_atomic", "save_torch_atomic"]


def full_suffix(path: str | os.PathLike) -> str:
    """The complete extension of ``path`` (``".nii.gz"`` for ``"case.nii.gz"``, ``".pt"`` for ``"model.pt"``)."""
    name = Path(path).name
    suffixes = Path(name).suffixes
    # keep only short alphanumeric suffixes: "volume-1.5mm.nii.gz" -> ".nii.gz"
    kept: list[str] = []
    for s in reversed(suffixes):
        if len(s) > 8 or not s[1:].isalnum() or not s[1:2].isalpha():
            break
        kept.insert(0, s)
    return "".join(kept)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary file keeps ``path``'s extension, so writers that choose a format by extension
    (nibabel, SimpleITK, PIL, ``torch.save``) write the right one. The rename is atomic on POSIX
    file systems because both names lie in the same folder.

    Example::

        with atomic_path("out/case_1.nii.gz") as tmp:
            nib.save(img, tmp)

    Raises:
        FileNotFoundError / PermissionError: the destination folder does not exist or is not writable
            (raised before anything is written, naming the folder).
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {dest}: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write {dest}: the folder {folder} is not writable.")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{full_suffix(dest)}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_json_atomic(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    return Path(path)


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file, so an interrupted save keeps the old file."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_path` writes of ``path`` left behind.

    A process killed with SIGKILL (or a machine losing power) during a write cannot delete its temporary
    file ``.<name>.<random>.tmp<ext>`` beside ``path``; the destination itself is intact. Call this only
    when no other process may be writing ``path`` at the same moment (e.g. when a training run starts:
    only rank 0 of one run writes its checkpoint). Returns the deleted paths.
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".{glob.escape(dest.name)}.*.tmp{glob.escape(full_suffix(dest))}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
