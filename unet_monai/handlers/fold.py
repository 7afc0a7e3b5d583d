"""Fold BatchNorm into the convolutions for the length of an inference run."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from torch import nn

from unet_monai.networks.fold import fold_batch_norm, foldable_convolutions
from unet_monai.utils.flags import as_bool
from unet_monai.utils.serialization import unwrap_model

__all__ = ["FoldBatchNorm"]

logger = logging.getLogger(__name__)


class FoldBatchNorm:
    """Fold the network's BatchNorm layers into its convolutions while an inference engine runs.

    At ``STARTED`` (list it after ``CheckpointLoader``, which loads the weights at the same event) the
    network is put in eval mode and :func:`~unet_monai.networks.fold_batch_norm` merges every BatchNorm
    into the convolution before it; at ``COMPLETED`` (or when the run raises) the original convolutions
    and BatchNorm layers are put back, so the network's ``state_dict`` is the checkpoint's again and a
    second run loads its weights as the first did. Outputs are those of the unfolded network to float
    rounding; on one CPU thread with channels_last the UNet++ 2D bundle's inference path went from 1.48x
    to 1.52x MONAI's SliceInferer, the UNet 3+ one did not change (``docs/benchmarks.md``).

    Args:
        network: the evaluator's network (a DDP wrapper is unwrapped).
        enabled: ``False`` attaches nothing.

    Example (an inference config's handlers)::

        {"_target_": "CheckpointLoader", "load_path": "...", "load_dict": {"model": "@network"}},
        {"_target_": "unet_monai.handlers.FoldBatchNorm", "network": "@network"}
    """

    def __init__(self, network: nn.Module, enabled: bool = True) -> None:
        self.network = network
        self.enabled = as_bool(enabled, "enabled")
        self._originals: list[tuple[nn.Module, nn.Module, nn.Module]] = []

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.fold)
        engine.add_event_handler(Events.COMPLETED, self.restore)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._restore_and_raise)

    def fold(self, engine: Engine | None = None) -> None:
        """Fold (once; a second call before :meth:`restore` does nothing)."""
        if self._originals:
            return
        network = unwrap_model(self.network).eval()
        self._originals = [(m, m.conv, m.adn.N) for m in foldable_convolutions(network)]
        fold_batch_norm(network)

    def restore(self, engine: Engine | None = None) -> None:
        """Put the original convolutions and BatchNorm layers back."""
        for module, conv, norm in self._originals:
            module.conv = conv
            module.adn.N = norm
        self._originals = []

    def _restore_and_raise(self, engine: Engine, exc: BaseException) -> None:
        self.restore()
        raise exc
