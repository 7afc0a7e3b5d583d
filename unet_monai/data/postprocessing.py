"""Label-map post-processing: a morphological opening of the predicted organ with a ball given in millimetres.

A network that over-segments grows the organ into neighbours of similar density through thin bridges; the
bridged region is then part of the organ's connected component, and MONAI's
``KeepLargestConnectedComponentd`` keeps it. An opening (erosion, then dilation, with a ball of radius ``r``)
cuts every bridge and removes every protrusion thinner than the ball, so that the largest-component step that
follows drops what lay beyond them. The price is the organ's own parts thinner than ``2 r``, which the opening
removes too: the radius is a property of the data (measured on the validation cases), not of the network.

MONAI's morphological operations (``monai.transforms.utils_morphological_ops``) erode and dilate with a cube
of voxels, which on CT's anisotropic grids (0.7 x 0.7 x 5 mm) is a different shape in every scan; here the ball
is Euclidean, in mm, from two distance transforms (MONAI's ``distance_transform_edt``: SciPy on the CPU) on
the foreground's bounding box, which keeps a 512 x 512 x 500 volume cheap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.transforms.utils import distance_transform_edt

__all__ = ["OpenForeground", "OpenForegroundd", "open_foreground"]


def _check_radius(radius_mm: float) -> float:
    try:
        radius = float(radius_mm)
    except (TypeError, ValueError):
        radius = math.nan
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius_mm must be a finite number >= 0 (0: no opening), got {radius_mm!r}.")
    return radius


def _spacing_of(labels: torch.Tensor | np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    spatial = labels.ndim - 1
    if spacing is None:
        if not isinstance(labels, MetaTensor):
            raise ValueError(
                "spacing is needed for a label map without an affine: pass spacing= (mm per spatial axis) "
                "or a MetaTensor."
            )
        spacing = labels.pixdim
    values = tuple(float(s) for s in spacing)
    if len(values) != spatial or any(not math.isfinite(s) or s <= 0 for s in values):
        raise ValueError(
            f"spacing must be {spatial} positive values (mm per spatial axis of a {tuple(labels.shape)} label "
            f"map), got {tuple(spacing)}."
        )
    return values


def _opening_removes(
    foreground: np.ndarray, radius: float, spacing: tuple[float, ...]
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Where an opening of ``foreground`` (one channel) with a ball of ``radius`` mm removes voxels.

    Returns:
        the foreground's bounding box grown by the ball's reach, and the mask of removed voxels within it;
        None when nothing is foreground, or when the ball fits nowhere (the opening would remove all of it:
        that foreground is left alone).
    """
    nonzero = np.nonzero(foreground)
    if not len(nonzero[0]):
        return None
    # voxels beyond the grown box are background and at least one ball radius away from every foreground
    # voxel, so they change no distance that the opening compares with r
    box = tuple(
        slice(max(int(idx.min()) - math.ceil(radius / s) - 1, 0), min(int(idx.max()) + math.ceil(radius / s) + 2, n))
        for idx, s, n in zip(nonzero, spacing, foreground.shape)
    )
    del nonzero
    region = foreground[box]
    # erosion: voxels farther than r from the background; dilation: voxels within r of the eroded set
    eroded = distance_transform_edt(region[None], sampling=list(spacing))[0] > radius
    if not eroded.any():
        return None
    opened = distance_transform_edt(~eroded[None], sampling=list(spacing))[0] <= radius
    return box, region & ~opened


def open_foreground(
    labels: torch.Tensor | np.ndarray, radius_mm: float, spacing: Sequence[float] | None = None
) -> torch.Tensor | np.ndarray:
    """Morphological opening of a label map's foreground (values > 0) with a ball of ``radius_mm`` millimetres.

    Voxels that the opening removes become 0 (background); the others keep their label, so the tumours inside
    a liver stay tumours. Nothing is added. Each channel is opened on its own. A channel whose foreground is
    everywhere thinner than the ball is returned unchanged rather than erased.

    Args:
        labels: (C, *spatial) label map, channel first (2D or 3D), a tensor or array of integers.
        radius_mm: radius of the ball in mm; 0 returns the labels unchanged.
        spacing: voxel size in mm per spatial axis; by default the MetaTensor's own (from its affine).

    Returns:
        a new label map of the input's type, dtype, device and metadata (the input itself when ``radius_mm`` is
        0).

    Raises:
        ValueError: ``radius_mm`` negative or not a number; ``spacing`` missing (a plain tensor or array) or not
            one positive value per spatial axis.

    Example::

        >>> labels = MetaTensor(prediction, affine=image.affine)  # (1, H, W, D), 0 / 1 / 2
        >>> opened = open_foreground(labels, radius_mm=4.5)
    """
    radius = _check_radius(radius_mm)
    if labels.ndim not in (3, 4):
        raise ValueError(f"labels must be channel-first (C, H, W[, D]), got shape {tuple(labels.shape)}.")
    if radius == 0:
        return labels
    voxel_mm = _spacing_of(labels, spacing)
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    out = labels.clone() if isinstance(labels, torch.Tensor) else np.array(labels, copy=True)
    for channel in range(values.shape[0]):
        found = _opening_removes(values[channel] > 0, radius, voxel_mm)
        if found is None:
            continue
        box, removed = found
        if isinstance(out, torch.Tensor):
            out[channel][box].masked_fill_(torch.from_numpy(removed).to(out.device), 0)
        else:
            out[channel][box][removed] = 0
    return out


class OpenForeground(Transform):
    """Array transform of :func:`open_foreground`: the foreground opened with a ball of ``radius_mm``.

    Put it before ``KeepLargestConnectedComponent``: the opening cuts the thin bridges by which an
    over-segmented organ reaches into its neighbours, and the largest-component step then drops them.

    Args:
        radius_mm: radius of the ball in mm (0: the transform returns its input).
        spacing: voxel size in mm per spatial axis; by default each MetaTensor's own.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, radius_mm: float, spacing: Sequence[float] | None = None) -> None:
        self.radius_mm = _check_radius(radius_mm)
        self.spacing = spacing

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        return open_foreground(img, self.radius_mm, self.spacing)


class OpenForegroundd(MapTransform):
    """Dictionary version of :class:`OpenForeground`.

    Args:
        keys: keys of the label maps to open (e.g. ``"pred"`` after ``AsDiscreted(argmax=True)``).
        radius_mm: radius of the ball in mm (0: the data pass unchanged).
        spacing: voxel size in mm per spatial axis; by default each MetaTensor's own (its affine).
        allow_missing_keys: do not raise for missing keys.

    Example (a bundle's post-processing, in original voxel space after ``Invertd``)::

        {"_target_": "unet_monai.data.OpenForegroundd", "keys": "pred", "radius_mm": 4.5},
        {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": [1, 2],
         "independent": false}
    """

    backend = OpenForeground.backend

    def __init__(
        self,
        keys: KeysCollection,
        radius_mm: float,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.opener = OpenForeground(radius_mm, spacing)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.opener(d[key])
        return d
