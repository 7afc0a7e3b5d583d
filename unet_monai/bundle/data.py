"""Datalists for the bundles: the user's LiTS / Task03 folder, or synthetic demo data made on first use."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from unet_monai.data.lits import find_cases, prepare_datalist
from unet_monai.data.synthetic import generate_dataset

__all__ = [
    "demo_dataset",
    "evaluation_cases",
    "find_images",
    "find_microscopy_images",
    "microscopy_datalist",
    "microscopy_demo_dataset",
    "training_datalist",
]

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd")


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (so DDP ranks generate the demo data once)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _not_given(folder: str | os.PathLike | None) -> bool:
    """A folder argument left unset: ``None``, or ``""`` / ``"None"`` as a bundle config or command line gives it."""
    return folder in (None, "", "None")


def _as_range(value: int | Sequence[int]) -> list[float]:
    """``160`` and ``(160, 160)`` alike as ``[160.0, 160.0]``, to compare generation arguments."""
    values = [value, value] if isinstance(value, (int, float)) else list(value)
    return [float(v) for v in values]


def _generated(folder: Path, wanted: dict[str, Any], generate: Callable[[], object], what: str) -> str:
    """Return ``folder``, calling ``generate()`` first unless ``folder/generation.json`` records ``wanted``.

    Runs under a file lock, so concurrent processes (DDP ranks) generate the data once.
    """
    record = folder / "generation.json"
    with _exclusive(folder / ".generate.lock"):
        if record.is_file():
            try:
                args = json.loads(record.read_text()).get("arguments", {})
            except json.JSONDecodeError:
                args = {}
            made = {k: _as_range(args[k]) if isinstance(wanted[k], list) else args[k] for k in wanted if k in args}
            if made == wanted:
                return str(folder)
        logger.info("generating %s in %s (first use)", what, folder)
        generate()
    return str(folder)


def demo_dataset(
    demo_dir: str | os.PathLike,
    num_cases: int = 20,
    seed: int = 0,
    size: int | Sequence[int] = (128, 192),
    slices: int | Sequence[int] = (48, 96),
) -> str:
    """Return ``demo_dir``, generating the synthetic LiTS-like demo dataset there first if needed.

    The dataset is (re)generated when ``demo_dir/generation.json`` is missing or was made with other
    arguments, under a file lock so that concurrent processes (DDP ranks) generate it once.
    """
    wanted = {"num_cases": int(num_cases), "seed": int(seed), "size": _as_range(size), "slices": _as_range(slices)}
    return _generated(
        Path(demo_dir),
        wanted,
        lambda: generate_dataset(demo_dir, num_cases=int(num_cases), seed=int(seed), size=size, slices=slices),
        f"{num_cases} synthetic LiTS-like cases",
    )


def microscopy_demo_dataset(demo_dir: str | os.PathLike, num_images: int = 20, seed: int = 0, size: int = 512) -> str:
    """Return ``demo_dir``, generating the synthetic darkfield microscopy demo dataset there first if needed."""
    from unet_monai.data.synthetic_microscopy import generate_dataset as generate_microscopy

    wanted = {"num_images": int(num_images), "seed": int(seed), "size": _as_range(size)}
    return _generated(
        Path(demo_dir),
        wanted,
        lambda: generate_microscopy(demo_dir, num_images=int(num_images), seed=int(seed), size=int(size)),
        f"{num_images} synthetic darkfield images",
    )


def training_datalist(
    dataset_dir: str | os.PathLike | None,
    demo_dir: str | os.PathLike,
    output_json: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    demo_cases: int = 20,
    demo_size: int | Sequence[int] = (128, 192),
    demo_slices: int | Sequence[int] = (48, 96),
) -> dict[str, list[dict[str, Any]]]:
    """The ``{"training": [...], "validation": [...]}`` datalist a bundle trains on.

    With ``dataset_dir`` empty or ``None`` the synthetic demo dataset in ``demo_dir`` is used (made on
    first use, see :func:`demo_dataset`); otherwise ``dataset_dir`` must hold a LiTS 2017 or MSD
    Task03_Liver layout. Cases are split by case id, deterministically for a ``seed`` (or as fold
    ``fold`` of ``num_folds``), and the split is saved to ``output_json`` so a run can be reproduced.
    """
    if _not_given(dataset_dir):
        dataset_dir = demo_dataset(demo_dir, num_cases=demo_cases, seed=seed, size=demo_size, slices=demo_slices)
    return prepare_datalist(
        dataset_dir, output_json, val_fraction=val_fraction, seed=seed, fold=fold, num_folds=num_folds
    )


def evaluation_cases(
    datalist: dict[str, list[dict[str, Any]]],
    test_dir: str | os.PathLike | None = None,
    layout: str = "lits",
) -> list[dict[str, Any]]:
    """The cases ``evaluate.json`` scores: every labelled case of ``test_dir``, or else the validation split.

    The validation split also chose the best epoch during training, so its figures lean optimistic (and
    with a handful of cases they are noisy); a folder of held-out cases the run never saw gives an unbiased
    estimate. ``--test_dir`` in the bundles' ``evaluate.json`` points here.

    Args:
        datalist: the training datalist (``{"training": [...], "validation": [...]}``).
        test_dir: a folder of labelled cases; empty or ``None`` for the validation split.
        layout: how ``test_dir`` is laid out: ``"lits"`` (a LiTS 2017 or MSD Task03_Liver folder,
            :func:`~unet_monai.data.lits.find_cases`) or ``"microscopy"`` (``images/`` + ``masks/``,
            :func:`~unet_monai.data.microscopy.find_image_pairs`).

    Returns:
        the records to evaluate, ``{"image", "label", ...}`` each.

    Raises:
        FileNotFoundError, ValueError: ``test_dir`` does not exist, holds no case, or an image has no label
            (from the layout's finder, with the folder or file named, prefixed ``test_dir:``); an unknown
            ``layout``. Training cases in ``test_dir`` only log a warning that names them.

    Example::

        python -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json']" \
            --test_dir /data/lits_test
        evaluation_cases(datalist, "/data/darkfield_test", layout="microscopy")
    """
    finders: dict[str, Callable[[str | os.PathLike], list[dict[str, Any]]]] = {
        "lits": lambda folder: find_cases(folder, require_labels=True),
        "microscopy": _microscopy_pairs,
    }
    if layout not in finders:
        raise ValueError(f"layout must be one of {sorted(finders)}, got {layout!r}.")
    if _not_given(test_dir):
        return list(datalist["validation"])
    try:
        cases = finders[layout](test_dir)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"test_dir: {err}") from err
    trained_on = {os.path.realpath(case["image"]) for case in datalist.get("training", [])}
    seen = [case.get("case", case["image"]) for case in cases if os.path.realpath(case["image"]) in trained_on]
    if seen:
        logger.warning(
            "test_dir %s holds %d of the training cases (%s): their figures are not held-out.",
            test_dir, len(seen), ", ".join(seen[:5]) + (" ..." if len(seen) > 5 else ""),
        )  # fmt: skip
    return cases


def _microscopy_pairs(folder: str | os.PathLike) -> list[dict[str, Any]]:
    from unet_monai.data.microscopy import find_image_pairs

    return find_image_pairs(folder, require_masks=True)


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for inference: a folder of images, one file, or a list of files.

    A folder laid out as a LiTS or MSD dataset gives its images only (not its segmentations); any other
    folder gives every .nii, .nii.gz, .nrrd, .mha and .mhd file in it.

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no image (.nii, .nii.gz, .nrrd, .mha).
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:  # a LiTS / MSD dataset folder: its images, not its labels
                files = [case["image"] for case in find_cases(path, require_labels=False)]
            except (ValueError, FileNotFoundError):
                files = sorted({f for pattern in _IMAGE_PATTERNS for f in glob.glob(str(path / pattern))})
                files = [f for f in files if not Path(f).name.startswith(".")]
            if not files:
                raise FileNotFoundError(f"no images (.nii, .nii.gz, .nrrd, .mha) in the folder {path}.")
            found += files
        elif path.is_file():
            found.append(str(path))
        else:
            raise FileNotFoundError(f"input {path} does not exist.")
    return [{"image": os.path.abspath(f)} for f in found]


def find_microscopy_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for microscopy inference: a folder of images (or a dataset folder with an
    ``images/`` sub-folder), one image file, or a list of them.

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no image (.png, .jpg, .tif, .bmp).
    """
    from unet_monai.data.microscopy import IMAGE_SUFFIXES, list_images

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            folder = path / "images" if (path / "images").is_dir() else path
            files = list_images(folder)
            if not files:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {folder}.")
            found += files
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist.")
    return [{"image": str(f.resolve())} for f in found]


def microscopy_datalist(
    dataset_dir: str | os.PathLike | None,
    demo_dir: str | os.PathLike,
    output_json: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    demo_images: int = 20,
    demo_size: int = 512,
) -> dict[str, list[dict[str, Any]]]:
    """The microscopy bundle's datalist: ``dataset_dir`` (``images/`` + ``masks/``), or the synthetic demo images.

    See :func:`unet_monai.data.microscopy.prepare_microscopy_datalist` for the layout; without
    ``dataset_dir`` the synthetic darkfield images in ``demo_dir`` are used (made on first use).
    """
    from unet_monai.data.microscopy import prepare_microscopy_datalist

    if _not_given(dataset_dir):
        dataset_dir = microscopy_demo_dataset(demo_dir, num_images=demo_images, seed=seed, size=demo_size)
    return prepare_microscopy_datalist(
        dataset_dir, output_json, val_fraction=val_fraction, seed=seed, fold=fold, num_folds=num_folds
    )
