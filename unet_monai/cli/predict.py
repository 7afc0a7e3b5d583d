"""``unet-monai predict``: segment NIfTI, NRRD, MetaImage or DICOM volumes with a trained bundle.

One ``<case>_seg.nii.gz`` (uint8 labels 0 background, 1 liver, 2 tumour) per input, with the input's
shape and affine; ``<case>_prob.nii.gz`` and ``<case>_overlay.png`` on request. Bad inputs are
reported one line each (``error: PATH: PROBLEM``), the other inputs are still processed, and the exit
status is 1 when any input failed. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from unet_monai.cli.io import InputError, InputItem, Volume, collect_inputs, open_volume, to_ras, voxel_spacing

__all__ = ["CPU_BATCH_SIZE", "add_parser", "choose_batch_size", "output_paths", "run"]

logger = logging.getLogger(__name__)

#: slices (windows) per forward pass on CPU unless asked otherwise, see :func:`choose_batch_size`
CPU_BATCH_SIZE = 4

EPILOG = """\
outputs, in OUTDIR, for an input named CASE.nii.gz (CASE.nrrd, CASE.mha, or a DICOM folder CASE/):
  CASE_seg.nii.gz      uint8 labels (0 background, 1 liver, 2 tumour) with the input's shape and affine
  CASE_prob.nii.gz     --save-probabilities: (X, Y, Z, C) class probabilities stored as uint8 with
                       scl_slope 1/255 (readers that apply the NIfTI scaling get floats in [0, 1])
  CASE_overlay.png     --overlay: axial slices through the largest liver and tumour areas

An input whose requested outputs all exist is skipped (--overwrite to redo it).
Exit status: 0 all inputs predicted or skipped, 1 an input or the bundle failed, 2 usage error.

examples:
  unet-monai predict --bundle bundles/liver_ct_unet3plus_2d_segmentation -i ct/ -o seg/
  unet-monai predict --bundle B -i case.nrrd -o out/ --tta --overlay --device cuda
  unet-monai predict --bundle B -i dicom_series/ -o out/ --override features=[4,8,8,16,16]
"""


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``predict``."""
    p = subparsers.add_parser(
        "predict",
        parents=parents,
        help="segment volumes with a trained bundle",
        description="Segment NIfTI, NRRD, MetaImage or DICOM volumes with a trained bundle: one CASE_seg.nii.gz "
        "of uint8 labels per input, with the input's shape and affine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", "-b", required=True, metavar="PATH", help="bundle folder (configs/, models/model.pt)")
    p.add_argument(
        "-i",
        "--input",
        required=True,
        nargs="+",
        action="extend",
        metavar="INPUT",
        help="a .nii/.nii.gz file, any file SimpleITK reads (.nrrd, .mha, ...), a DICOM series folder, "
        "or a folder of these (repeatable)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tta", action="store_true", help="average the softmax over in-plane flips (4 passes, 4x slower)")
    p.add_argument(
        "--save-probabilities", action="store_true", help="also write CASE_prob.nii.gz (class probabilities)"
    )
    p.add_argument("--overlay", action="store_true", help="also write CASE_overlay.png (a preview of the labels)")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a bundle config id, VALUE in JSON (e.g. features=[4,8,8,16,16], inferer#sw_batch_size=8); "
        "repeatable. Must match the architecture of the weights.",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help=f"slices (2D) or windows (3D) per forward pass, the inferer's sw_batch_size (default: the bundle's; "
        f"on CPU at most {CPU_BATCH_SIZE}, which bounds activation memory)",
    )
    p.add_argument(
        "--slab",
        type=int,
        default=64,
        metavar="N",
        help="2D bundles: axial slices per streamed slab (default 64; rounded up to a multiple of the batch size)",
    )
    p.add_argument(
        "--no-stream",
        action="store_true",
        help="2D bundles: run the bundle's whole-volume pipeline instead of streaming slabs of slices "
        "(same result, more memory)",
    )
    p.set_defaults(func=run)
    return p


