"""LiTS / MSD Task03_Liver dataset discovery, deterministic case splits and datalist JSON files.

Two layouts are recognised:

- **LiTS 2017**: ``volume-N.nii[.gz]`` with ``segmentation-N.nii[.gz]``, in one folder or spread over
  sub-folders (the challenge download comes as "Training Batch 1" and "Training Batch 2"). Case ids
  are ``"volume-N"``.
- **Medical Segmentation Decathlon** (Task03_Liver): a ``dataset.json`` listing ``imagesTr/liver_N``
  and ``labelsTr/liver_N``; without ``dataset.json``, files of the same name in ``imagesTr`` and
  ``labelsTr`` are paired. Case ids are ``"liver_N"``.

Hidden files (such as the ``._liver_0.nii.gz`` AppleDouble files inside the Decathlon archive) are
ignored. Every record is ``{"image": path, "label": path, "case": id}`` with absolute paths, the
datalist format of MONAI (``monai.data.load_decathlon_datalist`` reads the JSON written here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unet_monai.utils.io import save_json_atomic

__all__ = [
    "case_id_from_path",
    "find_cases",
    "load_datalist",
    "prepare_datalist",
    "save_datalist",
    "split_and_save",
    "split_cases",
]

logger = logging.getLogger(__name__)

_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_LITS_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_EXPECTED = (
    "expected either the LiTS layout (volume-N.nii[.gz] with segmentation-N.nii[.gz]) or the MSD layout "
    "(dataset.json with imagesTr/ and labelsTr/)"
)


def case_id_from_path(path: str | os.PathLike) -> str:
    """The case id a file name implies: ``".../volume-3.nii.gz"`` -> ``"volume-3"``, ``"liver_7.nii"`` -> ``"liver_7"``.

    Known image extensions (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) are removed
    whole; any other name loses its last suffix.
    """
    name = Path(path).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _listing(folder: Path, limit: int = 12) -> str:
    """A short description of a folder's content for error messages."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        return f"(cannot list: {e})"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    if not names:
        return "nothing (the folder is empty)"
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _walk_visible(root: Path) -> list[Path]:
    """All non-hidden files below ``root`` (hidden folders are skipped), sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(found)


def _find_lits(root: Path, require_labels: bool) -> list[dict[str, str]]:
    volumes: dict[int, list[Path]] = {}
    segmentations: dict[int, list[Path]] = {}
    for f in _walk_visible(root):
        if m := _LITS_VOLUME.match(f.name):
            volumes.setdefault(int(m.group(1)), []).append(f)
        elif m := _LITS_SEGMENTATION.match(f.name):
            segmentations.setdefault(int(m.group(1)), []).append(f)
    duplicates = {n: p for d in (volumes, segmentations) for n, p in d.items() if len(p) > 1}
    if duplicates:
        text = "; ".join(f"case {n}: {', '.join(str(x) for x in p)}" for n, p in sorted(duplicates.items()))
        raise ValueError(f"LiTS dataset {root} holds more than one file for the same case: {text}.")
    missing = sorted(set(volumes) - set(segmentations))
    if missing and require_labels:
        names = ", ".join(f"volume-{n}" for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"LiTS dataset {root}: {len(missing)} volume(s) have no segmentation-N file: {names}. "
            "Pass require_labels=False to list images only (inference)."
        )
    orphans = sorted(set(segmentations) - set(volumes))
    if orphans:
        logger.warning("LiTS dataset %s: segmentations without a volume are ignored: %s", root, orphans[:10])
    records = []
    for n in sorted(volumes):
        record = {"image": str(volumes[n][0].resolve())}
        if n in segmentations:
            record["label"] = str(segmentations[n][0].resolve())
        record["case"] = f"volume-{n}"
        records.append(record)
    return records


def _natural_key(text: str) -> tuple:
    """Sort key putting ``volume-2`` before ``volume-10``; comparable for any two strings."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def _find_msd(root: Path, require_labels: bool, section: str) -> list[dict[str, str]]:
    meta = root / "dataset.json"
    records: list[dict[str, str]] = []
    if meta.is_file():
        try:
            content = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"MSD dataset {root}: cannot read {meta}: {e}") from e
        if not isinstance(content, dict) or section not in content:
            keys = list(content) if isinstance(content, dict) else type(content).__name__
            raise ValueError(f"MSD dataset {root}: {meta} has no {section!r} list (keys: {keys}).")
        for item in content[section]:
            entry = item if isinstance(item, dict) else {"image": item}
            record = {"image": str((root / entry["image"]).resolve())}
            if entry.get("label"):
                record["label"] = str((root / entry["label"]).resolve())
            record["case"] = case_id_from_path(record["image"])
            records.append(record)
    else:
        images_dir, labels_dir = root / ("imagesTr" if section == "training" else "imagesTs"), root / "labelsTr"
        if not images_dir.is_dir():
            raise ValueError(f"MSD dataset {root} has neither dataset.json nor {images_dir.name}/; {_EXPECTED}.")
        for f in _walk_visible(images_dir):
            if not f.name.lower().endswith(_IMAGE_SUFFIXES) or f.parent != images_dir:
                continue
            record = {"image": str(f.resolve())}
            if section == "training" and (labels_dir / f.name).is_file():
                record["label"] = str((labels_dir / f.name).resolve())
            record["case"] = case_id_from_path(f)
            records.append(record)
        records.sort(key=lambda r: _natural_key(r["case"]))
    missing_files = [p for r in records for k in ("image", "label") if (p := r.get(k)) and not Path(p).is_file()]
    if missing_files:
        more = f" ... and {len(missing_files) - 5} more" if len(missing_files) > 5 else ""
        raise FileNotFoundError(f"MSD dataset {root} lists missing files: {', '.join(missing_files[:5])}{more}.")
    unlabelled = [r["case"] for r in records if "label" not in r]
    if require_labels and section == "training" and unlabelled:
        raise ValueError(f"MSD dataset {root}: no label for {len(unlabelled)} case(s): {', '.join(unlabelled[:10])}.")
    return records


