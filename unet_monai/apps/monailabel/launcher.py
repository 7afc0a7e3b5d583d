"""Prepare a MONAI Label app folder for the project's bundles and start ``monailabel start_server`` on it.

::

    python -m unet_monai.apps.monailabel start --studies DIR [--host 127.0.0.1] [--port 8000]
        [--bundles NAME_OR_PATH ...] [--app-dir DIR] [--copy] [--dry-run] [-- START_SERVER_ARGS ...]

The app folder (default ``$XDG_CACHE_HOME/unet_monai/monailabel_app``, else
``~/.cache/unet_monai/monailabel_app``) receives

- ``main.py``: one import of :class:`~unet_monai.apps.monailabel.app.main.LiverSegmentationApp`, so the
  code stays in the installed package;
- ``model/<bundle name>``: a symbolic link to each bundle (default), or with ``--copy`` a copy of it.

With links, training from MONAI Label writes ``models/model.pt`` (and ``checkpoint.pt``, and the
``eval/`` logs) into the project's own bundle folder, so ``monai.bundle run``, ``evaluate.json`` and
``ckpt_export`` use the weights trained from the client. With ``--copy`` the project's bundles are left
alone and training writes into ``<app>/model/<bundle name>/models/model.pt``; an existing copy is
kept on the next start, with its trained weights.

MONAI Label is looked for in the running interpreter, then in ``$UNET_MONAI_MONAILABEL_VENV``, then
in ``<repo>/.venv-monailabel`` (made by ``scripts/install_monailabel.sh``), so the command works from
the project's own environment too. The server binds to 127.0.0.1 unless
``--host`` says otherwise, and needs no network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "VENV_ENV",
    "available_bundles",
    "default_app_dir",
    "find_monailabel_python",
    "main",
    "prepare_app_dir",
    "project_bundles_dir",
    "server_command",
]

#: environment variable naming the MONAI Label virtual environment
VENV_ENV = "UNET_MONAI_MONAILABEL_VENV"
#: environment variable naming a folder of bundles to serve instead of the project's ``bundles/``
BUNDLES_ENV = "UNET_MONAI_BUNDLES_DIR"

_REPO = Path(__file__).resolve().parents[3]
_APP_MAIN = '''"""Written by `python -m unet_monai.apps.monailabel start`: the MONAI Label app is in unet_monai."""

from unet_monai.apps.monailabel.app.main import LiverSegmentationApp

__all__ = ["LiverSegmentationApp"]
'''
# what a copied bundle leaves behind: generated data, logs and outputs
_COPY_IGNORE = shutil.ignore_patterns("data", "eval", "runs", "predictions", "__pycache__")


def project_bundles_dir() -> Path:
    """The folder of bundles to serve: ``$UNET_MONAI_BUNDLES_DIR``, else the repository's ``bundles/``."""
    return Path(os.environ.get(BUNDLES_ENV) or _REPO / "bundles")


def _serves_volumes(bundle: Path) -> bool:
    """Whether a bundle takes NIfTI volumes (``"data_type": "nibabel"`` in its metadata), as the studies are."""
    try:
        return json.loads((bundle / "configs" / "metadata.json").read_text()).get("data_type") == "nibabel"
    except (OSError, json.JSONDecodeError):
        return False


