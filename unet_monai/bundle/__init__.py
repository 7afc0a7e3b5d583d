"""Components the bundles reference by ``_target_`` (root, datalists, metric helpers, memory format, compiling,
folding) and export."""

from .compile import compile_network, is_compiled
from .data import (
    demo_dataset,
    evaluation_cases,
    find_images,
    find_microscopy_images,
    microscopy_datalist,
    microscopy_demo_dataset,
    training_datalist,
)
from .export import export_bundle
from .fold import fold_as_configured
from .memory_format import memory_format
from .metrics import ClassChannel, LossTerms, class_dice_metrics
from .paths import bundle_root_of, resolve_bundle_root

__all__ = [
    "ClassChannel",
    "LossTerms",
    "bundle_root_of",
    "class_dice_metrics",
    "compile_network",
    "demo_dataset",
    "evaluation_cases",
    "export_bundle",
    "find_images",
    "find_microscopy_images",
    "fold_as_configured",
    "is_compiled",
    "memory_format",
    "microscopy_datalist",
    "microscopy_demo_dataset",
    "resolve_bundle_root",
    "training_datalist",
]
