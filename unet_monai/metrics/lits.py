"""LiTS-style segmentation metrics per case and region, computed with MONAI's metrics and the voxel spacing in mm.

Metrics (Bilic et al., "The Liver Tumor Segmentation Benchmark (LiTS)", Medical Image Analysis 2023),
for a predicted region P and a reference region L:

- Dice = 2 |P and L| / (|P| + |L|) (MONAI ``DiceMetric``);
- VOE (volumetric overlap error) = 1 - |P and L| / |P or L|;
- RVD (relative volume difference) = (|P| - |L|) / |L|, signed: > 0 is over-segmentation;
- ASSD (average symmetric surface distance, mm): the mean of the distances from every surface voxel
  of P to the surface of L and from every surface voxel of L to the surface of P (MONAI
  ``SurfaceDistanceMetric(symmetric=True)``);
- HD95 (mm): the larger of the two directed 95th-percentile surface distances (MONAI
  ``HausdorffDistanceMetric(percentile=95)``);
- global Dice: 2 sum |P and L| / (sum |P| + sum |L|), voxels pooled over all cases (the LiTS "Dice
  global"), from the :class:`RegionCounts` of each case.

Regions of a label map (0 background, 1 liver, 2 tumour), :data:`LITS_REGIONS`: ``liver`` = label 1
(the liver class as the bundles score it), ``tumour`` = label 2, ``liver_tumour`` = labels 1 or 2
(the whole liver including its tumours: the LiTS challenge's liver score).

Empty regions: when both P and L are empty every metric is a perfect score (Dice 1, VOE 0, RVD 0,
ASSD 0, HD95 0), as in the LiTS evaluation of tumour-free cases. When only one is empty, Dice is 0 and
VOE 1, while RVD (L empty), ASSD and HD95 are undefined and reported as NaN.

Distances use the voxel spacing of the reference (from its affine), in mm. Both masks are cropped to
their common bounding box plus one voxel before the MONAI metrics run, which changes no value and
keeps 512 x 512 x 500 volumes cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LITS_METRICS", "LITS_REGIONS", "RegionCounts", "global_dice", "lits_case_metrics", "region_metrics"]

#: label values of each evaluated region
LITS_REGIONS: dict[str, tuple[int, ...]] = {"liver": (1,), "tumour": (2,), "liver_tumour": (1, 2)}
#: metric names, in table order
LITS_METRICS: tuple[str, ...] = ("dice", "voe", "rvd", "assd", "hd95")


@dataclass
class RegionCounts:
    """Voxel counts of one region in one case, for the pooled (global) Dice."""

    pred: int = 0
    ref: int = 0
    intersection: int = 0

    def __add__(self, other: RegionCounts) -> RegionCounts:
        return RegionCounts(self.pred + other.pred, self.ref + other.ref, self.intersection + other.intersection)


def _crop(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union plus one voxel (values unchanged)."""
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return pred[tuple(box)], ref[tuple(box)]


def region_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[dict[str, float], RegionCounts]:
    """Dice, VOE, RVD, ASSD and HD95 of one binary region (see the module docstring for the definitions).

    Args:
        pred: predicted mask, boolean, any number of spatial dimensions.
        ref: reference mask of the same shape.
        spacing: voxel size in mm along each axis (default 1 mm).

    Returns:
        ``({"dice", "voe", "rvd", "assd", "hd95"}, counts)``.

    Raises:
        ValueError: the shapes differ, or ``spacing`` has the wrong length.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}.")
    spacing = [1.0] * pred.ndim if spacing is None else [float(s) for s in spacing]
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not match the {pred.ndim} dimensions of the masks.")
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 and n_ref == 0:
        return {"dice": 1.0, "voe": 0.0, "rvd": 0.0, "assd": 0.0, "hd95": 0.0}, RegionCounts(0, 0, 0)
    inter = int(np.logical_and(pred, ref).sum())
    union = n_pred + n_ref - inter
    p, r = _crop(pred, ref)
    p_t = torch.from_numpy(np.ascontiguousarray(p))[None, None]
    r_t = torch.from_numpy(np.ascontiguousarray(r))[None, None]
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p_t.float(), r_t.float())
    values = {
        "dice": float(dice.item()),
        "voe": 1.0 - inter / union,
        "rvd": (n_pred - n_ref) / n_ref if n_ref else math.nan,
        "assd": math.nan,
        "hd95": math.nan,
    }
    if n_pred and n_ref:
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
        sd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")
        with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            values["hd95"] = float(hd(p_t, r_t, spacing=spacing).item())
            values["assd"] = float(sd(p_t, r_t, spacing=spacing).item())
    return values, RegionCounts(n_pred, n_ref, inter)


def lits_case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    regions: Mapping[str, Sequence[int]] = LITS_REGIONS,
) -> tuple[dict[str, float], dict[str, RegionCounts]]:
    """Every metric of every region for one case.

    Args:
        pred: predicted label map (0 background, 1 liver, 2 tumour).
        ref: reference label map of the same shape.
        spacing: voxel size in mm.
        regions: region name -> label values (default :data:`LITS_REGIONS`).

    Returns:
        ``({"dice_liver": ..., "voe_tumour": ..., ...}, {region: RegionCounts})``; metric columns are
        ``f"{metric}_{region}"``, metric-major in :data:`LITS_METRICS` order.

    Example::

        values, counts = lits_case_metrics(pred, label, spacing=(0.7, 0.7, 2.5))
        values["dice_liver_tumour"], values["hd95_tumour"]
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    per_region: dict[str, dict[str, float]] = {}
    counts: dict[str, RegionCounts] = {}
    for name, labels in regions.items():
        per_region[name], counts[name] = region_metrics(np.isin(pred, labels), np.isin(ref, labels), spacing)
    values = {f"{m}_{name}": per_region[name][m] for m in LITS_METRICS for name in regions}
    return values, counts


def global_dice(counts: Sequence[Mapping[str, RegionCounts]]) -> dict[str, float]:
    """The pooled Dice of each region over cases: 2 sum |P and L| / (sum |P| + sum |L|) (1.0 when all are empty)."""
    totals: dict[str, RegionCounts] = {}
    for case in counts:
        for name, c in case.items():
            totals[name] = totals.get(name, RegionCounts()) + c
    return {name: (2.0 * c.intersection / (c.pred + c.ref)) if (c.pred + c.ref) else 1.0 for name, c in totals.items()}
