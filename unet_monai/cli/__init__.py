"""The ``unet-monai`` command line: ``predict``, ``evaluate``, ``synth``, ``report`` and ``export``.

Console entry point ``unet-monai = unet_monai.cli:main`` (also ``python -m unet_monai``):

- ``unet-monai predict --bundle PATH -i INPUT -o OUTDIR``: label NIfTI files from a trained bundle
  (:mod:`unet_monai.cli.predict`);
- ``unet-monai evaluate --pred DIR --label DIR``: LiTS metrics per case, CSV and summary table
  (:mod:`unet_monai.cli.evaluate`);
- ``unet-monai synth --out DIR --cases N --seed S``: synthetic LiTS-like data
  (:mod:`unet_monai.cli.synth`);
- ``unet-monai report RUN_DIR``: an HTML/PNG summary of a training run (:mod:`unet_monai.cli.report`);
- ``unet-monai export --bundle PATH [--format torchscript|onnx]``: the trained network exported
  atomically and checked (:mod:`unet_monai.cli.export`).

Messages go to stderr: progress bars, ``info`` lines, and one ``error: PATH: PROBLEM`` line per failed
input. Tables go to stdout. Exit status: 0 success, 1 a failure (any input, or a fatal error), 2 a
command-line usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

from unet_monai import __version__
from unet_monai.cli import evaluate, export, predict, report, synth

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


class _Formatter(logging.Formatter):
    """``message`` for info, ``error: message`` / ``warning: message`` otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def _logging(verbose: bool, quiet: bool) -> Iterator[None]:
    """Log ``unet_monai`` messages to the current stderr for the duration of one command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    package, cli = logging.getLogger("unet_monai"), logging.getLogger("unet_monai.cli")
    saved = (package.level, package.propagate, cli.level)
    package.addHandler(handler)
    package.propagate = False
    package.setLevel(logging.DEBUG if verbose else logging.WARNING)
    cli.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        cli.setLevel(saved[2])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``unet-monai`` with its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")
    group.add_argument("-v", "--verbose", action="store_true", help="debug messages and tracebacks")
    parser = argparse.ArgumentParser(
        prog="unet-monai",
        description="UNet++ / UNet 3+ liver and tumour segmentation with MONAI bundles: predict, evaluate, "
        "synthetic data, training reports.",
        epilog="Run 'unet-monai COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    predict.add_parser(sub, [common])
    evaluate.add_parser(sub, [common])
    synth.add_parser(sub, [common])
    report.add_parser(sub, [common])
    export.add_parser(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unet-monai`` with ``argv`` (default: the process arguments); returns the exit status.

    Example::

        from unet_monai.cli import main
        status = main(["evaluate", "--pred", "out/", "--label", "labels/"])
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["synth"]:  # the generator's own command line, options passed through unchanged
        return synth.run_argv(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help, --version (0) or a usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    with _logging(args.verbose, args.quiet):
        try:
            return int(args.func(args))
        except KeyboardInterrupt:
            logger.error("interrupted")
            return 130
