"""``unet-monai synth``: the synthetic LiTS-like data generator of :mod:`unet_monai.data.synthetic`.

The arguments are passed unchanged to ``unet_monai.data.synthetic.main``, so the options are exactly
the generator's (``--out DIR --cases N --seed S --size LOW HIGH --slices LOW HIGH --spacing-xy
--thickness --orientations --layout lits|msd --ext --max-tumours``); ``unet-monai synth --help``
lists them. An output folder that cannot be written gives one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["add_parser", "run", "run_argv"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``synth`` (for the command list; :func:`unet_monai.cli.main` passes its arguments through)."""
    p = subparsers.add_parser(
        "synth",
        add_help=False,
        help="generate synthetic LiTS-like CT volumes and labels (same options as python -m unet_monai.data.synthetic)",
        description="Synthetic LiTS-like CT volumes and labels (python -m unet_monai.data.synthetic).",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run, quiet=False, verbose=False)
    return p


def run_argv(argv: Sequence[str]) -> int:
    """Run the generator's command line with ``argv``; errors become one ``error:`` line and status 1."""
    from unet_monai.data.synthetic import main as synthetic_main

    from . import _logging

    with _logging(verbose="-v" in argv or "--verbose" in argv, quiet=False):
        argv = [a for a in argv if a not in ("-v", "--verbose", "-q", "--quiet")]
        try:
            return int(synthetic_main(list(argv)) or 0)
        except SystemExit as e:  # --help (0) or a usage error (2)
            return int(e.code or 0) if not isinstance(e.code, str) else 2
        except (OSError, ValueError) as e:
            path = getattr(e, "filename", None)
            text = " ".join(str(e).split()) if path is None else (e.strerror or str(e))
            logger.error("%s%s", f"{path}: " if path else "", text)
            return 1


def run(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments (used when the command is not first on the command line)."""
    return run_argv(args.args)