def find_cases(
    dataset_dir: str | os.PathLike,
    layout: str = "auto",
    require_labels: bool = True,
    section: str = "training",
) -> list[dict[str, str]]:
    """Find the cases of a LiTS or MSD Task03_Liver dataset folder and return a MONAI datalist.

    With ``layout="auto"`` a folder holding ``dataset.json`` or ``imagesTr/`` is read as MSD, one
    holding ``volume-N`` files (at any depth) as LiTS, and a folder with exactly one sub-folder that
    is an MSD dataset (``.../Task03_Liver``) as that sub-folder.

    Args:
        dataset_dir: the dataset folder.
        layout: ``"auto"``, ``"lits"`` or ``"msd"``.
        require_labels: raise when an image has no label (training); ``False`` lists image-only
            records too (inference on unlabelled volumes).
        section: for MSD, the ``dataset.json`` list to read (``"training"`` or ``"test"``).

    Returns:
        records ``{"image": abs path, "label": abs path, "case": id}`` sorted by case number
        (``"label"`` is absent for unlabelled images when ``require_labels=False``).

    Raises:
        FileNotFoundError: the folder does not exist, is empty, or ``dataset.json`` lists missing files.
        ValueError: the layout is not recognised (the message lists what the folder holds), a volume
            has no label, a case appears twice, or ``dataset.json`` is unreadable.

    Example::

        datalist = find_cases("/data/LiTS")  # [{"image": ".../volume-0.nii", "label": ..., "case": "volume-0"}, ...]
    """
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder {root} is not a folder.")
    if layout not in ("auto", "lits", "msd"):
        raise ValueError(f"layout must be 'auto', 'lits' or 'msd', got {layout!r}.")
    root = root.resolve()
    if layout == "auto":
        if not any(not p.name.startswith(".") for p in root.iterdir()):
            raise FileNotFoundError(f"dataset folder {root} is empty; {_EXPECTED}.")
        if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
            layout = "msd"
        elif any(_LITS_VOLUME.match(f.name) for f in _walk_visible(root)):
            layout = "lits"
        else:
            subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
            msd_subdirs = [d for d in subdirs if (d / "dataset.json").is_file()]
            if len(msd_subdirs) == 1:
                root, layout = msd_subdirs[0], "msd"
            else:
                raise ValueError(
                    f"cannot recognise the dataset layout of {root}: it holds {_listing(root)}; {_EXPECTED}."
                )
    records = _find_lits(root, require_labels) if layout == "lits" else _find_msd(root, require_labels, section)
    if not records:
        raise FileNotFoundError(f"no {layout.upper()} cases found in {root}: it holds {_listing(root)}; {_EXPECTED}.")
    logger.info("found %d %s cases in %s", len(records), layout.upper(), root)
    return records


