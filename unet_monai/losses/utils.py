"""Private helpers shared by the loss classes: float32 computation, target checks and conversion, reductions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from monai.networks import one_hot
from monai.utils import LossReduction

__all__ = [
    "as_onehot",
    "check_reduction",
    "float32_no_autocast",
    "foreground_present",
    "reduce_channel_values",
]


@contextlib.contextmanager
def float32_no_autocast(device: torch.device) -> Iterator[None]:
    """Turn autocast off for ``device`` so that a loss computed on float32 tensors stays in float32.

    Casting the inputs alone is not enough inside an ``autocast`` region: convolutions and matrix products
    would be recast to float16/bfloat16 there.
    """
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support: nothing to turn off
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def check_reduction(reduction: LossReduction | str) -> str:
    """Validate ``reduction`` and return its string value."""
    try:
        return LossReduction(reduction).value
    except ValueError:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}.") from None


def as_onehot(input: torch.Tensor, target: torch.Tensor, to_onehot_y: bool, name: str) -> torch.Tensor:
    """Check ``target`` against ``input`` (B, C, *spatial) and return it in one-hot form (float32).

    Args:
        input: network output, shape (B, C, *spatial).
        target: label map (B, 1, *spatial) with class indices when ``to_onehot_y`` is True and C > 1,
            otherwise one-hot (or binary/soft) targets of the same shape as ``input``.
        to_onehot_y: whether ``target`` is a label map to convert. Ignored for a single channel (C == 1),
            where a binary mask (B, 1, *spatial) is already in the right form.
        name: the calling class, used in error messages.

    Raises:
        ValueError: when the shapes do not match or a label is outside [0, C - 1].
    """
    if input.ndim not in (4, 5):
        raise ValueError(f"{name}: input must be (B, C, H, W) or (B, C, H, W, D); got shape {tuple(input.shape)}.")
    n_classes = input.shape[1]
    spatial = tuple(input.shape[2:])
    if target.ndim != input.ndim or target.shape[0] != input.shape[0] or tuple(target.shape[2:]) != spatial:
        raise ValueError(
            f"{name}: target must be (B, 1, *spatial) or (B, C, *spatial) with B and spatial size of the input; "
            f"got input {tuple(input.shape)} and target {tuple(target.shape)}."
        )
    target = target.float()
    if to_onehot_y and n_classes > 1:
        if target.shape[1] != 1:
            raise ValueError(
                f"{name}: to_onehot_y=True expects a label map (B, 1, *spatial); got target {tuple(target.shape)} "
                f"for input {tuple(input.shape)}."
            )
        lo, hi = torch.aminmax(target)
        if lo < 0 or hi > n_classes - 1:
            raise ValueError(
                f"{name}: label values must lie in [0, {n_classes - 1}] for an input with {n_classes} channels; "
                f"got values in [{lo.item():g}, {hi.item():g}]."
            )
        return one_hot(target.round(), num_classes=n_classes)
    if target.shape[1] != n_classes:
        hint = " (a label map: pass to_onehot_y=True)" if target.shape[1] == 1 else ""
        raise ValueError(
            f"{name}: target must have {n_classes} channels like the input{hint}; "
            f"got input {tuple(input.shape)} and target {tuple(target.shape)}."
        )
    return target


def foreground_present(target: torch.Tensor, background_channel: bool) -> torch.Tensor:
    """Whether each sample of ``target`` contains any foreground voxel, as a float tensor (B,).

    A single-channel target (label map or binary mask) has foreground where it is > 0. A multi-channel
    (one-hot) target has foreground in any channel but channel 0 when ``background_channel`` is True,
    in any channel otherwise.
    """
    t = target
    if t.shape[1] > 1 and background_channel:
        t = t[:, 1:]
    return (t.reshape(t.shape[0], -1) > 0).any(dim=1).float()


def reduce_channel_values(
    values: torch.Tensor, reduction: str, spatial_ndim: int, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce per-(sample, class) values (B, C) the way MONAI's DiceLoss does.

    ``"mean"`` averages over batch and classes, ``"sum"`` sums them, ``"none"`` returns (B, C, 1, ...) so the
    result broadcasts against the input. ``keep`` (bool, (B, C)) leaves the other pairs out: 0 in their place,
    and ``"mean"`` averages over the kept pairs only (0 when none is).
    """
    if keep is not None:
        values = torch.where(keep, values, torch.zeros_like(values))
        if reduction == LossReduction.MEAN.value:
            return values.sum() / keep.sum().clamp_min(1)
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values.view(*values.shape[:2], *([1] * spatial_ndim))
