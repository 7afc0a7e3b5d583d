"""``unet-monai evaluate``: LiTS-style metrics of predicted label maps against reference labels.

Predictions and labels are matched by case id. Both sides drop their image extension; a prediction
also drops a trailing ``_seg`` (what ``predict`` and the bundles write), and a LiTS label
``segmentation-N`` stands for the case ``volume-N``. So ``volume-3_seg.nii.gz`` <-> ``segmentation-3.nii.gz``,
``liver_7_seg.nii.gz`` <-> ``liver_7.nii.gz``, and identical stems match. ``--label`` may also be a
LiTS or MSD dataset folder (its segmentations are used). Files ending in ``_prob`` in the prediction
folder (``predict --save-probabilities``) are ignored.

Per case and region (``liver`` = label 1, ``tumour`` = label 2, ``liver_tumour`` = labels 1 or 2, the
LiTS liver score), see :mod:`unet_monai.metrics.lits`: Dice, VOE, RVD, ASSD and HD95 in mm (spacing
of the label). Written atomically to ``metrics_per_case.csv`` (one row per case) and
``metrics_summary.csv`` (mean, std, median, min, max and count per column, NaN left out, plus the
pooled ``global_dice_*`` rows); a summary table is printed. A case whose prediction or label is missing,
unreadable, of another shape or affine, or holds values outside {0, 1, 2} is reported on one line and
skipped; the exit status is then 1. With ``--skip-unpredicted``, labels without a prediction are not
errors (``--label`` a whole dataset, ``--pred`` the predictions of its validation cases).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from unet_monai.cli._help import epilog
from unet_monai.cli.io import IMAGE_SUFFIXES, InputError, natural_key, readable_mode, squeezed_shape, voxel_spacing
from unet_monai.data.lits import case_id_from_path
from unet_monai.utils.io import atomic_path

__all__ = ["add_parser", "match_key", "pair_cases", "run"]

logger = logging.getLogger(__name__)

_LITS_LABEL = re.compile(r"^segmentation-(\d+)$")
_ALLOWED = (0, 1, 2)


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        parents=parents,
        help="LiTS metrics (Dice, global Dice, VOE, RVD, ASSD, HD95) of predictions against labels",
        description="LiTS-style metrics of predicted label maps against reference labels, per case and region.",
        epilog=epilog(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label maps (CASE_seg.nii.gz)")
    p.add_argument("--label", required=True, metavar="DIR", help="folder of reference labels, or a LiTS/MSD dataset")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder for metrics_per_case.csv and metrics_summary.csv (default: --pred)",
    )
    p.add_argument(
        "--affine-tol",
        type=float,
        default=1e-3,
        metavar="MM",
        help="largest allowed affine difference (default 1e-3 mm)",
    )
    p.add_argument(
        "--skip-unpredicted",
        action="store_true",
        help="labels without a prediction are skipped quietly (e.g. --label is a whole dataset and --pred holds "
        "the validation cases) instead of being errors",
    )
    p.set_defaults(func=run)
    return p


def match_key(path: str | Path, prediction: bool = False) -> str:
    """The case id a prediction or label file stands for (see the module docstring)."""
    stem = case_id_from_path(path)
    if prediction and stem.endswith("_seg"):
        stem = stem[: -len("_seg")]
    m = _LITS_LABEL.match(stem)
    return f"volume-{m.group(1)}" if m else stem


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)
        ),
        key=lambda p: natural_key(p.name),
    )


def _label_files(folder: Path) -> dict[str, list[Path]]:
    try:  # a LiTS / MSD dataset folder: its labels by case
        from unet_monai.data.lits import find_cases

        cases = find_cases(folder, require_labels=False)
        labelled = {r["case"]: [Path(r["label"])] for r in cases if r.get("label")}
        if labelled:
            return {match_key(k): v for k, v in labelled.items()}
    except (ValueError, FileNotFoundError, KeyError):
        pass
    out: dict[str, list[Path]] = {}
    for p in _image_files(folder):
        out.setdefault(match_key(p), []).append(p)
    return out


def pair_cases(pred_dir: Path, label_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[InputError]]:
    """Match predictions to labels by case id.

    Returns:
        ``([(case, prediction, label), ...], problems)``: pairs in natural case order, and one
        :class:`InputError` per prediction without label, label without prediction or duplicated case.
    """
    preds: dict[str, list[Path]] = {}
    for p in _image_files(pred_dir):
        if case_id_from_path(p).endswith("_prob"):
            continue
        preds.setdefault(match_key(p, prediction=True), []).append(p)
    labels = _label_files(label_dir)
    problems: list[InputError] = []
    pairs: list[tuple[str, Path, Path]] = []
    for case in sorted(set(preds) | set(labels), key=natural_key):
        p, lab = preds.get(case, []), labels.get(case, [])
        if len(p) > 1:
            problems.append(
                InputError(p[0], f"case {case!r} has {len(p)} predictions: {', '.join(x.name for x in p)}.")
            )
        elif len(lab) > 1:
            problems.append(
                InputError(lab[0], f"case {case!r} has {len(lab)} labels: {', '.join(x.name for x in lab)}.")
            )
        elif not lab:
            problems.append(InputError(p[0], f"no label for case {case!r} in {label_dir}."))
        elif not p:
            problems.append(InputError(lab[0], f"no prediction for case {case!r} in {pred_dir}."))
        else:
            pairs.append((case, p[0], lab[0]))
    return pairs, problems


def _load_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label map as integers with its affine; values checked against {0, 1, 2}."""
    import nibabel as nib

    try:
        if path.stat().st_size == 0:
            raise InputError(path, "empty file (0 bytes).")
        if path.name.lower().endswith((".nii", ".nii.gz")):
            img = nib.load(str(path))
            data, affine = np.asanyarray(img.dataobj), np.asarray(img.affine, float)
        else:
            import SimpleITK as sitk

            from unet_monai.cli.io import itk_to_nifti_affine

            image = sitk.ReadImage(str(path))
            data = sitk.GetArrayFromImage(image).T
            affine = itk_to_nifti_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"cannot read the label map ({type(e).__name__}: {e}).") from e
    data = data.reshape(squeezed_shape(data.shape))
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all() or (np.round(data) != data).any():
            raise InputError(path, "the label map holds non-integer or non-finite values.")
    values = np.unique(data)
    bad = [v for v in values.tolist() if v not in _ALLOWED]
    if bad:
        raise InputError(path, f"the label map holds values {sorted(bad)[:10]} outside {{0, 1, 2}}.")
    return data.astype(np.uint8), affine