def _case_of(record: dict[str, Any]) -> str:
    if record.get("case"):
        return str(record["case"])
    if "image" not in record:
        raise ValueError(f"datalist record without 'image' or 'case': {record!r}")
    return case_id_from_path(record["image"])


def split_cases(
    datalist: Sequence[dict[str, Any]],
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a datalist into training and validation cases, deterministically by case id.

    Cases are ordered by a SHA-256 hash of ``"<seed>:<case id>"``: the split depends only on the set
    of case ids and the seed (not on the input order or Python's hash seed), each case lands on
    exactly one side, and adding a case moves few others. With ``fold`` set, the hashed order is dealt
    round-robin into ``num_folds`` folds and fold ``fold`` is the validation set (``val_fraction`` is
    then ignored); over all folds every case is validated exactly once.

    Args:
        datalist: records with a ``"case"`` key (or an ``"image"`` path to derive it from).
        val_fraction: share of cases for validation, in ``[0, 1)``; at least one case when > 0.
        seed: seed of the ordering.
        fold: ``None`` for a single split, else the validation fold in ``0..num_folds-1``.
        num_folds: number of folds for k-fold cross-validation (>= 2).

    Returns:
        ``(train, val)``: two lists of the input records, each in input order.

    Raises:
        ValueError: for duplicate case ids, fewer cases than needed, or arguments out of range.

    Example::

        train, val = split_cases(find_cases("/data/LiTS"), val_fraction=0.2, seed=0)
        train, val = split_cases(datalist, fold=2, num_folds=5)  # 5-fold cross-validation, fold 2
    """
    cases = [_case_of(r) for r in datalist]
    dup = sorted({c for c in cases if cases.count(c) > 1})
    if dup:
        raise ValueError(f"case ids must be unique to split by case, duplicated: {dup[:10]}.")
    n = len(cases)
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{cases[i]}".encode()).hexdigest())
    if fold is not None:
        if num_folds < 2:
            raise ValueError(f"num_folds must be at least 2, got {num_folds}.")
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}.")
        if n < num_folds:
            raise ValueError(f"{num_folds}-fold split needs at least {num_folds} cases, got {n}.")
        val_idx = {i for pos, i in enumerate(order) if pos % num_folds == fold}
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        n_val = round(val_fraction * n)
        if val_fraction > 0:
            if n < 2:
                raise ValueError(f"a validation split needs at least 2 cases, got {n}.")
            n_val = min(max(n_val, 1), n - 1)
        val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(datalist) if i not in val_idx]
    val = [r for i, r in enumerate(datalist) if i in val_idx]
    return train, val


def save_datalist(
    path: str | os.PathLike,
    training: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    relative: bool = False,
) -> Path:
    """Write a datalist JSON (atomically) in the Decathlon format MONAI reads.

    The file holds ``{"training": [...], "validation": [...], "metadata": {...}}``; it loads with
    :func:`load_datalist` or ``monai.data.load_decathlon_datalist(path, data_list_key="validation")``.

    Args:
        path: output JSON file.
        training: training records.
        validation: validation records (written as an empty list when ``None``).
        metadata: free JSON-serialisable information (seed, fold, dataset folder ...).
        relative: write ``image``/``label`` paths relative to the JSON's folder (portable copies of a
            dataset together with its datalist); absolute paths otherwise.

    Returns:
        the path written.
    """
    out = Path(path)
    base = out.parent.resolve()

    def _convert(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        converted = []
        for r in records:
            item = dict(r)
            item["case"] = _case_of(r)
            for key in ("image", "label"):
                if key in item and isinstance(item[key], str | os.PathLike):
                    p = Path(item[key]).resolve()
                    item[key] = os.path.relpath(p, base) if relative else str(p)
            converted.append(item)
        return converted

    content = {"training": _convert(training), "validation": _convert(validation or []), "metadata": metadata or {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_json_atomic(content, out)


def load_datalist(path: str | os.PathLike, key: str = "training", check_files: bool = False) -> list[dict[str, Any]]:
    """Read one list of a datalist JSON written by :func:`save_datalist` (or an MSD ``dataset.json``).

    Relative ``image``/``label`` paths are resolved against the JSON's folder, as MONAI does.

    Args:
        path: the JSON file.
        key: which list to return (``"training"``, ``"validation"``, ...).
        check_files: raise FileNotFoundError when a listed file is missing.

    Returns:
        the records with absolute paths and a ``"case"`` id.

    Raises:
        FileNotFoundError: the JSON (or, with ``check_files``, a listed file) is missing.
        ValueError: the JSON is unreadable or has no list ``key``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"datalist {p} does not exist.")
    try:
        content = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read datalist {p}: {e}") from e
    if not isinstance(content, dict) or not isinstance(content.get(key), list):
        keys = [k for k, v in content.items() if isinstance(v, list)] if isinstance(content, dict) else []
        raise ValueError(f"datalist {p} has no list {key!r}; lists found: {keys}.")
    base = p.parent.resolve()
    records = []
    for item in content[key]:
        record = dict(item) if isinstance(item, dict) else {"image": item}
        for k in ("image", "label"):
            if isinstance(record.get(k), str):
                record[k] = str((base / record[k]).resolve())
        record["case"] = _case_of(record)
        if check_files:
            for k in ("image", "label"):
                if k in record and not Path(record[k]).is_file():
                    raise FileNotFoundError(f"datalist {p}, case {record['case']!r}: {k} file {record[k]} is missing.")
        records.append(record)
    return records


