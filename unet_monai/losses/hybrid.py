"""The UNet 3+ hybrid loss: focal + MS-SSIM + IoU, over deep-supervision outputs, with the classification-guided BCE."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from .deep_supervision import check_ds_weights, ds_weights, split_network_output
from .ms_ssim import MS_SSIM_WEIGHTS, MultiScaleSSIMLoss
from .utils import as_onehot, check_reduction, float32_no_autocast, foreground_present

__all__ = ["HybridLoss"]

_TERMS = ("focal", "ms_ssim", "iou")


class HybridLoss(_Loss):
    """Hybrid segmentation loss of UNet 3+: focal + MS-SSIM + IoU, for plain, deep-supervision and CGM outputs.

    .. math::

        \\mathcal{L} = \\sum_k w_k \\left( \\lambda_{f}\\,\\ell_{focal}(\\hat y_k, y)
            + \\lambda_{m}\\,\\ell_{ms\\text{-}ssim}(\\hat y_k, y) + \\lambda_{i}\\,\\ell_{iou}(\\hat y_k, y) \\right)
            + \\lambda_{c}\\,\\mathrm{BCE}(c, [1 - p, p])

    over the network's outputs :math:`\\hat y_k` (one, or the deep-supervision list with weights :math:`w_k`),
    where :math:`p` is 1 when the sample's label holds any foreground voxel and :math:`c` the
    classification-guided module's two logits (organ absent, organ present).

    Terms (each a sub-module, weighted by a non-negative ``lambda_*`` as in MONAI's DiceFocalLoss):

    - ``focal``: MONAI's :class:`~monai.losses.FocalLoss` (Lin et al.), :math:`-\\alpha_t (1 - p_t)^\\gamma \\log p_t`
      on the softmax (or sigmoid) of the logits, every class and every voxel, averaged over batch, classes and
      voxels. Defaults gamma 2 (Lin et al.; the UNet 3+ paper gives none), alpha None. Unlike the Keras
      reference (sigmoid, gamma 2, alpha 4, only the positive-class term, so background voxels add nothing)
      background voxels count here. It is computed on all channels and the background channel dropped
      afterwards when ``include_background=False``: MONAI's FocalLoss drops channel 0 of the *logits* before
      its softmax, which renormalises the foreground probabilities (and gives 0 for two classes).
    - ``ms_ssim``: :class:`~unet_monai.losses.MultiScaleSSIMLoss`, 1 - MS-SSIM per class (correct product of
      scales; coarse scales dropped automatically for small inputs, see there).
    - ``iou``: MONAI's :class:`~monai.losses.DiceLoss` with ``jaccard=True``, the soft Jaccard loss
      :math:`1 - (\\sum t p + s_{nr}) / (\\sum t + \\sum p - \\sum t p + s_{dr})` per sample and class (per
      class over the whole batch with ``batch=True``). The references have no smoothing and return NaN for two
      empty masks; the smoothing here gives 0.

    The activation and the one-hot conversion are done once and shared by the three terms; everything runs in
    float32 with autocast disabled. With ``reduction="none"`` each term keeps its own MONAI shape and they are
    added with broadcasting (as DiceFocalLoss does): (B, C, *spatial).

    Outputs accepted (the networks' contract):

    - a Tensor of logits (B, C, *spatial);
    - a list/tuple of such Tensors (deep supervision, final output first, as MONAI's DeepSupervisionLoss
      expects): the loss is the *weighted sum* over outputs with weights from ``ds_weight_mode`` /
      ``ds_weights`` (default: all 1, the paper's sum over side outputs). An output whose spatial size differs
      from the target's is compared with the target resized by nearest-neighbour interpolation;
    - a dict ``{"seg": <Tensor or list>, "cls": Tensor (B, 2)}`` from UNet 3+'s classification-guided module:
      adds ``lambda_cls`` times the mean BCE-with-logits of ``cls`` against ``[1 - present, present]``, computed
      once (not per output). ``present`` comes from the label: any voxel > 0 of a label map or single-channel
      mask, or any voxel of a non-background channel of a one-hot target (channel 0 is background with
      ``softmax`` or ``include_background=False``; with ``sigmoid`` and background included every channel is
      foreground).

    Components for logging: after every forward, ``self.components`` (also returned by
    :meth:`get_components`) holds the detached, *unweighted by lambda* terms ``"focal"``, ``"ms_ssim"``,
    ``"iou"`` (each already summed over deep-supervision outputs with the ``w_k``; 0 when its lambda is 0 and
    it was skipped) and ``"cls"`` when a classification output was given, so that
    ``loss == lambda_focal * focal + lambda_ms_ssim * ms_ssim + lambda_iou * iou + lambda_cls * cls``.

    Reference:
        Huang et al., "UNet 3+: A full-scale connected UNet for medical image segmentation", ICASSP 2020,
        arXiv:2004.08790. Lin et al., "Focal loss for dense object detection", ICCV 2017. Wang et al.,
        "Multiscale structural similarity for image quality assessment", 2003.

    Args:
        include_background: if False, channel 0 (background) is left out of every term.
        to_onehot_y: whether the target is a label map (B, 1, *spatial) of class indices.
        sigmoid: use a sigmoid per channel (multi-label or a single foreground channel).
        softmax: use a softmax over channels. Defaults to None: softmax unless ``sigmoid``.
        lambda_focal: weight of the focal term (>= 0). Defaults to 1.
        lambda_ms_ssim: weight of the MS-SSIM term (>= 0). Defaults to 1.
        lambda_iou: weight of the IoU term (>= 0). Defaults to 1.
        lambda_cls: weight of the classification BCE term (>= 0), used only with a ``"cls"`` output.
        gamma: focal exponent. Defaults to 2.
        alpha: focal balancing factor, as in MONAI's FocalLoss (scalar in [0, 1], or one value per output
            channel, background included). Defaults to None.
        smooth_nr: IoU numerator smoothing. Defaults to 1e-5.
        smooth_dr: IoU denominator smoothing. Defaults to 1e-5.
        batch: sum the IoU's intersection and union over the batch before the ratio, as MONAI's
            ``DiceLoss(batch=True)`` (the focal and MS-SSIM terms stay per sample). Defaults to False: per
            sample, as the paper (whole images). Per sample, every patch without tumour (most patches in 3D)
            costs a full 1 of IoU for any tumour probability in it; over the batch (nnU-Net's "batch Dice") the
            tumour is scored over all the patches together. For patch training (the 3D bundles use it).
        win_size: MS-SSIM Gaussian window. Defaults to 11.
        win_sigma: MS-SSIM Gaussian sigma. Defaults to 1.5.
        scale_weights: MS-SSIM scale weights, finest first.
        reduce_scales: let MS-SSIM drop coarse scales for small inputs (True) or raise (False).
        ms_ssim_skip_empty: leave out of the MS-SSIM term every (sample, class) pair whose target holds none of
            the class (:class:`MultiScaleSSIMLoss` ``skip_empty``); the focal and IoU terms still score false
            positives there. Defaults to False, as the paper (whole images). Not enough for small structures
            in patches: on the UNet 3+ 3D demo (48 x 48 x 24 patches, 2 MS-SSIM scales) the tumour stayed at
            Dice 0 with it, since even in a patch that holds a tumour almost every local SSIM window does not;
            only ``lambda_ms_ssim=0`` brought it out (the bundle's README).
        ds_weight_mode: deep-supervision weights when ``ds_weights`` is None, as MONAI's DeepSupervisionLoss:
            ``"same"`` (all 1, default), ``"exp"`` (1, 0.5, 0.25, ... floored at 0.0625) or ``"two"``
            (1, 0.5, 0.5, ...).
        ds_weights: explicit non-negative weight per deep-supervision output (at least as many as outputs;
            the first ones are used).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``, passed to every term.

    Raises:
        ValueError: bad arguments, bad output structure or shapes (with the expected and given shapes).

    Example::

        >>> loss = HybridLoss(to_onehot_y=True)
        >>> label = torch.randint(0, 3, (2, 1, 64, 64))
        >>> outputs = [torch.randn(2, 3, 64, 64, requires_grad=True) for _ in range(5)]
        >>> total = loss({"seg": outputs, "cls": torch.randn(2, 2)}, label)
        >>> sorted(loss.get_components())
        ['cls', 'focal', 'iou', 'ms_ssim']
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool | None = None,
        lambda_focal: float = 1.0,
        lambda_ms_ssim: float = 1.0,
        lambda_iou: float = 1.0,
        lambda_cls: float = 1.0,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        win_size: int = 11,
        win_sigma: float = 1.5,
        scale_weights: Sequence[float] = MS_SSIM_WEIGHTS,
        reduce_scales: bool = True,
        ms_ssim_skip_empty: bool = False,
        ds_weight_mode: str = "same",
        ds_weights: Sequence[float] | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if softmax is None:
            softmax = not sigmoid
        if sigmoid == softmax:
            raise ValueError(
                f"exactly one of sigmoid and softmax must be True; got sigmoid={sigmoid}, softmax={softmax}."
            )
        lambdas = {
            "lambda_focal": lambda_focal,
            "lambda_ms_ssim": lambda_ms_ssim,
            "lambda_iou": lambda_iou,
            "lambda_cls": lambda_cls,
        }
        for name, value in lambdas.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value}.")
        if not any(lambdas.values()):
            raise ValueError("at least one of lambda_focal, lambda_ms_ssim, lambda_iou, lambda_cls must be > 0.")
        ds_weights = check_ds_weights(ds_weight_mode, ds_weights)

        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.lambda_focal = float(lambda_focal)
        self.lambda_ms_ssim = float(lambda_ms_ssim)
        self.lambda_iou = float(lambda_iou)
        self.lambda_cls = float(lambda_cls)
        self.ds_weight_mode = ds_weight_mode
        self.ds_weights = ds_weights

        # Focal on all channels, unreduced: the background channel is dropped after the softmax (see above).
        self.focal = FocalLoss(
            include_background=True, to_onehot_y=False, gamma=gamma, alpha=alpha, use_softmax=softmax, reduction="none"
        )
        # The activation and one-hot conversion are shared, so the sub-losses receive probabilities.
        self.ms_ssim = MultiScaleSSIMLoss(
            include_background=include_background,
            win_size=win_size,
            win_sigma=win_sigma,
            scale_weights=scale_weights,
            reduce_scales=reduce_scales,
            skip_empty=ms_ssim_skip_empty,
            reduction=self.reduction,
        )
        self.iou = DiceLoss(
            include_background=include_background,
            jaccard=True,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            reduction=self.reduction,
        )
        self.components: dict[str, torch.Tensor] = {}

    def get_components(self) -> dict[str, torch.Tensor]:
        """The detached terms of the last forward: ``"focal"``, ``"ms_ssim"``, ``"iou"`` and ``"cls"`` if given.

        Each is the term before its ``lambda_*`` weight, summed over deep-supervision outputs with their
        weights, so the loss equals the lambda-weighted sum of these values. Empty before the first forward.
        """
        return dict(self.components)

    def get_ds_weights(self, levels: int) -> list[float]:
        """The weights of ``levels`` deep-supervision outputs, final output first."""
        return ds_weights(levels, self.ds_weight_mode, self.ds_weights)

    def _reduce_focal(self, loss: torch.Tensor) -> torch.Tensor:
        # the reductions of MONAI's FocalLoss: "sum" averages over voxels first, then sums batch and classes
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.flatten(2).mean(2).sum()
        return loss

    def _terms(self, logits: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        n_classes = logits.shape[1]
        if self.softmax and n_classes < 2:
            raise ValueError(
                f"softmax needs at least 2 output channels; got output {tuple(logits.shape)}. "
                "Use sigmoid=True for a single foreground channel."
            )
        probs = torch.softmax(logits, 1) if self.softmax else torch.sigmoid(logits)
        zero = logits.new_zeros(())
        terms = dict.fromkeys(_TERMS, zero)
        if self.lambda_focal > 0:
            focal = self.focal(logits, onehot)
            if not self.include_background and n_classes > 1:
                focal = focal[:, 1:]
            terms["focal"] = self._reduce_focal(focal)
        if self.lambda_ms_ssim > 0:
            terms["ms_ssim"] = self.ms_ssim(probs, onehot)
        if self.lambda_iou > 0:
            iou = self.iou(probs, onehot)
            if self.iou.batch and self.reduction == LossReduction.NONE.value:
                # MONAI gives (C, 1, ...) for a batch IoU: put the class axis where the other terms have it
                iou = iou.reshape(1, -1, *([1] * (probs.ndim - 2)))
            terms["iou"] = iou
        return terms

    def _cls_term(self, cls: torch.Tensor, target: torch.Tensor, batch: int, spatial_ndim: int) -> torch.Tensor:
        if cls.shape[0] != batch or cls.numel() != 2 * batch:
            raise ValueError(
                f"output['cls'] must be (B, 2) logits (organ absent, organ present) with B = {batch}; "
                f"got shape {tuple(cls.shape)}."
            )
        background_channel = self.softmax or not self.include_background
        present = foreground_present(target, background_channel=background_channel)
        cls_target = torch.stack([1.0 - present, present], dim=1)
        bce = F.binary_cross_entropy_with_logits(cls.float().reshape(batch, 2), cls_target, reduction="none")
        if self.reduction == LossReduction.MEAN.value:
            return bce.mean()
        if self.reduction == LossReduction.SUM.value:
            return bce.sum()
        return bce.mean(1).view(batch, 1, *([1] * spatial_ndim))

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, object], target: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            input: logits (B, C, *spatial), a deep-supervision list of them (final output first), or a dict
                ``{"seg": ..., "cls": (B, 2)}``.
            target: label map (B, 1, *spatial) with ``to_onehot_y``, else one-hot (B, C, *spatial).

        Returns:
            The loss (float32): a scalar for ``"mean"``/``"sum"``.
        """
        outputs, cls = split_network_output(input)
        weights = self.get_ds_weights(len(outputs))
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a Tensor; got {type(target).__name__}.")
        with float32_no_autocast(target.device):
            target = target.float()
            onehot_by_size: dict[tuple[int, ...], torch.Tensor] = {}
            totals: dict[str, torch.Tensor] = {}
            for weight, output in zip(weights, outputs):
                output = output.float()
                size = tuple(output.shape[2:])
                if self.reduction == LossReduction.NONE.value and output.shape[2:] != outputs[0].shape[2:]:
                    raise ValueError(
                        "reduction='none' needs all deep-supervision outputs at one spatial size; got "
                        f"{[tuple(o.shape) for o in outputs]}."
                    )
                if size not in onehot_by_size:
                    resized = target
                    if output.ndim == target.ndim and size != tuple(target.shape[2:]):
                        resized = F.interpolate(target, size=size, mode="nearest-exact")
                    onehot_by_size[size] = as_onehot(output, resized, self.to_onehot_y, type(self).__name__)
                terms = self._terms(output, onehot_by_size[size])
                for name, value in terms.items():
                    totals[name] = totals[name] + weight * value if name in totals else weight * value
            loss = (
                self.lambda_focal * totals["focal"]
                + self.lambda_ms_ssim * totals["ms_ssim"]
                + self.lambda_iou * totals["iou"]
            )
            if cls is not None:
                totals["cls"] = self._cls_term(cls, target, target.shape[0], target.ndim - 2)
                loss = loss + self.lambda_cls * totals["cls"]
        self.components = {name: value.detach() for name, value in totals.items()}
        return loss
