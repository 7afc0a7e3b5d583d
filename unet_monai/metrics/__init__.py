"""Segmentation metrics: LiTS-style per-case scores (Dice, VOE, RVD, ASSD, HD95 in mm) and the global Dice."""

from .lits import LITS_METRICS, LITS_REGIONS, RegionCounts, global_dice, lits_case_metrics, region_metrics

__all__ = ["LITS_METRICS", "LITS_REGIONS", "RegionCounts", "global_dice", "lits_case_metrics", "region_metrics"]