def prepare_datalist(
    dataset_dir: str | os.PathLike,
    output_json: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    layout: str = "auto",
) -> dict[str, list[dict[str, Any]]]:
    """Discover, split and (optionally) save in one call; the form a bundle config can use.

    Args:
        dataset_dir: LiTS or MSD folder (see :func:`find_cases`).
        output_json: where to save the split (``None``: do not save).
        val_fraction, seed, fold, num_folds: see :func:`split_cases`.
        layout: see :func:`find_cases`.

    Returns:
        ``{"training": [...], "validation": [...]}``.

    Example (bundle config)::

        "datalist": "$unet_monai.data.prepare_datalist(@dataset_dir, @bundle_root + '/datalist.json')",
        "train_data": "$@datalist['training']"
    """
    records = find_cases(dataset_dir, layout=layout)
    return split_and_save(records, dataset_dir, output_json, val_fraction, seed, fold, num_folds)


def split_and_save(
    records: Sequence[dict[str, Any]],
    dataset_dir: str | os.PathLike,
    output_json: str | os.PathLike | None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
) -> dict[str, list[dict[str, Any]]]:
    """Split ``records`` by case (:func:`split_cases`) and, if ``output_json`` is given, save the split with
    the arguments that made it (:func:`save_datalist`). Returns ``{"training": [...], "validation": [...]}``."""
    train, val = split_cases(records, val_fraction=val_fraction, seed=seed, fold=fold, num_folds=num_folds)
    if output_json is not None:
        meta = {
            "dataset_dir": str(Path(dataset_dir).resolve()),
            "val_fraction": val_fraction,
            "seed": seed,
            "fold": fold,
            "num_folds": num_folds,
            "num_cases": len(records),
        }
        save_datalist(output_json, train, val, metadata=meta)
    return {"training": train, "validation": val}