def _fmt(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_fmt(v) if isinstance(v, float) else v for v in row])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
        readable_mode(tmp)


def _summary_rows(header: list[str], rows: list[list[Any]], glob: dict[str, float]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for j, column in enumerate(header[1:], start=1):
        values = np.array([r[j] for r in rows], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            stats = [values.mean(), values.std(), np.median(values), values.min(), values.max()]
        else:
            stats = [math.nan] * 5
        out.append([column, *(float(s) for s in stats), int(values.size)])
    for region, value in glob.items():
        out.append([f"global_dice_{region}", value, math.nan, value, value, value, len(rows)])
    return out


def _print_table(summary: list[list[Any]], regions: list[str], n_ok: int, n_failed: int) -> None:
    from unet_monai.metrics import LITS_METRICS

    stats = {row[0]: row for row in summary}
    units = {"assd": " (mm)", "hd95": " (mm)"}
    names = ["dice", "global dice", *LITS_METRICS[1:]]
    width = 20
    lines = ["metric".ljust(14) + "".join(r.rjust(width) for r in regions)]
    for name in names:
        cells = []
        for region in regions:
            if name == "global dice":
                row = stats.get(f"global_dice_{region}")
                cells.append(f"{row[1]:.4f}" if row else "-")
            else:
                row = stats.get(f"{name}_{region}")
                if row is None or row[6] == 0:
                    cells.append("-")
                else:
                    cells.append(f"{row[1]:.4f} ± {row[2]:.4f}")
        lines.append((name + units.get(name, "")).ljust(14) + "".join(c.rjust(width) for c in cells))
    lines.append(f"{n_ok} case(s) evaluated (mean ± std over cases; NaN left out), {n_failed} problem(s)")
    print("\n".join(lines), file=sys.stdout)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate`` with parsed arguments; returns the exit status."""
    from unet_monai.metrics import LITS_METRICS, LITS_REGIONS, global_dice, lits_case_metrics

    pred_dir, label_dir = Path(args.pred).expanduser(), Path(args.label).expanduser()
    for folder in (pred_dir, label_dir):
        if not folder.is_dir():
            logger.error("%s: %s", folder, "does not exist." if not folder.exists() else "is not a folder.")
            return 1
    out_dir = Path(args.out).expanduser() if args.out else pred_dir
    if out_dir.exists() and not out_dir.is_dir():
        logger.error("%s: cannot write there: it is a file, not a folder.", out_dir)
        return 1
    pairs, problems = pair_cases(pred_dir, label_dir)
    if args.skip_unpredicted:
        unpredicted = [p for p in problems if p.problem.startswith("no prediction for case")]
        problems = [p for p in problems if p not in unpredicted]
        if unpredicted:
            logger.info("%d label(s) without a prediction skipped (--skip-unpredicted)", len(unpredicted))
    for problem in problems:
        logger.error("%s", problem)
    regions = list(LITS_REGIONS)
    header = ["case"] + [f"{m}_{r}" for m in LITS_METRICS for r in regions]
    rows: list[list[Any]] = []
    counts = []
    for case, pred_path, label_path in pairs:
        try:
            pred, pred_affine = _load_labels(pred_path)
            label, label_affine = _load_labels(label_path)
            if pred.shape != label.shape:
                raise InputError(
                    pred_path, f"shape {pred.shape} differs from the label {label_path.name} {label.shape}."
                )
            diff = float(np.max(np.abs(pred_affine - label_affine)))
            if diff > args.affine_tol:
                raise InputError(
                    pred_path,
                    f"affine differs from the label {label_path.name} by up to {diff:.4g} mm "
                    f"(tolerance {args.affine_tol:g}).",
                )
            values, region_counts = lits_case_metrics(pred, label, voxel_spacing(label_affine)[: label.ndim])
        except InputError as e:
            logger.error("%s", e)
            problems.append(e)
            continue
        rows.append([case, *(values[c] for c in header[1:])])
        counts.append(region_counts)
        logger.info("%s: dice liver %.4f, tumour %.4f", case, values["dice_liver"], values["dice_tumour"])
    if not rows:
        logger.error("no case could be evaluated.")
        return 1
    summary = _summary_rows(header, rows, global_dice(counts))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(out_dir / "metrics_per_case.csv", header, rows)
        _write_csv(out_dir / "metrics_summary.csv", ["metric", "mean", "std", "median", "min", "max", "n"], summary)
    except OSError as e:
        logger.error("%s: cannot write the metric tables (%s).", out_dir, e.strerror or e)
        return 1
    _print_table(summary, regions, len(rows), len(problems))
    logger.info("wrote %s and %s", out_dir / "metrics_per_case.csv", out_dir / "metrics_summary.csv")
    return 1 if problems else 0
