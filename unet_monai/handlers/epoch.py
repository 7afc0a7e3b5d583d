"""Tell a dataset which epoch starts, so it can redraw its per-epoch sampling."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

__all__ = ["DatasetEpochSetter"]


class DatasetEpochSetter:
    """Call ``dataset.set_epoch(epoch)`` when each training epoch starts.

    :class:`~unet_monai.data.LiTSSliceDataset` redraws its liver-free slices per epoch this way; it runs
    before the epoch's DataLoader iterator (and its workers) are created, so workers see the new draw.

    Args:
        dataset: any object with a ``set_epoch(int)`` method.
    """

    def __init__(self, dataset: Any) -> None:
        if not callable(getattr(dataset, "set_epoch", None)):
            raise TypeError(f"{type(dataset).__name__} has no set_epoch(epoch) method.")
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.dataset.set_epoch(engine.state.epoch)
