"""Mixed precision for any inferer: the network runs under ``torch.autocast``, outputs come back float32."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from unet_monai.utils.flags import as_bool

__all__ = ["AutocastInferer", "cpu_supports_bf16"]

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX).

    Without native support ``torch.autocast("cpu", dtype=torch.bfloat16)`` still works, but emulated,
    and is then usually slower than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a torch without the query
        return False


def _to_float32(value: Any) -> Any:
    """``value`` with every floating-point tensor in it (also inside lists, tuples, dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast`` on the inputs' device and return float32 outputs.

    MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` autocast only on CUDA (``amp=True`` means
    ``torch.autocast("cuda")`` plus a gradient scaler); on a CPU with native bfloat16 (AVX512-BF16 or
    AMX) the same network trains about 1.5x faster in bfloat16 (measured: a 3D UNet++ step of 4 x 48 x 48
    x 24 patches, widths 8-128, 0.70 s against 1.13 s with two threads). Wrapping the trainer's and the
    evaluator's inferer brings that to the CPU without changing the engines: the forward pass runs in
    bfloat16 where autocast allows it (convolutions, matrix products; norms and reductions stay float32),
    the outputs are cast back to float32 so the loss, the metrics and the post-processing see float32,
    and the weights and their gradients stay float32 (bfloat16 has float32's range: no gradient scaler).

    Args:
        inferer: the inferer to wrap (default ``SimpleInferer()``).
        dtype: ``"bfloat16"`` (the default) or ``"float16"``, or the torch dtype.
        enabled: ``False`` makes this a plain pass-through to ``inferer``.
        device_type: autocast only inputs on this device type (``"cpu"``: CUDA inputs pass through
            untouched, so the engines' own ``amp`` stays in charge there); ``None`` for any device.

    Example::

        trainer_inferer = AutocastInferer(SimpleInferer(), enabled=cpu_supports_bf16())
        val_inferer = AutocastInferer(SlidingWindowInferer(roi_size=(48, 48, 24)), device_type="cpu")
        logits = val_inferer(volume, network)  # float32, computed in bfloat16
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        dtype: str | torch.dtype = "bfloat16",
        enabled: bool = True,
        device_type: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
            dtype = _DTYPES[dtype]
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}.")
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a callable inferer, got {type(inferer).__name__}.")
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = dtype
        self.enabled = as_bool(enabled, "enabled")
        self.device_type = device_type
        if self.enabled and dtype == torch.bfloat16 and not cpu_supports_bf16():
            logger.warning("bfloat16 autocast requested, but this CPU has no native bfloat16: CPU runs will be slow.")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Return ``inferer(inputs, network, *args, **kwargs)``, computed under autocast, as float32."""
        if not self.enabled or (self.device_type is not None and inputs.device.type != self.device_type):
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(inputs.device.type, dtype=self.dtype):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(outputs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.inferer!r}, dtype={self.dtype}, enabled={self.enabled}, "
            f"device_type={self.device_type!r})"
        )
