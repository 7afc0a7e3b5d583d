"""Ignite handlers used by the bundles: atomic checkpoints and resume, learning curves, per-case metric tables."""

from .checkpoint import BestModelSaver, TrainingCheckpointer
from .history import TrainingHistory, plot_learning_curves
from .metrics import CaseMetricsWriter, case_name

__all__ = [
    "BestModelSaver",
    "CaseMetricsWriter",
    "TrainingCheckpointer",
    "TrainingHistory",
    "case_name",
    "plot_learning_curves",
]