def choose_batch_size(bundle: Any, requested: int | None, overrides: dict[str, Any]) -> int | None:
    """Set and return the inferer's ``sw_batch_size``: ``requested``, else the bundle's, capped on CPU.

    Bundles may be tuned for GPUs (32 slices per pass: the 2D ones on CUDA); with the paper's widths one
    320 x 320 slice needs about 0.7 GB of activations on CPU, so 32 slices would need over 20 GB. On
    CPU the batch is therefore at most :data:`CPU_BATCH_SIZE` unless given (``--batch-size`` or an
    ``sw_batch_size`` override); the time per slice hardly depends on it there.
    """
    inferer = bundle.inferer
    if not hasattr(inferer, "sw_batch_size"):
        return None
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--batch-size must be at least 1, got {requested}.")
        inferer.sw_batch_size = int(requested)
    elif bundle.device.type == "cpu" and not {"sw_batch_size", "inferer#sw_batch_size"} & set(overrides):
        inferer.sw_batch_size = min(int(inferer.sw_batch_size), CPU_BATCH_SIZE)
    return int(inferer.sw_batch_size)


def output_paths(outdir: Path, case: str) -> dict[str, Path]:
    """The output files of a case: ``seg``, ``prob`` and ``overlay``."""
    return {
        "seg": outdir / f"{case}_seg.nii.gz",
        "prob": outdir / f"{case}_prob.nii.gz",
        "overlay": outdir / f"{case}_overlay.png",
    }


def _prepare_output(path: Path) -> str | None:
    """Create the output folder; the problem on one line, or None when it is usable."""
    import os

    if path.exists() and not path.is_dir():
        return "cannot write there: it is a file, not a folder."
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "cannot create the output folder: a parent is a file."
    except NotADirectoryError:
        return "cannot create the output folder: a parent is a file, not a folder."
    except OSError as e:
        return f"cannot create the output folder ({e.strerror or e})."
    if not os.access(path, os.W_OK | os.X_OK):
        return "the output folder is not writable (permission denied)."
    return None


def _without_outputs(items: list[InputItem], outdir: Path) -> list[InputItem]:
    """Drop repeated inputs, and this command's own outputs when the input folder is the output folder."""
    out = outdir.resolve()
    kept: list[InputItem] = []
    seen: set[Path] = set()
    for item in items:
        path = item.path.resolve()
        if path in seen:
            continue
        seen.add(path)
        if path.parent == out and item.case.endswith(("_seg", "_prob")):
            logger.debug("not an input: %s is an output of predict", item.path)
            continue
        kept.append(item)
    return kept


def _hu_window(bundle: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in bundle.parser.get_parsed_content("hu_window"))
        return lo, hi
    except Exception:
        return -200.0, 250.0


def _write_overlay(volume: Volume, labels: np.ndarray, path: Path, bundle: Any) -> None:
    from unet_monai.cli.io import ras_affine
    from unet_monai.cli.overlay import pick_slices, render_overlay

    labels_ras = to_ras(labels, volume.affine)
    raw_ras = to_ras(volume.raw(), volume.affine)
    picks = pick_slices(labels_ras)
    spacing = voxel_spacing(ras_affine(volume.affine, labels.shape))
    images = [volume.scaled(np.ascontiguousarray(raw_ras[:, :, z])) for z in picks]
    preds = [np.asarray(labels_ras[:, :, z]) for z in picks]
    title = f"{volume.case}: {bundle.name}"
    names = bundle.class_names if bundle.class_names else ("background", "liver", "tumour")
    render_overlay(path, images, preds, picks, spacing, title=title, window=_hu_window(bundle), class_names=names)


