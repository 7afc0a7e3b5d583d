"""Ignite handlers used by the bundles: checkpoints and resume, epoch seeding, learning curves, per-case metrics,
precise BatchNorm statistics, a moving average of the weights, BatchNorm folding for inference."""

from .batch_norm import PreciseBatchNorm, recompute_batch_norm_stats
from .checkpoint import BestModelSaver, TrainingCheckpointer
from .distances import SurfaceDistanceHandler, voxel_spacing
from .ema import WeightAveraging
from .epoch import DatasetEpochSetter
from .fold import FoldBatchNorm
from .history import TrainingHistory, plot_learning_curves
from .metrics import CaseMetricsWriter, case_name
from .seeding import EpochSeeder, configure_determinism
from .validation import PeriodicValidationHandler

__all__ = [
    "BestModelSaver",
    "CaseMetricsWriter",
    "DatasetEpochSetter",
    "EpochSeeder",
    "FoldBatchNorm",
    "PeriodicValidationHandler",
    "PreciseBatchNorm",
    "SurfaceDistanceHandler",
    "TrainingCheckpointer",
    "TrainingHistory",
    "WeightAveraging",
    "case_name",
    "configure_determinism",
    "plot_learning_curves",
    "recompute_batch_norm_stats",
    "voxel_spacing",
]
