"""Where is the bundle? Resolving ``bundle_root`` so a bundle writes into its own folder from any cwd.

The model zoo's ``"bundle_root": "."`` silently writes checkpoints into the current directory when a
bundle is run from elsewhere. The bundles of this project set
``"bundle_root": "$unet_monai.bundle.resolve_bundle_root()"`` instead, which finds the folder of the
config file actually being run.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bundle_root_of", "resolve_bundle_root"]

logger = logging.getLogger(__name__)

_PATH_FLAGS = ("--config_file", "--meta_file")


def bundle_root_of(config_path: str | os.PathLike) -> Path:
    """The bundle folder holding ``config_path``: the parent of its ``configs`` folder, else its own folder."""
    folder = Path(config_path).resolve().parent
    return folder.parent if folder.name == "configs" else folder


def _first_path(value: object) -> str | None:
    """The first path of a ``--config_file`` value: a path, a list of paths, or a string holding a list."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return None
            return _first_path(parsed)
        return text or None
    return None


def _from_workflow_stack() -> Path | None:
    """The ``config_root_path`` of a MONAI ``ConfigWorkflow`` that is evaluating this expression, if any."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            # vars(), not getattr(): ConfigWorkflow.__getattr__ looks names up in the config itself
            root = vars(owner).get("config_root_path") if hasattr(owner, "__dict__") else None
            if root is not None and type(owner).__module__.startswith("monai.bundle"):
                folder = Path(root).resolve()
                return folder.parent if folder.name == "configs" else folder
            frame = frame.f_back
    finally:
        del frame
    return None


def _from_argv(argv: Sequence[str]) -> Path | None:
    """The bundle of the first ``--config_file`` (or ``--meta_file``) on a ``python -m monai.bundle`` command line."""
    for flag in _PATH_FLAGS:
        for i, arg in enumerate(argv):
            value: str | None = None
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg[len(flag) + 1 :]
            path = _first_path(value) if value is not None else None
            if path:
                return bundle_root_of(path)
    return None


def resolve_bundle_root(fallback: str | os.PathLike | None = None) -> str:
    """Return the absolute path of the bundle being run.

    Looked up, in order: the ``ConfigWorkflow`` evaluating the config (``monai.bundle run`` and the
    Python API), the ``--config_file`` / ``--meta_file`` of the command line (``ckpt_export``,
    ``verify_net_in_out``, torchrun), the current directory if it holds ``configs/metadata.json``, then
    ``fallback``. ``--bundle_root`` on the command line overrides all of this, as for any config id.

    Raises:
        ValueError: none of the above identifies a bundle folder.
    """
    root = _from_workflow_stack() or _from_argv(sys.argv)
    if root is None and (Path.cwd() / "configs" / "metadata.json").is_file():
        root = Path.cwd()
    if root is None and fallback is not None:
        root = Path(fallback).resolve()
    if root is None:
        raise ValueError(
            "cannot tell which bundle is being run: no --config_file on the command line and the current "
            f"directory {Path.cwd()} holds no configs/metadata.json; pass --bundle_root <bundle folder>."
        )
    logger.debug("bundle_root resolved to %s", root)
    return str(root)
