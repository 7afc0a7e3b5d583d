"""Ignite handlers used by the bundles: checkpoints and resume, epoch seeding, learning curves, per-case metrics."""

from .checkpoint import BestModelSaver, TrainingCheckpointer
from .distances import SurfaceDistanceHandler, voxel_spacing
from .epoch import DatasetEpochSetter
from .history import TrainingHistory, plot_learning_curves
from .metrics import CaseMetricsWriter, case_name
from .seeding import EpochSeeder, configure_determinism
from .validation import PeriodicValidationHandler

__all__ = [
    "BestModelSaver",
    "CaseMetricsWriter",
    "DatasetEpochSetter",
    "EpochSeeder",
    "PeriodicValidationHandler",
    "SurfaceDistanceHandler",
    "TrainingCheckpointer",
    "TrainingHistory",
    "case_name",
    "configure_determinism",
    "plot_learning_curves",
    "voxel_spacing",
]
