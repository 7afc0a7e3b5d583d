"""The loss of the Keras UNet++ seed: categorical cross-entropy + (-ln IoU) + (-ln Dice), smoothing 1."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from .utils import as_onehot, check_reduction, float32_no_autocast

__all__ = ["CrossEntropyIoUDiceLoss"]

_DS_WEIGHT_MODES = ("same", "exp", "two")
_TERMS = ("ce", "iou", "dice")


class CrossEntropyIoUDiceLoss(_Loss):
    """The seed's ``cce_iou_dice``: per-pixel categorical cross-entropy + (-ln IoU) + (-ln Dice), smoothing 1.

    The Keras UNet++ seed (bacteria and blood cells in darkfield microscopy) returns, for every pixel
    :math:`v` of sample :math:`b`, the map

    .. math::

        M_{b,v} = \\lambda_{ce}\\,\\mathrm{CE}_{b,v} + \\lambda_{iou}\\,L_{iou} + \\lambda_{dice}\\,L_{dice},
        \\qquad \\mathrm{CE}_{b,v} = -\\sum_c t_{b,c,v} \\ln p_{b,c,v}

    with :math:`p` the softmax of the logits and :math:`t` the one-hot target. The overlap terms are
    scalars for the whole batch, computed with the classes *pooled* (background included): with
    :math:`I_b = \\sum_{c,v} t\\,p` and :math:`S_b = \\sum_{c,v} t + \\sum_{c,v} p` over sample :math:`b`,
    and smoothing :math:`s = 1`,

    .. math::

        L_{iou} = -\\ln \\frac{1}{B}\\sum_b \\frac{I_b + s}{S_b - I_b + s}, \\qquad
        L_{dice} = -\\ln \\frac{1}{B}\\sum_b \\frac{2 I_b + s}{S_b + s}

    (the mean over the batch is taken *before* the logarithm, as in the seed). ``reduction="mean"`` returns
    :math:`\\mathrm{mean}_{b,v} M = \\lambda_{ce}\\,\\mathrm{mean}(\\mathrm{CE}) + \\lambda_{iou} L_{iou}
    + \\lambda_{dice} L_{dice}` (Keras' default reduction); ``"sum"`` returns :math:`\\sum_{b,v} M`, in which
    the overlap terms count once per pixel; ``"none"`` returns :math:`M` as (B, 1, *spatial).

    Class weights (the seed's ``weighted_loss``): wrap this loss, with ``reduction="none"``, in
    :class:`~unet_monai.losses.WeightedLoss`. The seed multiplies the per-pixel map by the weight
    :math:`w_{y_{b,v}}` of each pixel's true class and averages, so

    .. math::

        \\mathcal{L}_w = \\mathrm{mean}_{b,v}\\big(w_{y_{b,v}} M_{b,v}\\big)
        = \\lambda_{ce}\\,\\mathrm{mean}_{b,v}(w\\,\\mathrm{CE})
          + \\bar w\\,(\\lambda_{iou} L_{iou} + \\lambda_{dice} L_{dice}),
        \\qquad \\bar w = \\mathrm{mean}_{b,v}\\, w_{y_{b,v}}.

    That is: the cross-entropy is weighted pixel by pixel, while the weights do **not** enter the IoU and
    Dice ratios (no weighted intersection or union); those two terms are only scaled by the batch's mean
    pixel weight :math:`\\bar w`, a constant for the gradient. This is exactly what the Keras code computes
    (its per-pixel loss is ``cce + log_iou + log_dice`` with the two scalars broadcast); the seed's
    indexing bug (weights 1, 2, 3 instead of ``{0: 1, 1: 50, 2: 70}``) is not reproduced.

    Differences from the seed's Keras code, all deliberate: the cross-entropy is computed from the logits
    with ``log_softmax`` (Keras clips probabilities to [1e-7, 1 - 1e-7]; with ``softmax=False`` this loss
    takes probabilities and clips the same way); ``include_background=False`` and ``pool_classes=False``
    are options the seed does not have (the defaults reproduce it).

    Computation runs in float32 with autocast disabled, so fp16/bf16 inputs and AMP regions give a float32
    loss.

    Reference:
        Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", DLMIA 2018. The
        seed's ``losses.py`` (``cce_iou_dice``, ``log_iou``, ``log_dice``, ``weighted_loss``).

    Args:
        include_background: if False, channel 0 is left out of the IoU and Dice sums (the cross-entropy
            always uses every class: it is a distribution over all of them). Defaults to True (the seed).
        to_onehot_y: whether the target is a label map (B, 1, *spatial) of class indices. Defaults to False
            (a one-hot target (B, C, *spatial)), as MONAI's losses.
        softmax: apply a softmax to the input (logits in, default). False: the input holds probabilities
            (renormalised over channels and clipped to [1e-7, 1 - 1e-7] for the cross-entropy, as Keras'
            ``categorical_crossentropy`` does).
        pool_classes: True (default, the seed): one intersection and one union per sample, summed over the
            classes. False: a ratio per sample *and* class, averaged over both before the logarithm.
        lambda_ce: weight of the cross-entropy term (>= 0). Defaults to 1.
        lambda_iou: weight of the -ln IoU term (>= 0). Defaults to 1.
        lambda_dice: weight of the -ln Dice term (>= 0). Defaults to 1.
        smooth: smoothing added to the numerators and denominators of both ratios (>= 0). Defaults to 1.
        ds_weight_mode: weights of deep-supervision outputs when ``ds_weights`` is None, as MONAI's
            DeepSupervisionLoss: ``"same"`` (all 1, default), ``"exp"`` (1, 0.5, 0.25, ... floored at
            0.0625) or ``"two"`` (1, 0.5, 0.5, ...).
        ds_weights: explicit non-negative weight per deep-supervision output (at least as many as outputs).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the map :math:`M`, (B, 1, *spatial)).

    Inputs: logits (B, C, *spatial) with C >= 2, 2D or 3D, or a deep-supervision list/tuple of them (final
    output first): the loss is then the weighted sum over the outputs, each compared with the target resized
    by nearest-neighbour interpolation (``"none"`` needs all outputs at one size). Class weights together
    with deep supervision: ``monai.losses.DeepSupervisionLoss(WeightedLoss(CrossEntropyIoUDiceLoss(
    reduction="none"), weights))``, since WeightedLoss takes one tensor.

    Components for logging: after every forward ``get_components()`` returns the detached terms before
    their lambdas, ``"ce"`` (mean cross-entropy), ``"iou"`` (:math:`L_{iou}`) and ``"dice"``
    (:math:`L_{dice}`), each summed over deep-supervision outputs with their weights (all three are computed
    whatever the lambdas).

    Raises:
        ValueError: bad arguments, fewer than 2 channels, or input/target shapes that do not match (the
            message gives both shapes).

    Example::

        >>> loss = WeightedLoss(
        ...     CrossEntropyIoUDiceLoss(to_onehot_y=True, reduction="none"), weights={0: 1, 1: 50, 2: 70}
        ... )
        >>> logits = torch.randn(2, 3, 64, 64, requires_grad=True)
        >>> label = torch.randint(0, 3, (2, 1, 64, 64))
        >>> loss(logits, label).backward()
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        softmax: bool = True,
        pool_classes: bool = True,
        lambda_ce: float = 1.0,
        lambda_iou: float = 1.0,
        lambda_dice: float = 1.0,
        smooth: float = 1.0,
        ds_weight_mode: str = "same",
        ds_weights: Sequence[float] | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        lambdas = {"lambda_ce": lambda_ce, "lambda_iou": lambda_iou, "lambda_dice": lambda_dice}
        for name, value in lambdas.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value}.")
        if not any(lambdas.values()):
            raise ValueError("at least one of lambda_ce, lambda_iou, lambda_dice must be > 0.")
        if not math.isfinite(smooth) or smooth < 0:
            raise ValueError(f"smooth must be a finite number >= 0; got {smooth}.")
        if ds_weight_mode not in _DS_WEIGHT_MODES:
            raise ValueError(f"ds_weight_mode must be one of {_DS_WEIGHT_MODES}; got {ds_weight_mode!r}.")
        if ds_weights is not None:
            ds_weights = [float(w) for w in ds_weights]
            if not ds_weights or any(not math.isfinite(w) or w < 0 for w in ds_weights):
                raise ValueError(f"ds_weights must be a non-empty sequence of numbers >= 0; got {ds_weights}.")
        self.include_background = bool(include_background)
        self.to_onehot_y = bool(to_onehot_y)
        self.softmax = bool(softmax)
        self.pool_classes = bool(pool_classes)
        self.lambda_ce = float(lambda_ce)
        self.lambda_iou = float(lambda_iou)
        self.lambda_dice = float(lambda_dice)
        self.smooth = float(smooth)
        self.ds_weight_mode = ds_weight_mode
        self.ds_weights = ds_weights
        self.eps = 1e-7  # Keras' epsilon, for probability inputs only
        self.components: dict[str, torch.Tensor] = {}

    def get_components(self) -> dict[str, torch.Tensor]:
        """The detached terms of the last forward, ``"ce"``, ``"iou"``, ``"dice"``, before their lambdas.

        ``"ce"`` is the mean per-pixel cross-entropy, ``"iou"`` and ``"dice"`` the -ln ratios, each summed over
        deep-supervision outputs with their weights. Empty before the first forward.
        """
        return dict(self.components)

    def get_ds_weights(self, levels: int) -> list[float]:
        """The weights of ``levels`` deep-supervision outputs, final output first."""
        if self.ds_weights is not None:
            if len(self.ds_weights) < levels:
                raise ValueError(
                    f"ds_weights has {len(self.ds_weights)} values but the network returned {levels} outputs."
                )
            return self.ds_weights[:levels]
        if self.ds_weight_mode == "exp":
            return [max(0.5**level, 0.0625) for level in range(levels)]
        if self.ds_weight_mode == "two":
            return [1.0 if level == 0 else 0.5 for level in range(levels)]
        return [1.0] * levels

    def _terms(self, input: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pixel cross-entropy (B, 1, *spatial) and the two batch-level overlap losses (scalars)."""
        if self.softmax:
            log_p = F.log_softmax(input, dim=1)
            probs = log_p.exp()
        else:
            probs = input / input.sum(dim=1, keepdim=True).clamp_min(self.eps)
            log_p = probs.clamp(self.eps, 1.0 - self.eps).log()
        ce = -(onehot * log_p).sum(dim=1, keepdim=True)
        t, p = onehot, probs
        if not self.include_background:
            t, p = t[:, 1:], p[:, 1:]
        # sums over the spatial axes, and over the classes too when pooled (the seed's axis=[1, 2, 3])
        dims = tuple(range(1, t.ndim)) if self.pool_classes else tuple(range(2, t.ndim))
        intersection = (t * p).sum(dim=dims)
        total = t.sum(dim=dims) + p.sum(dim=dims)
        s = self.smooth
        iou = -torch.log(((intersection + s) / (total - intersection + s)).mean())
        dice = -torch.log(((2.0 * intersection + s) / (total + s)).mean())
        return ce, iou, dice

    def _split(self, input: torch.Tensor | Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[float]]:
        if isinstance(input, torch.Tensor):
            return [input], [1.0]
        if isinstance(input, (list, tuple)) and input and all(isinstance(x, torch.Tensor) for x in input):
            return list(input), self.get_ds_weights(len(input))
        raise TypeError(
            "input must be a Tensor or a non-empty list/tuple of Tensors (deep supervision); "
            f"got {type(input).__name__}."
        )

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: logits (B, C, *spatial) (probabilities with ``softmax=False``), or a deep-supervision list of
                them, final output first.
            target: label map (B, 1, *spatial) with ``to_onehot_y=True``, else one-hot (B, C, *spatial).

        Returns:
            the loss in float32: a scalar for ``"mean"``/``"sum"``, the map (B, 1, *spatial) for ``"none"``.
        """
        outputs, weights = self._split(input)
        deep = not isinstance(input, torch.Tensor)  # only deep-supervision outputs are compared at their own size
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a Tensor; got {type(target).__name__}.")
        name = type(self).__name__
        if self.reduction == LossReduction.NONE.value and any(o.shape[2:] != outputs[0].shape[2:] for o in outputs):
            raise ValueError(
                "reduction='none' needs all deep-supervision outputs at one spatial size; got "
                f"{[tuple(o.shape) for o in outputs]}."
            )
        with float32_no_autocast(target.device):
            target = target.float()
            totals = dict.fromkeys(_TERMS, target.new_zeros(()))
            parts: list[torch.Tensor] = []
            for weight, output in zip(weights, outputs):
                output = output.float()
                resized = target
                if deep and output.ndim == target.ndim and output.shape[2:] != target.shape[2:]:
                    resized = F.interpolate(target, size=output.shape[2:], mode="nearest-exact")
                onehot = as_onehot(output, resized, self.to_onehot_y, name)
                if output.shape[1] < 2:
                    raise ValueError(
                        f"{name}: categorical cross-entropy needs at least 2 output channels; "
                        f"got input {tuple(output.shape)}."
                    )
                ce, iou, dice = self._terms(output, onehot)
                overlap = self.lambda_iou * iou + self.lambda_dice * dice
                if self.reduction == LossReduction.MEAN.value:
                    value = self.lambda_ce * ce.mean() + overlap
                elif self.reduction == LossReduction.SUM.value:
                    value = self.lambda_ce * ce.sum() + overlap * ce.numel()
                else:
                    value = self.lambda_ce * ce + overlap
                parts.append(weight * value)
                totals["ce"] = totals["ce"] + weight * ce.mean()
                totals["iou"] = totals["iou"] + weight * iou
                totals["dice"] = totals["dice"] + weight * dice
            loss = parts[0]
            for part in parts[1:]:
                loss = loss + part
        self.components = {k: v.detach() for k, v in totals.items()}
        return loss
