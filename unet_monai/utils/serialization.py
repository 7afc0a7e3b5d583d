"""Safe loading of weights and checkpoints, and DDP unwrapping."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpointError", "load_checkpoint", "load_state_dict", "unwrap_model"]


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint holds pickled objects other than tensors and plain containers, so it was not loaded."""


def _refusal_reason(error: Exception) -> str:
    """The useful part of torch's weights-only refusal: the blocked global, or the unpickler's complaint."""
    text = " ".join(str(error).split())
    blocked = re.search(r"unsupported GLOBAL (\S+)", text)
    if blocked:
        return f"it holds pickled code ({blocked.group(1)}), which would run on loading"
    detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    return "it is not a plain-weights file: pickled objects or corrupt data" + (
        f" ({detail.group(1).strip()})" if detail else ""
    )


def unwrap_model(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``network`` itself)."""
    if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return network.module
    return network


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the problem.

    ``weights_only=True`` only unpickles tensors, numbers, strings and containers: a crafted file that
    would run code when unpickled is refused (raised as :class:`UnsafeCheckpointError`) and its code
    never runs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file holds objects that are not plain weights.
        ValueError: the file is empty, truncated or not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refused to load {path}: {_refusal_reason(e)}; only tensors and plain containers are loaded "
            "(torch.load(weights_only=True))."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"cannot read checkpoint {path}: truncated or not a PyTorch file ({e}).") from e


def load_state_dict(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load weights from ``path`` into ``network`` safely and return it.

    Accepts a plain ``state_dict`` (what the bundles save as ``models/model.pt``), a dict holding one
    under ``"network"`` or ``"model"`` (a training checkpoint), and strips a ``module.`` prefix left by
    DDP.
    """
    state = load_checkpoint(path)
    if isinstance(state, dict):
        for key in ("network", "model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (found {type(state).__name__}).")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    try:
        unwrap_model(network).load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ValueError(f"weights in {path} do not fit {type(network).__name__}: {e}") from e
    return network
