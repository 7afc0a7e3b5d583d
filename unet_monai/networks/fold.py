"""Inference-time folding of BatchNorm into the convolution before it."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norm", "foldable_convolutions"]

logger = logging.getLogger(__name__)


def fold_batch_norm(network: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into that convolution, in place.

    In eval mode a BatchNorm is a per-channel affine map ``y = a * x + b`` with ``a = weight /
    sqrt(running_var + eps)`` and ``b = bias - a * running_mean``; applied right after a convolution it
    can be merged into the convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``),
    so the network computes the same function with one pass over each feature map fewer. On CPU, where
    channels_last makes the convolutions faster but BatchNorm about 2x slower, it gives the inference
    path back the part of the channels_last gain BatchNorm took. TorchScript's ``torch.jit.freeze``,
    ONNX Runtime and TensorRT do the same when exporting; this does it for the eager network the
    bundles run.

    Folded are MONAI ``Convolution`` blocks (what :class:`UNetPlusPlus` and :class:`UNet3Plus` are built
    from) whose ``adn`` starts with a BatchNorm (the default ``"NDA"`` ordering: norm right after the
    conv) that tracks running statistics; the BatchNorm is replaced by ``nn.Identity``. Anything else is
    left as it is. The parameters' memory format (channels_last or not) is kept.

    The folded network has a different ``state_dict`` (no BatchNorm entries, conv biases added): fold
    after loading the weights, and only for inference (training would update the folded weights, not
    the BatchNorm statistics the checkpoint expects).

    Args:
        network: a network in eval mode.

    Returns:
        the number of BatchNorm layers folded.

    Raises:
        ValueError: if ``network`` is in training mode.

    Example::

        net = UNetPlusPlus(spatial_dims=2, in_channels=3, out_channels=3).eval()
        net.load_state_dict(torch.load("model.pt", weights_only=True))
        fold_batch_norm(net)  # same outputs (to float rounding), faster
    """
    if network.training:
        raise ValueError(
            "fold_batch_norm needs a network in eval mode (call .eval() first): folding uses the running "
            "statistics, which training mode would keep updating."
        )
    folded = 0
    for module in foldable_convolutions(network):
        conv = module.conv
        weight_format = _memory_format(conv.weight)
        fused = fuse_conv_bn_eval(conv, module.adn.N, transpose=bool(module.is_transposed))
        fused.weight.data = fused.weight.data.contiguous(memory_format=weight_format)
        module.conv = fused
        module.adn.N = nn.Identity()
        folded += 1
    logger.info("folded %d BatchNorm layers into the convolutions before them", folded)
    return folded


def foldable_convolutions(network: nn.Module) -> list[Convolution]:
    """The MONAI ``Convolution`` blocks of ``network`` whose ``adn`` starts with a BatchNorm that tracks
    running statistics (what :func:`fold_batch_norm` folds)."""
    found = []
    for module in network.modules():
        adn = module._modules.get("adn") if isinstance(module, Convolution) else None
        if adn is None:
            continue
        first_name, first = next(iter(adn.named_children()), (None, None))
        if first_name == "N" and isinstance(first, _BatchNorm) and first.track_running_stats:
            found.append(module)
    return found


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    """channels_last (2D) / channels_last_3d (3D) if ``weight`` is stored that way, else contiguous."""
    if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if weight.dim() == 5 and weight.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
