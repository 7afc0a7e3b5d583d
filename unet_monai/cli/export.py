"""``unet-monai export``: a bundle's trained network as TorchScript or ONNX, written atomically and checked.

The file is what ``python -m monai.bundle ckpt_export`` / ``onnx_export`` write (metadata and the
inference config embedded), but it goes to a temporary file first: TorchScript is reloaded and compared
with the eager network on a random input, ONNX is validated by the ``onnx`` checker, and only then is
the file renamed over the destination. An interrupted or failed export leaves the previous file as it
was. Weights are read with ``weights_only=True``. A model trained with ``configs/demo.json`` needs the
same widths: ``--override features=[8,16,32,64,128]``.
"""

from __future__ import annotations

import argparse
import logging
import pickle
from typing import Any

from unet_monai.cli._help import epilog
from unet_monai.cli.bundle import parse_overrides

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``export``."""
    p = subparsers.add_parser(
        "export",
        parents=parents,
        help="export a bundle's trained network to TorchScript or ONNX (atomic, checked against the eager network)",
        description="Export models/model.pt of a bundle with MONAI's exporter, atomically, after a check.",
        epilog=epilog(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, metavar="PATH", help="the bundle folder")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="default: torchscript")
    p.add_argument("-o", "--out", metavar="FILE", default=None, help="default: <bundle>/models/model.ts or model.onnx")
    p.add_argument("--ckpt", metavar="FILE", default=None, help="weights (default: <bundle>/models/model.pt)")
    p.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        metavar="N",
        default=None,
        help="example input 1 C spatial... (default: the metadata's, each size capped at 64)",
    )
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="config override (JSON value), repeatable"
    )
    p.add_argument("--no-check", action="store_true", help="skip the check of the exported file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``export`` from parsed arguments; returns the exit status."""
    from unet_monai.bundle.export import export_bundle

    try:
        dest = export_bundle(
            args.bundle,
            fmt=args.format,
            filepath=args.out,
            ckpt_file=args.ckpt,
            overrides=parse_overrides(args.override),
            input_shape=args.input_shape,
            check=not args.no_check,
        )
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        logger.error("%s", " ".join(str(e).split()))
        return 1
    logger.info("wrote %s", dest)
    return 0