def _predict_one(
    item: InputItem, paths: dict[str, Path], bundle: Any, predictor: Any, args: argparse.Namespace
) -> None:
    from tqdm import tqdm

    from unet_monai.cli.io import save_label, save_probabilities

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unet-monai-") as tmp:
        volume = open_volume(item, bundle.spatial_dims, tmp, bundle=f"the bundle {bundle.name!r}")
        unit = "slice" if type(predictor).__name__ == "SliceStreamPredictor" else "step"
        with tqdm(
            total=predictor.progress_total(volume),
            desc=item.case,
            unit=unit,
            file=sys.stderr,
            disable=args.quiet,
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            prediction = predictor(volume, probabilities=args.save_probabilities, progress=bar)
        writes = [("seg", lambda p: save_label(volume, prediction.labels, p))]
        if args.save_probabilities and prediction.probabilities is not None:
            writes.append(("prob", lambda p: save_probabilities(volume, prediction.probabilities, p)))
        if args.overlay:
            writes.append(("overlay", lambda p: _write_overlay(volume, prediction.labels, p, bundle)))
        for key, write in writes:
            try:
                write(paths[key])
            except OSError as e:  # e.g. a full disk: name the output, the temporary file is already gone
                raise InputError(paths[key], f"cannot write ({e.strerror or e}); input {item.path}.") from e
        counts = np.bincount(np.asarray(prediction.labels).ravel(), minlength=3)
        logger.info(
            "%s -> %s (%s, %.1f s; liver %d, tumour %d voxels)",
            item.path,
            paths["seg"].name,
            "x".join(str(s) for s in volume.shape),
            time.perf_counter() - start,
            int(counts[1]),
            int(counts[2:].sum()),
        )
        volume.release()


def run(args: argparse.Namespace) -> int:
    """Run ``predict`` with parsed arguments; returns the exit status."""
    outdir = Path(args.output).expanduser()
    problem = _prepare_output(outdir)
    if problem:
        logger.error("%s: %s", outdir, problem)
        return 1
    failures = 0
    items: list[InputItem] = []
    for path in args.input:
        try:
            items += collect_inputs(path)
        except InputError as e:
            logger.error("%s", e)
            failures += 1
    items = _without_outputs(items, outdir)
    if not items:
        logger.error("no input to predict on.")
        return 1

    from unet_monai.cli.bundle import BundleError, load_bundle, parse_overrides
    from unet_monai.cli.inference import make_predictor

    try:
        overrides = parse_overrides(args.override)
        bundle = load_bundle(args.bundle, device=args.device, overrides=overrides)
        batch = choose_batch_size(bundle, args.batch_size, overrides)
        predictor = make_predictor(bundle, tta=args.tta, stream=not args.no_stream, slab_slices=max(1, args.slab))
    except (BundleError, ValueError) as e:
        logger.error("%s", e)
        return 1
    mode = "slices streamed" if type(predictor).__name__ == "SliceStreamPredictor" else "whole volumes"
    logger.info(
        "bundle %s (%dD, %s) on %s, %s, batch %s%s; %d input(s) -> %s",
        bundle.name,
        bundle.spatial_dims,
        bundle.weights.name,
        bundle.device,
        mode,
        batch,
        ", flip TTA" if args.tta else "",
        len(items),
        outdir,
    )

    done = skipped = 0
    seen: dict[str, Path] = {}
    for item in items:
        if item.case in seen:
            logger.error("%s: same case name %r as %s: its outputs would overwrite each other; rename one.",
                         item.path, item.case, seen[item.case])  # fmt: skip
            failures += 1
            continue
        seen[item.case] = item.path
        paths = output_paths(outdir, item.case)
        wanted = ["seg"] + (["prob"] if args.save_probabilities else []) + (["overlay"] if args.overlay else [])
        if not args.overwrite and all(paths[k].exists() for k in wanted):
            logger.info("skipping %s: %s exists (--overwrite to predict again)", item.path, paths["seg"].name)
            skipped += 1
            continue
        try:
            _predict_one(item, paths, bundle, predictor, args)
            done += 1
        except InputError as e:
            logger.error("%s", e)
            failures += 1
        except (OSError, ValueError, RuntimeError, MemoryError) as e:
            logger.debug("traceback of %s", item.path, exc_info=True)
            text = " ".join(str(e).split())
            logger.error("%s: prediction failed (%s: %s)", item.path, type(e).__name__, text)
            failures += 1
    logger.info("%d predicted, %d skipped, %d failed", done, skipped, failures)
    return 1 if failures else 0