def available_bundles(bundles_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{name: folder}`` of the bundles in ``bundles_dir`` that segment NIfTI volumes.

    Bundles are the folders with ``configs/metadata.json``; those of other data (the darkfield microscopy
    bundle reads PNG images) are left out, since the app's datastore holds 3D NIfTI studies.
    """
    folder = Path(bundles_dir) if bundles_dir is not None else project_bundles_dir()
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if _serves_volumes(p)}


def default_app_dir() -> Path:
    """``$XDG_CACHE_HOME/unet_monai/monailabel_app``, else ``~/.cache/unet_monai/monailabel_app``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "unet_monai" / "monailabel_app"


def _resolve_bundles(requested: Sequence[str] | None) -> dict[str, Path]:
    """Bundle names (from :func:`project_bundles_dir`) or bundle folders, as ``{name: folder}``."""
    known = available_bundles()
    if not requested:
        if not known:
            raise ValueError(f"no bundle found in {project_bundles_dir()}; name bundle folders with --bundles.")
        return known
    chosen: dict[str, Path] = {}
    for item in requested:
        path = Path(item)
        if item in known:
            path = known[item]
        elif not (path / "configs" / "metadata.json").is_file():
            raise ValueError(
                f"{item!r} is neither a bundle of {project_bundles_dir()} ({', '.join(known) or 'none'}) nor a "
                "bundle folder (with configs/metadata.json)."
            )
        path = path.resolve()
        if path.name in chosen and chosen[path.name] != path:
            raise ValueError(f"two bundles named {path.name!r}: {chosen[path.name]} and {path}.")
        chosen[path.name] = path
    return chosen


def prepare_app_dir(app_dir: str | os.PathLike, bundles: Mapping[str, str | os.PathLike], copy: bool = False) -> Path:
    """Write the app folder MONAI Label starts from: ``main.py`` and one ``model/<name>`` entry per bundle.

    Args:
        app_dir: the app folder (created if needed).
        bundles: ``{name: bundle folder}``; ``name`` is the model name the server shows.
        copy: copy the bundles (without ``data``, ``eval``, ``runs``, ``predictions``) instead of linking
            to them; an existing copy is kept as it is, with the weights trained in it.

    Returns:
        the app folder, absolute.

    Raises:
        FileExistsError: ``model/<name>`` is a real folder (an earlier ``--copy``) where a link is asked
            for, or a file.
    """
    app = Path(app_dir).absolute()
    models = app / "model"
    models.mkdir(parents=True, exist_ok=True)
    main_py = app / "main.py"
    if not main_py.is_file() or main_py.read_text() != _APP_MAIN:
        main_py.write_text(_APP_MAIN)
    for name, source in bundles.items():
        source = Path(source).resolve()
        entry = models / name
        if copy:
            if entry.is_symlink():
                entry.unlink()
            if not entry.exists():
                shutil.copytree(source, entry, ignore=_COPY_IGNORE)
            continue
        if entry.is_symlink():
            if entry.resolve() == source:
                continue
            entry.unlink()
        elif entry.exists():
            raise FileExistsError(
                f"{entry} is a copy of a bundle (from an earlier --copy), not a link to {source}: start with --copy "
                "to keep serving it, or remove it to serve the project's bundle."
            )
        entry.symlink_to(source, target_is_directory=True)
    return app


def find_monailabel_python() -> Path:
    """The Python interpreter that runs MONAI Label: this one if it has ``monailabel``, else that of
    ``$UNET_MONAI_MONAILABEL_VENV``, else that of ``<repo>/.venv-monailabel``.

    (MONAI Label's ``monailabel`` command is a shell script running whichever ``python`` is first on
    ``PATH``; the server is started as ``<python> -m monailabel.main`` instead, which needs no activated
    environment.)

    Raises:
        FileNotFoundError: none of them has MONAI Label; the message says how to install it.
    """
    if importlib.util.find_spec("monailabel") is not None:
        return Path(sys.executable)
    venvs = [Path(os.environ[VENV_ENV])] if os.environ.get(VENV_ENV) else []
    for venv in [*venvs, _REPO / ".venv-monailabel"]:
        if (venv / "bin" / "monailabel").is_file() and os.access(venv / "bin" / "python", os.X_OK):
            return venv / "bin" / "python"
    raise FileNotFoundError(
        "MONAI Label is not installed: run `bash scripts/install_monailabel.sh` (it makes .venv-monailabel in the "
        f"repository), or set {VENV_ENV} to a virtual environment that has monailabel and unet_monai."
    )


def server_command(
    python: str | os.PathLike,
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    models: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``monailabel start_server`` command line (run by ``python``) serving ``models`` from ``app_dir``."""
    return [
        str(python), "-m", "monailabel.main", "start_server",
        "--app", str(app_dir),
        "--studies", str(studies),
        "--host", host,
        "--port", str(port),
        "--conf", "models", ",".join(models),
        *extra,
    ]  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unet_monai.apps.monailabel",
        description="Serve the project's LiTS bundles with MONAI Label (inference and training).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser(
        "start",
        help="prepare the app folder and start the MONAI Label server",
        description="Prepare the app folder and run `monailabel start_server` on it. Arguments after `--` go to "
        "start_server as they are.",
    )
    start.add_argument("--studies", required=True, type=Path, help="folder of NIfTI studies (the datastore)")
    start.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    start.add_argument("--port", default=8000, type=int, help="port (default: %(default)s)")
    start.add_argument(
        "--bundles",
        nargs="+",
        metavar="NAME_OR_PATH",
        help=f"bundles to serve: names in {project_bundles_dir()} or bundle folders (default: all of that folder)",
    )
    start.add_argument(
        "--app-dir", type=Path, default=default_app_dir(), help="app folder to prepare (default: %(default)s)"
    )
    start.add_argument(
        "--copy",
        action="store_true",
        help="serve copies of the bundles in the app folder (training then leaves the project's bundles alone)",
    )
    start.add_argument("--dry-run", action="store_true", help="prepare the app folder, print the command, stop")
    start.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns an exit status (``start`` replaces this process with the server)."""
    args = _parser().parse_args(argv)
    extra = list(args.extra)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    try:
        if not args.studies.is_dir():
            raise FileNotFoundError(f"the studies folder {args.studies} does not exist.")
        bundles = _resolve_bundles(args.bundles)
        app = prepare_app_dir(args.app_dir, bundles, copy=args.copy)
        python = find_monailabel_python()
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cmd = server_command(python, app, args.studies.resolve(), list(bundles), args.host, args.port, extra)
    print(f"app folder: {app}")
    for name in bundles:
        served = (app / "model" / name).resolve()
        print(f"  model {name}: {served} (training writes {served / 'models' / 'model.pt'})")
    print(f"server: http://{args.host}:{args.port} (3D Slicer: MONAI Label module, server address of this URL)")
    print("command: " + " ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    os.execv(cmd[0], cmd)  # the server takes this process over: signals reach it directly
    return 0  # pragma: no cover - execv does not return
