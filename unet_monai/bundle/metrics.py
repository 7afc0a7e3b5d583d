"""Metric helpers for bundle configs: per-class Dice handlers with readable names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.handlers import MeanDice, from_engine

__all__ = ["ClassChannel", "LossTerms", "class_dice_metrics"]


class ClassChannel:
    """An ``output_transform`` giving ``(pred, label)`` restricted to one class channel of one-hot data.

    Args:
        index: the class channel to keep.
        keys: the engine output keys of the prediction and the label.
    """

    def __init__(self, index: int, keys: Sequence[str] = ("pred", "label")) -> None:
        self.index = int(index)
        self.select = from_engine(list(keys))

    def __call__(self, output: Any) -> tuple[list, list]:
        preds, labels = self.select(output)
        i = self.index
        return [p[i : i + 1] for p in preds], [label[i : i + 1] for label in labels]


def class_dice_metrics(class_names: Sequence[str], prefix: str = "val_dice_") -> dict[str, MeanDice]:
    """``{"val_dice_<name>": MeanDice}`` for each foreground class (channel 1, 2, ... of one-hot outputs).

    For ``validate#additional_metrics``: the per-class Dice the logs, TensorBoard and ``history.json`` show
    next to the mean Dice key metric. Cases where a class is absent from both label and prediction are left
    out of that class's mean (MONAI's ``ignore_empty``).
    """
    return {
        f"{prefix}{name}": MeanDice(include_background=True, output_transform=ClassChannel(i), save_details=False)
        for i, name in enumerate(class_names, start=1)
    }


class LossTerms:
    """An ``output_transform`` for ``StatsHandler`` / ``TensorBoardStatsHandler``: the loss and its terms.

    Returns ``{"loss": total, "<term>": value, ...}`` from the trainer output (collated or decollated) and
    the ``components`` of the loss function (``HybridLoss``: focal, ms_ssim, iou, cls; ``CombinedLoss``:
    its named terms), so the per-iteration log and TensorBoard show every term separately.

    Args:
        loss_function: the training loss; its ``components`` mapping is read after each iteration.
    """

    def __init__(self, loss_function: Any = None) -> None:
        self.loss_function = loss_function

    def __call__(self, output: Any) -> dict[str, Any]:
        item = output[0] if isinstance(output, list) else output
        terms = {"loss": item["loss"]}
        terms.update(getattr(self.loss_function, "components", None) or {})
        return terms
