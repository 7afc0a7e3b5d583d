"""Class-weighted voxel-wise loss: each voxel's loss is multiplied by the weight of its true class."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from .utils import check_reduction, float32_no_autocast

__all__ = ["WeightedLoss", "compute_class_weights"]

_METHODS = ("inverse", "inverse_sqrt", "median")


def _weights_tensor(weights: Sequence[float] | Mapping[int, float]) -> torch.Tensor:
    """Dense weight vector indexed by class from a sequence or a {class_index: weight} dict."""
    if isinstance(weights, Mapping):
        if not weights:
            raise ValueError("weights must not be empty.")
        by_index: dict[int, float] = {}
        for key, value in weights.items():
            # JSON/YAML bundle configs can only give string keys: accept "2" as class 2
            index = int(key) if isinstance(key, str) and key.strip().isdigit() else key
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
                raise ValueError(
                    f"weights dict keys must be class indices (int >= 0 or a digit string); got key {key!r}."
                )
            by_index[int(index)] = float(value)
        # classes missing from the dict weigh 1 (as scikit-learn's class_weight dicts)
        dense = [1.0] * (max(by_index) + 1)
        for index, value in by_index.items():
            dense[index] = value
    else:
        if isinstance(weights, (str, bytes)):
            raise ValueError(f"weights must be a sequence of numbers or a dict; got {weights!r}.")
        dense = [float(w) for w in weights]
        if not dense:
            raise ValueError("weights must not be empty.")
    if any(not math.isfinite(w) or w < 0 for w in dense):
        raise ValueError(f"class weights must be finite and >= 0; got {dense}.")
    return torch.tensor(dense, dtype=torch.float32)


class WeightedLoss(_Loss):
    """Wraps a voxel-wise loss and multiplies each voxel's loss by the weight of its true class.

    The seed's Keras ``weighted_loss`` decorator as a MONAI-style loss:

    .. math::

        \\mathcal{L} = \\mathrm{reduce}_{b, v}\\big( w_{y_{b,v}} \\, \\ell(\\hat y, y)_{b, v} \\big)

    where :math:`\\ell` is the wrapped loss without reduction, :math:`y_{b,v}` the class index of voxel
    :math:`v` of sample :math:`b` and :math:`w` the class weights. The seed meant ``{0: 1, 1: 50, 2: 70}``
    but iterated over the dict's keys, so it used the keys 1, 2, 3 as weights; here the weight of class ``c``
    is ``weights[c]``, for a sequence or a dict alike.

    ``"mean"`` is the plain mean of the weighted map (the seed's reduction), not a mean normalised by the sum
    of weights as in ``torch.nn.CrossEntropyLoss(weight=...)``. A wrapped loss with a per-class channel axis
    (e.g. MONAI's FocalLoss with ``reduction="none"``, shape (B, C, *spatial)) has every channel of a voxel
    multiplied by that voxel's weight.

    Args:
        loss: a voxel-wise loss returning an unreduced map, (B, *spatial) or (B, C', *spatial), e.g.
            ``torch.nn.CrossEntropyLoss(reduction="none")`` or ``monai.losses.FocalLoss(reduction="none")``.
            A module with a ``reduction`` attribute other than ``"none"`` is rejected.
        weights: class weights by class index: a sequence (``weights[c]`` for class ``c``) or a dict
            ``{class_index: weight}`` in which missing classes weigh 1 (keys may be digit strings, as JSON/YAML
            bundle configs give them). Stored in the ``class_weights`` buffer, which follows ``.to(device)``;
            a loss left on the CPU still works on CUDA inputs. :func:`compute_class_weights` derives them from
            class frequencies.
        target_as_index: pass the target to the wrapped loss as class indices (B, *spatial) of dtype long
            (what ``CrossEntropyLoss``/``NLLLoss`` expect) instead of unchanged. Defaults to None: True for
            ``torch.nn.CrossEntropyLoss`` and ``torch.nn.NLLLoss``, False otherwise.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the weighted map).

    Raises:
        ValueError: a reduced wrapped loss, bad weights, a target of the wrong shape, a class index outside
            the weights, or a loss map that is not voxel-wise.

    Example::

        >>> loss = WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), weights={0: 1, 1: 50, 2: 70})
        >>> logits = torch.randn(2, 3, 32, 32)
        >>> label = torch.randint(0, 3, (2, 1, 32, 32))
        >>> value = loss(logits, label)
    """

    class_weights: torch.Tensor

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        weights: Sequence[float] | Mapping[int, float],
        target_as_index: bool | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if not callable(loss):
            raise TypeError(f"loss must be callable (a voxel-wise loss module); got {type(loss).__name__}.")
        inner_reduction = getattr(loss, "reduction", "none")
        if str(getattr(inner_reduction, "value", inner_reduction)) != "none":
            raise ValueError(
                f"the wrapped loss must return an unreduced map (reduction='none'); got reduction={inner_reduction!r} "
                f"for {type(loss).__name__}."
            )
        self.loss = loss
        if target_as_index is None:
            target_as_index = isinstance(loss, (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss))
        self.target_as_index = target_as_index
        self.register_buffer("class_weights", _weights_tensor(weights))

    def class_index(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class index of every voxel, (B, *spatial) long, from a label map (B, 1, *spatial), a one-hot target
        (B, C, *spatial; argmax over channels) or class indices (B, *spatial)."""
        spatial = tuple(input.shape[2:])
        if input.ndim < 3:
            raise ValueError(f"input must be (B, C, *spatial); got shape {tuple(input.shape)}.")
        if target.ndim == input.ndim - 1 and tuple(target.shape[1:]) == spatial:
            index = target
        elif target.ndim == input.ndim and tuple(target.shape[2:]) == spatial and target.shape[1] == 1:
            index = target[:, 0]
        elif target.ndim == input.ndim and tuple(target.shape[2:]) == spatial and target.shape[1] == input.shape[1]:
            index = target.argmax(1)
        else:
            raise ValueError(
                "target must be a label map (B, 1, *spatial), one-hot (B, C, *spatial) or indices (B, *spatial) "
                f"matching the input; got input {tuple(input.shape)} and target {tuple(target.shape)}."
            )
        if target.shape[0] != input.shape[0]:
            raise ValueError(f"batch sizes differ: input {tuple(input.shape)}, target {tuple(target.shape)}.")
        if index.is_floating_point():
            index = index.round()
        index = index.long()
        lo, hi = torch.aminmax(index)
        if lo < 0 or hi >= self.class_weights.numel():
            raise ValueError(
                f"target holds class indices in [{lo.item()}, {hi.item()}] but weights are given for classes "
                f"0..{self.class_weights.numel() - 1}."
            )
        return index

    def weight_map(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weight of every voxel's true class, (B, *spatial) float32, on the target's device."""
        return self._weights_at(self.class_index(input, target))

    def _weights_at(self, index: torch.Tensor) -> torch.Tensor:
        # the buffer follows ``.to(device)``, but a bundle's loss is never moved: the data decides the device
        return self.class_weights.to(index.device)[index]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: network output (B, C, *spatial), passed to the wrapped loss in float32.
            target: label map (B, 1, *spatial), one-hot (B, C, *spatial) or indices (B, *spatial).
        """
        index = self.class_index(input, target)
        weights = self._weights_at(index)
        with float32_no_autocast(input.device):
            inner_target = index if self.target_as_index else target
            loss_map = self.loss(input.float(), inner_target)
            spatial = tuple(index.shape[1:])
            if tuple(loss_map.shape) == tuple(index.shape):
                weighted = loss_map * weights
            elif loss_map.ndim == index.ndim + 1 and tuple(loss_map.shape[2:]) == spatial:
                weighted = loss_map * weights.unsqueeze(1)
            else:
                raise ValueError(
                    f"the wrapped loss must return a voxel-wise map (B, *spatial) or (B, C, *spatial) with spatial "
                    f"size {spatial}; got shape {tuple(loss_map.shape)}."
                )
            if self.reduction == LossReduction.MEAN.value:
                return weighted.mean()
            if self.reduction == LossReduction.SUM.value:
                return weighted.sum()
            return weighted


def _load_label(item: Any, key: str | None) -> np.ndarray:
    if isinstance(item, Mapping):
        if key is None or key not in item:
            raise ValueError(f"a dict item needs key={key!r} naming its label entry; got keys {sorted(item)}.")
        item = item[key]
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if path.endswith(".npy"):
            return np.load(path)
        import nibabel as nib  # imported here: only needed for files

        return np.asanyarray(nib.load(path).dataobj)
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().numpy()
    return np.asarray(item)


def compute_class_weights(
    labels: Iterable[Any],
    num_classes: int | None = None,
    method: str = "median",
    key: str | None = None,
) -> list[float]:
    """Class weights from class frequencies over a dataset, normalised so that the smallest weight is 1.

    Frequencies count voxels of every label map. Methods, with :math:`n_c` the voxel count of class
    :math:`c`, :math:`N` all voxels and :math:`N_c` the voxels of the images in which :math:`c` occurs:

    - ``"inverse"``: :math:`w_c \\propto N / n_c`;
    - ``"inverse_sqrt"``: :math:`w_c \\propto \\sqrt{N / n_c}` (milder);
    - ``"median"``: median frequency balancing (Eigen and Fergus, ICCV 2015),
      :math:`w_c = \\mathrm{median}(f) / f_c` with :math:`f_c = n_c / N_c`.

    All are then divided by their minimum, so the most frequent class (the background in CT) weighs 1 and
    the weights can be compared across methods; for ``"median"`` this rescales the classic weights (where the
    median class weighs 1) without changing their ratios.

    Args:
        labels: label maps of class indices: arrays, tensors, paths to NIfTI (via nibabel) or ``.npy`` files,
            or dicts holding one of these under ``key`` (a MONAI data list).
        num_classes: number of classes; defaults to the largest label found + 1.
        method: ``"inverse"``, ``"inverse_sqrt"`` or ``"median"`` (default).
        key: the label entry of dict items, e.g. ``"label"``.

    Returns:
        One weight per class, index = class.

    Raises:
        ValueError: unknown method, a negative or out-of-range label, no labels, or a class that never occurs
            (its weight would be infinite: give the weights explicitly or fix ``num_classes``).

    Example::

        >>> compute_class_weights([np.array([0, 0, 0, 1]), np.array([0, 0, 1, 2])], method="inverse")
        [1.0, 2.5, 5.0]
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    counts = np.zeros(0, dtype=np.int64)
    present_voxels = np.zeros(0, dtype=np.int64)  # voxels of the images in which each class occurs
    n_images = 0
    for item in labels:
        array = np.asarray(_load_label(item, key))
        flat = np.rint(array.reshape(-1)).astype(np.int64)
        if flat.size == 0:
            continue
        if flat.min() < 0:
            raise ValueError(f"label values must be class indices >= 0; got {flat.min()} in item {n_images}.")
        if num_classes is not None and flat.max() >= num_classes:
            raise ValueError(f"label value {flat.max()} in item {n_images} is >= num_classes={num_classes}.")
        image_counts = np.bincount(flat)
        size = max(len(counts), len(image_counts))
        counts = np.pad(counts, (0, size - len(counts)))
        present_voxels = np.pad(present_voxels, (0, size - len(present_voxels)))
        counts[: len(image_counts)] += image_counts
        present_voxels[: len(image_counts)] += np.where(image_counts > 0, flat.size, 0)
        n_images += 1
    if n_images == 0:
        raise ValueError("no labels given: cannot compute class frequencies.")
    n = num_classes if num_classes is not None else len(counts)
    counts = np.pad(counts, (0, n - len(counts)))
    present_voxels = np.pad(present_voxels, (0, n - len(present_voxels)))
    missing = [c for c in range(n) if counts[c] == 0]
    if missing:
        raise ValueError(
            f"class(es) {missing} never occur in the {n_images} label map(s): their weight would be infinite. "
            "Give the weights explicitly or check num_classes."
        )
    if method == "median":
        freq = counts / present_voxels
        weights = np.median(freq) / freq
    else:
        weights = counts.sum() / counts
        if method == "inverse_sqrt":
            weights = np.sqrt(weights)
    weights = weights / weights.min()
    return [float(w) for w in weights]
