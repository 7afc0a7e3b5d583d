"""Fold a bundle's network as its inference config asks (``fold_batch_norm``), outside its own inference run."""

from __future__ import annotations

from typing import Any

from torch import nn

from unet_monai.networks.fold import fold_batch_norm
from unet_monai.utils.flags import as_bool

__all__ = ["fold_as_configured"]


def fold_as_configured(parser: Any, network: nn.Module) -> int:
    """Fold ``network``'s BatchNorm layers if the bundle config sets ``fold_batch_norm`` (as its
    ``FoldBatchNorm`` handler does in the bundle's own inference run); a config without the id folds nothing.

    For code that takes a bundle's network out of its ``inference.json`` and runs it without the config's
    handlers (``unet-monai predict``, the benchmarks). Call it after the weights are loaded.

    Args:
        parser: the bundle's ``monai.bundle.ConfigParser``.
        network: the network with its weights loaded; it is put in eval mode.

    Returns:
        the number of BatchNorm layers folded.
    """
    if "fold_batch_norm" not in parser or not as_bool(parser.get_parsed_content("fold_batch_norm"), "fold_batch_norm"):
        return 0
    return fold_batch_norm(network.eval())
