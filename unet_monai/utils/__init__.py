"""Small utilities shared across the package."""

from .flags import as_bool
from .io import atomic_path, full_suffix, remove_stale_temporaries, save_json_atomic, save_torch_atomic
from .serialization import UnsafeCheckpointError, load_checkpoint, load_state_dict, unwrap_model

__all__ = [
    "UnsafeCheckpointError",
    "as_bool",
    "atomic_path",
    "full_suffix",
    "load_checkpoint",
    "load_state_dict",
    "remove_stale_temporaries",
    "save_json_atomic",
    "save_torch_atomic",
    "unwrap_model",
]
