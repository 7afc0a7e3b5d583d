"""LiTS-style data: dataset discovery and splits, validation, 2.5D slice and 3D patch pipelines, a synthetic generator.

- :mod:`~unet_monai.data.lits`: find LiTS / MSD Task03_Liver cases, split by case, datalist JSON.
- :mod:`~unet_monai.data.transforms`: case validation with clear errors, 2.5D neighbour stacking.
- :mod:`~unet_monai.data.pipelines`: MONAI ``Compose`` chains for 3D patches and 2.5D volumes.
- :mod:`~unet_monai.data.anti_alias`: Gaussian anti-aliasing before ``Spacingd`` or ``Resized`` downsample.
- :mod:`~unet_monai.data.postprocessing`: opening of a predicted label map with a ball in mm.
- :mod:`~unet_monai.data.slices`: the cached 2.5D slice dataset and the slice-stack inferer.
- :mod:`~unet_monai.data.synthetic`: LiTS-like CT generator (``python -m unet_monai.data.synthetic``).

Names are imported from their modules on first use, so the generator's command line and the
discovery functions start without importing MONAI and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .anti_alias import AntiAliasedResized, SpacingAntiAliasd, anti_aliasing_sigma
    from .lits import case_id_from_path, find_cases, load_datalist, prepare_datalist, save_datalist, split_cases
    from .pipelines import lits_2d_augmentation, lits_2d_preprocessing, lits_3d_transforms, lits_evaluation_transforms
    from .postprocessing import OpenForeground, OpenForegroundd, open_foreground
    from .slices import LiTSSliceDataset
    from .synthetic import SyntheticCase, generate_case, generate_dataset
    from .transforms import (
        CheckCaseFilesd,
        InvalidCaseError,
        ValidateCased,
        check_case_files,
        slice_neighbours,
        slice_stack_to_volume,
        validate_case,
        validate_datalist,
        volume_to_slice_stack,
    )
    from .writers import AtomicNibabelWriter

_MODULES = {
    "anti_alias": ["AntiAliasedResized", "SpacingAntiAliasd", "anti_aliasing_sigma"],
    "lits": ["case_id_from_path", "find_cases", "load_datalist", "prepare_datalist", "save_datalist", "split_cases"],
    "pipelines": ["lits_2d_augmentation", "lits_2d_preprocessing", "lits_3d_transforms", "lits_evaluation_transforms"],
    "postprocessing": ["OpenForeground", "OpenForegroundd", "open_foreground"],
    "slices": ["LiTSSliceDataset"],
    "writers": ["AtomicNibabelWriter"],
    "synthetic": ["SyntheticCase", "generate_case", "generate_dataset"],
    "transforms": [
        "CheckCaseFilesd",
        "InvalidCaseError",
        "ValidateCased",
        "check_case_files",
        "slice_neighbours",
        "slice_stack_to_volume",
        "validate_case",
        "validate_datalist",
        "volume_to_slice_stack",
    ],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "AntiAliasedResized",
    "AtomicNibabelWriter",
    "CheckCaseFilesd",
    "InvalidCaseError",
    "LiTSSliceDataset",
    "OpenForeground",
    "OpenForegroundd",
    "SpacingAntiAliasd",
    "SyntheticCase",
    "ValidateCased",
    "anti_aliasing_sigma",
    "case_id_from_path",
    "check_case_files",
    "find_cases",
    "generate_case",
    "generate_dataset",
    "lits_2d_augmentation",
    "lits_2d_preprocessing",
    "lits_3d_transforms",
    "lits_evaluation_transforms",
    "load_datalist",
    "open_foreground",
    "prepare_datalist",
    "save_datalist",
    "slice_neighbours",
    "slice_stack_to_volume",
    "split_cases",
    "validate_case",
    "validate_datalist",
    "volume_to_slice_stack",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
