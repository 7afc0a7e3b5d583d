"""The networks' output contract, seen from a loss: plain logits, deep-supervision lists and CGM dicts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["DS_WEIGHT_MODES", "check_ds_weights", "ds_weights", "split_network_output"]

DS_WEIGHT_MODES = ("same", "exp", "two")

NetworkOutput = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, object]


def check_ds_weights(mode: str, weights: Sequence[float] | None) -> list[float] | None:
    """Validate a deep-supervision weight mode and optional explicit weights; return the weights as floats."""
    if mode not in DS_WEIGHT_MODES:
        raise ValueError(f"ds_weight_mode must be one of {DS_WEIGHT_MODES}; got {mode!r}.")
    if weights is None:
        return None
    values = [float(w) for w in weights]
    if not values or any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"ds_weights must be a non-empty sequence of numbers >= 0; got {list(weights)}.")
    return values


def ds_weights(levels: int, mode: str = "same", weights: Sequence[float] | None = None) -> list[float]:
    """The weights of ``levels`` deep-supervision outputs, final output first.

    ``weights`` (at least ``levels`` values) wins over ``mode``; the modes are MONAI's
    DeepSupervisionLoss ones: ``"same"`` (all 1, the UNet++ and UNet 3+ papers' plain sum), ``"exp"``
    (1, 0.5, 0.25, ... floored at 0.0625) and ``"two"`` (1, 0.5, 0.5, ...).
    """
    if weights is not None:
        if len(weights) < levels:
            raise ValueError(f"ds_weights has {len(weights)} values but the network returned {levels} outputs.")
        return [float(w) for w in weights[:levels]]
    if mode == "exp":
        return [max(0.5**level, 0.0625) for level in range(levels)]
    if mode == "two":
        return [1.0 if level == 0 else 0.5 for level in range(levels)]
    return [1.0] * levels


def split_network_output(output: NetworkOutput) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Split a network output into its segmentation logits (a list, final first) and CGM logits (or None).

    Accepts a Tensor, a non-empty list/tuple of Tensors (deep supervision, final output first) or a dict
    ``{"seg": <Tensor or list>, "cls": Tensor (B, 2)}`` (UNet 3+'s classification-guided module).

    Raises:
        ValueError / TypeError: any other structure, naming what was given.
    """
    cls = None
    seg: object = output
    if isinstance(output, Mapping):
        unknown = set(output) - {"seg", "cls"}
        if "seg" not in output or unknown:
            raise ValueError(f"a dict output must have the key 'seg' and optionally 'cls'; got keys {sorted(output)}.")
        seg = output["seg"]
        cls = output.get("cls")
        if cls is not None and not isinstance(cls, torch.Tensor):
            raise TypeError(f"output['cls'] must be a Tensor (B, 2); got {type(cls).__name__}.")
    if isinstance(seg, torch.Tensor):
        return [seg], cls
    if isinstance(seg, (list, tuple)) and seg and all(isinstance(s, torch.Tensor) for s in seg):
        return list(seg), cls
    raise TypeError(
        "the network output must be a Tensor, a non-empty list/tuple of Tensors, or a dict "
        f"{{'seg': ..., 'cls': ...}}; got {type(seg).__name__}."
    )
