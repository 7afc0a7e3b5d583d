"""Ignite handlers used by the bundles: atomic checkpoints and resume, learning curves, per-case metric tables."""

from .checkpoint import BestModelSaver, TrainingCheckpointer
from .distances import SurfaceDistanceHandler, voxel_spacing
from .epoch import DatasetEpochSetter
from .history import TrainingHistory, plot_learning_curves
from .metrics import CaseMetricsWriter, case_name
from .validation import PeriodicValidationHandler

__all__ = [
    "BestModelSaver",
    "CaseMetricsWriter",
    "DatasetEpochSetter",
    "PeriodicValidationHandler",
    "SurfaceDistanceHandler",
    "TrainingCheckpointer",
    "TrainingHistory",
    "case_name",
    "plot_learning_curves",
    "voxel_spacing",
]
