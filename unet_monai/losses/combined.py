"""A weighted sum of named losses over deep-supervision outputs, with its terms exposed for logging."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from .deep_supervision import check_ds_weights, ds_weights, split_network_output

__all__ = ["CombinedLoss"]


class CombinedLoss(_Loss):
    """``sum_k w_k sum_n lambda_n loss_n(output_k, target)``: named losses, summed over deep-supervision outputs.

    MONAI combines two fixed terms (``DiceCELoss``, ``DiceFocalLoss``) and handles deep supervision in a
    separate wrapper (``DeepSupervisionLoss``) that hides the terms. This class sums any named losses, e.g.
    the UNet++ bundles' class-weighted cross-entropy plus Dice, over the networks' outputs (a Tensor, or a
    deep-supervision list with the final output first, all full resolution), and keeps each term so
    training logs can show them.

    A target is resized (nearest) for an output of another spatial size, as MONAI's DeepSupervisionLoss does.

    Components for logging: after each forward, ``self.components`` holds the detached value of each named
    term (before its ``lambda``, summed over outputs with their weights), so the loss equals
    ``sum(lambdas[n] * components[n])``.

    Args:
        losses: ``{name: loss}``; each loss takes ``(logits, target)`` and returns a scalar.
        lambdas: ``{name: weight >= 0}``; names not listed weigh 1.
        ds_weight_mode: deep-supervision weights, ``"same"`` (all 1, default), ``"exp"`` or ``"two"``.
        ds_weights: explicit weight per deep-supervision output (final first), overriding the mode.

    Raises:
        ValueError: no losses, a lambda for an unknown name, a negative or non-finite lambda.

    Example::

        >>> from monai.losses import DiceLoss
        >>> from unet_monai.losses import WeightedLoss
        >>> loss = CombinedLoss({
        ...     "ce": WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), weights=[1.0, 5.0, 30.0]),
        ...     "dice": DiceLoss(to_onehot_y=True, softmax=True, include_background=False),
        ... })
        >>> outputs = [torch.randn(2, 3, 32, 32) for _ in range(4)]  # UNet++ deep supervision, final first
        >>> value = loss(outputs, torch.randint(0, 3, (2, 1, 32, 32)))
        >>> sorted(loss.components)
        ['ce', 'dice']
    """

    def __init__(
        self,
        losses: Mapping[str, _Loss],
        lambdas: Mapping[str, float] | None = None,
        ds_weight_mode: str = "same",
        ds_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not losses:
            raise ValueError("losses must name at least one loss, e.g. {'ce': ..., 'dice': ...}.")
        lambdas = dict(lambdas or {})
        unknown = set(lambdas) - set(losses)
        if unknown:
            raise ValueError(f"lambdas names {sorted(unknown)} that are not in losses {sorted(losses)}.")
        for name, value in lambdas.items():
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"lambda of {name!r} must be a finite number >= 0; got {value}.")
        self.losses = torch.nn.ModuleDict(dict(losses))
        self.lambdas = {name: float(lambdas.get(name, 1.0)) for name in losses}
        self.ds_weight_mode = ds_weight_mode
        self.ds_weights = check_ds_weights(ds_weight_mode, ds_weights)
        self.components: dict[str, torch.Tensor] = {}

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits (B, C, *spatial) or a deep-supervision list of them, final output first.
            target: what the named losses take (e.g. a label map (B, 1, *spatial)).
        """
        outputs, cls = split_network_output(input)
        if cls is not None:
            raise ValueError("CombinedLoss has no classification term: use HybridLoss for a {'seg', 'cls'} output.")
        weights = ds_weights(len(outputs), self.ds_weight_mode, self.ds_weights)
        totals: dict[str, torch.Tensor] = {}
        for weight, output in zip(weights, outputs):
            level_target = target
            if output.shape[2:] != target.shape[2:]:
                level_target = F.interpolate(target.float(), size=output.shape[2:], mode="nearest-exact")
            for name, loss in self.losses.items():
                if self.lambdas[name] == 0:
                    continue
                value = weight * loss(output, level_target)
                totals[name] = totals[name] + value if name in totals else value
        self.components = {name: value.detach() for name, value in totals.items()}
        return sum(self.lambdas[name] * value for name, value in totals.items())
