"""Atomic, checked export of a bundle's trained network to TorchScript or ONNX.

MONAI's ``python -m monai.bundle ckpt_export`` / ``onnx_export`` write straight to ``--filepath``: a
run killed during the write (or one that fails half-way, e.g. a full disk) leaves a truncated
``model.ts`` in place of the previous good one. :func:`export_bundle` calls the same MONAI functions
(so the file is exactly what they write: metadata and configs embedded) on a temporary file beside
the destination, checks the result, and only then renames it over the destination.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unet_monai.utils.io import atomic_path
from unet_monai.utils.serialization import load_state_dict

__all__ = ["EXPORT_FORMATS", "export_bundle"]

logger = logging.getLogger(__name__)

#: Export format -> default file name under ``<bundle>/models``.
EXPORT_FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}

#: Largest spatial size per dimension of the input used to check (and, for ONNX, trace) the network:
#: the networks take any size, and the metadata's full size (e.g. 96^3) is slow on CPU at paper widths.
_CHECK_SIZE = 64


def _bundle_files(bundle: Path) -> tuple[Path, Path]:
    config, meta = bundle / "configs" / "inference.json", bundle / "configs" / "metadata.json"
    for path in (config, meta):
        if not path.is_file():
            raise FileNotFoundError(f"bundle {bundle}: {path.relative_to(bundle)} not found (is this a MONAI bundle?).")
    return config, meta


def _example_shape(meta: Path, input_shape: Sequence[int] | None) -> list[int]:
    """``input_shape``, or (1, channels, spatial...) from the metadata with each size capped at 64."""
    if input_shape is not None:
        return [int(s) for s in input_shape]
    image = json.loads(meta.read_text())["network_data_format"]["inputs"]["image"]
    return [1, int(image["num_channels"]), *(min(int(s), _CHECK_SIZE) for s in image["spatial_shape"])]


def _eager_network(config: Path, bundle: Path, ckpt: Path, overrides: Mapping[str, Any]) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle)
    for key, value in overrides.items():
        parser[key] = value
    network = parser.get_parsed_content("network_def")
    return load_state_dict(network, ckpt).eval()


def export_bundle(
    bundle: str | os.PathLike,
    fmt: str = "torchscript",
    filepath: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export ``bundle``'s trained network with MONAI's exporter, atomically, and check the result.

    Args:
        bundle: the bundle folder (``configs/inference.json``, ``configs/metadata.json``).
        fmt: ``"torchscript"`` (``monai.bundle.ckpt_export``, scripted) or ``"onnx"``
            (``monai.bundle.onnx_export``, traced at ``input_shape``; needs the ``onnx`` package).
        filepath: the output file (default ``<bundle>/models/model.ts`` / ``model.onnx``).
        ckpt_file: the weights (default ``<bundle>/models/model.pt``); read with ``weights_only=True``
            before MONAI reads them, so a checkpoint holding code is refused.
        overrides: config values to apply, e.g. ``{"features": [8, 16, 32, 64, 128]}`` for a model
            trained with ``configs/demo.json``.
        input_shape: the example input ``(1, C, *spatial)``; default from the metadata, each spatial
            size capped at 64.
        check: TorchScript: run the exported and the eager network on a random input of
            ``input_shape`` and require ``max |difference| <= atol`` before the file replaces the
            destination. ONNX: the ``onnx`` checker validates the graph.
        atol: tolerance of the TorchScript check.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: the bundle's configs or the weights are missing.
        ValueError: an unknown ``fmt``; the weights do not fit the network; the check failed (the
            destination is left as it was).
        unet_monai.utils.serialization.UnsafeCheckpointError: the weights file would run code.

    Example::

        export_bundle("bundles/liver_ct_unet3plus_2d_segmentation", overrides={"features": [8, 16, 32, 64, 128]})
    """
    from monai.bundle import ckpt_export, onnx_export

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(EXPORT_FORMATS)}, got {fmt!r}.")
    root = Path(bundle).resolve()
    config, meta = _bundle_files(root)
    ckpt = Path(ckpt_file) if ckpt_file is not None else root / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"bundle {root}: weights {ckpt} not found (train the bundle first).")
    dest = Path(filepath) if filepath is not None else root / "models" / EXPORT_FORMATS[fmt]
    overrides = dict(overrides or {})
    shape = _example_shape(meta, input_shape)
    eager = _eager_network(config, root, ckpt, overrides)  # also refuses unsafe or mismatched weights

    common = {
        "net_id": "network_def",
        "ckpt_file": str(ckpt),
        "meta_file": str(meta),
        "config_file": str(config),
        "bundle_root": str(root),
        **overrides,
    }
    with atomic_path(dest) as tmp:
        if fmt == "torchscript":
            ckpt_export(filepath=str(tmp), **common)
            if check:
                exported = torch.jit.load(str(tmp), map_location="cpu").eval()
                x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    diff = (exported(x) - eager(x)).abs().max().item()
                if not diff <= atol:
                    raise ValueError(f"exported {dest.name} differs from the eager network by {diff:.3g} > {atol}.")
                logger.info("checked %s against the eager network: max |difference| %.2g", dest.name, diff)
        else:
            onnx_export(filepath=str(tmp), input_shape=shape, use_trace=True, **common)
            if check:
                import onnx

                onnx.checker.check_model(str(tmp))
    logger.info("exported %s (%s) to %s", root.name, fmt, dest)
    return dest
