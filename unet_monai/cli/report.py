"""``unet-monai report RUN_DIR``: a self-contained summary of a training run, as HTML and PNG.

``RUN_DIR`` is a bundle's ``eval`` folder, or a bundle folder (its ``eval`` folder is used). It reads
what the bundle's train and evaluate configs write there:

- ``history.json`` (:class:`unet_monai.handlers.TrainingHistory`): learning curves (drawn with
  :func:`unet_monai.handlers.plot_learning_curves`) and the validation Dice per class over epochs;
- ``metrics_per_case.csv`` / ``metrics_summary.csv`` (the bundle's ``CaseMetricsWriter`` or
  ``unet-monai evaluate``): a table of the per-case metrics;
- ``datalist.json`` and ``predictions/CASE_seg.nii.gz``: overlays of the best and the worst case
  (ranked by their mean Dice over classes), reference labels as contours, predictions filled.

It writes ``report.html`` (PNG figures embedded as base64, no other file needed) and ``report.png``
(the figures stacked). A missing part is named in the report and in a warning, the rest is still
drawn; with nothing at all to report the exit status is 1.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import html
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from unet_monai.cli._help import epilog
from unet_monai.cli.io import natural_key, ras_affine, readable_mode, to_ras, voxel_spacing
from unet_monai.data.lits import case_id_from_path
from unet_monai.utils.io import atomic_path

__all__ = ["add_parser", "build_report", "run"]

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 2px 8px; border: 1px solid #ddd; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .missing { color: #a33; font-style: italic; } .meta { color: #666; font-size: 0.9em; }
"""


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``report``."""
    p = subparsers.add_parser(
        "report",
        parents=parents,
        help="HTML/PNG summary of a training run (learning curves, Dice per class, best and worst cases)",
        description="A self-contained summary of a training run: report.html (figures embedded) and report.png.",
        epilog=epilog(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a bundle's eval folder, or the bundle folder")
    p.add_argument(
        "--out", metavar="DIR", default=None, help="where to write report.html / report.png (default RUN_DIR)"
    )
    p.add_argument(
        "--format", choices=("html", "png", "both"), default="both", help="which files to write (default both)"
    )
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------- reading the run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _case_records(datalist: Any) -> dict[str, dict[str, Any]]:
    """Case id -> datalist record, over every list of a datalist JSON."""
    out: dict[str, dict[str, Any]] = {}
    lists = datalist.values() if isinstance(datalist, dict) else [datalist]
    for records in lists:
        if not isinstance(records, list):
            continue
        for r in records:
            if isinstance(r, dict) and r.get("image"):
                out[str(r.get("case") or case_id_from_path(r["image"]))] = r
    return out


# --------------------------------------------------------------------------- figures


def _dice_figure(history: dict[str, Any]) -> Any | None:
    """Validation Dice per class over epochs, or None when the history holds none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    val = [r for r in history.get("validation", []) if isinstance(r, dict)]
    keys = [k for k in dict.fromkeys(k for r in val for k in r) if "dice" in k and k != "epoch"]
    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in val)]
    if not keys:
        return None
    fig = Figure(figsize=(7, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for key in keys:
        points = [(r["epoch"], r[key]) for r in val if isinstance(r.get(key), (int, float)) and "epoch" in r]
        if points:
            label = key.removeprefix("val_").replace("_", " ")
            ax.plot(*zip(*points), marker="o", label=label, linewidth=2 if "mean" in key else 1)
    ax.set(xlabel="epoch", ylabel="Dice", ylim=(0, 1), title="validation Dice per class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _case_score(row: dict[str, str]) -> float:
    """The mean of a row's Dice columns (NaN left out): the ranking of best and worst cases."""
    values = [_float(v) for k, v in row.items() if k.startswith("dice")]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _load_case(image: Path, label: Path, pred: Path) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """RAS views of the label and prediction, the image proxy and its RAS view, the RAS spacing."""
    import nibabel as nib

    img, lab, prd = (nib.load(str(p)) for p in (image, label, pred))
    shape = tuple(int(s) for s in img.shape[:3])
    for p, other in ((label, lab), (pred, prd)):
        if tuple(other.shape[:3]) != shape:
            raise ValueError(f"{p.name} has shape {tuple(other.shape)} but the image {image.name} has {img.shape}")
    affine = np.asarray(img.affine, float)
    raw = np.asarray(img.dataobj.get_unscaled()).reshape(shape)
    label_ras = to_ras(np.asarray(lab.dataobj).reshape(shape), affine)
    pred_ras = to_ras(np.asarray(prd.dataobj).reshape(shape), affine)
    spacing = voxel_spacing(ras_affine(affine, shape))
    return img, to_ras(raw, affine), label_ras, pred_ras, spacing


def _case_figure(title: str, image: Path, label: Path, pred: Path, window: tuple[float, float]) -> Any:
    from nibabel.volumeutils import apply_read_scaling

    from unet_monai.cli.overlay import Panel, draw_panels, pick_slices

    img, raw_ras, label_ras, pred_ras, spacing = _load_case(image, label, pred)
    picks = pick_slices(np.asarray(label_ras), max_slices=3)
    panels = [
        Panel(
            image=np.asarray(
                apply_read_scaling(np.ascontiguousarray(raw_ras[:, :, z]), img.dataobj.slope, img.dataobj.inter),
                dtype=np.float32,
            ),
            prediction=np.asarray(pred_ras[:, :, z]),
            reference=np.asarray(label_ras[:, :, z]),
            title=f"axial slice {z}",
            aspect=spacing[1] / spacing[0],
        )
        for z in picks
    ]
    return draw_panels(panels, title=title, window=window)


# --------------------------------------------------------------------------- the report


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        number = _float(v)
        if isinstance(v, (int, float)) or (isinstance(v, str) and v.strip() and not math.isnan(number)):
            return f'<td class="num">{number:.4g}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def build_report(run_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, bytes]], list[str]]:
    """Collect the report's sections from a run folder.

    Returns:
        ``(sections, figures, missing)``: HTML sections ``(title, body)``, the PNG figures
        ``(caption, bytes)`` in order, and a description of every missing part.
    """
    from unet_monai.cli.overlay import figure_png

    sections: list[tuple[str, str]] = []
    figures: list[tuple[str, bytes]] = []
    missing: list[str] = []

    def note(text: str) -> str:
        missing.append(text)
        return f'<p class="missing">{html.escape(text)}</p>'

    # learning curves and Dice per class
    history_path = run_dir / "history.json"
    history: dict[str, Any] | None = None
    if history_path.is_file():
        try:
            history = _read_json(history_path)
        except ValueError as e:
            sections.append(("Learning curves", note(str(e))))
    else:
        sections.append(("Learning curves", note(f"no history.json in {run_dir}: no learning curves.")))
    if history is not None:
        if history.get("train"):
            from unet_monai.handlers.history import plot_learning_curves

            with tempfile.TemporaryDirectory(prefix="unet-monai-report-") as tmp:
                png = plot_learning_curves(history, Path(tmp) / "learning_curves.png").read_bytes()
            figures.append(("learning curves", png))
            epochs = len(history["train"])
            last = history["train"][-1]
            text = f"<p>{epochs} epoch(s); last training loss {_float(last.get('loss')):.4g}.</p>"
            sections.append(("Learning curves", text + _img_tag(png, "learning curves")))
        else:
            sections.append(("Learning curves", note("history.json holds no training epoch.")))
        fig = _dice_figure(history)
        if fig is None:
            sections.append(("Validation Dice per class", note("history.json holds no validation Dice.")))
        else:
            png = figure_png(fig)
            figures.append(("validation Dice per class", png))
            val = [r for r in history.get("validation", []) if "val_mean_dice" in r]
            best = max(val, key=lambda r: _float(r["val_mean_dice"]), default=None)
            text = (
                f"<p>best mean Dice {_float(best['val_mean_dice']):.4f} at epoch {best.get('epoch')}.</p>"
                if best
                else ""
            )
            sections.append(("Validation Dice per class", text + _img_tag(png, "validation Dice per class")))

    # per-case metrics
    rows: list[dict[str, str]] = []
    metrics_path = run_dir / "metrics_per_case.csv"
    if metrics_path.is_file():
        try:
            header, rows = _read_csv(metrics_path)
            body = _table(header, [[r.get(h, "") for h in header] for r in rows])
            summary_path = run_dir / "metrics_summary.csv"
            if summary_path.is_file():
                s_header, s_rows = _read_csv(summary_path)
                body += "<h3>Summary</h3>" + _table(s_header, [[r.get(h, "") for h in s_header] for r in s_rows])
            sections.append((f"Per-case metrics ({len(rows)} cases)", body))
        except ValueError as e:
            sections.append(("Per-case metrics", note(str(e))))
    else:
        sections.append(("Per-case metrics", note(f"no metrics_per_case.csv in {run_dir}: run the bundle's evaluate "
                                                   "config or unet-monai evaluate.")))  # fmt: skip

    # best and worst cases
    ranked = sorted(
        ((s, r) for r in rows if "case" in r and math.isfinite(s := _case_score(r))),
        key=lambda x: (x[0], natural_key(x[1]["case"])),
    )
    datalist_path, pred_dir = run_dir / "datalist.json", run_dir / "predictions"
    if not ranked:
        sections.append(("Best and worst cases", note("no per-case Dice to rank the cases by.")))
    elif not datalist_path.is_file():
        sections.append(("Best and worst cases", note(f"no datalist.json in {run_dir}: the images are unknown.")))
    elif not pred_dir.is_dir():
        sections.append(("Best and worst cases", note(f"no predictions/ folder in {run_dir}.")))
    else:
        try:
            records = _case_records(_read_json(datalist_path))
        except ValueError as e:
            records = {}
            sections.append(("Best and worst cases", note(str(e))))
        picks = [("Best case", ranked[-1])] + ([("Worst case", ranked[0])] if len(ranked) > 1 else [])
        for title, (score, row) in picks:
            case = row["case"]
            record = records.get(case)
            pred = pred_dir / f"{case}_seg.nii.gz"
            if record is None or not record.get("label"):
                sections.append((f"{title}: {case}", note(f"case {case!r} is not in datalist.json (with a label).")))
                continue
            if not pred.is_file():
                sections.append((f"{title}: {case}", note(f"no prediction {pred.name} in {pred_dir}.")))
                continue
            dice = ", ".join(f"{k} {_float(v):.3f}" for k, v in row.items() if k.startswith("dice"))
            try:
                fig = _case_figure(
                    f"{title.lower()}: {case} ({dice})",
                    Path(record["image"]),
                    Path(record["label"]),
                    pred,
                    (-200.0, 250.0),
                )
            except (OSError, ValueError) as e:
                sections.append((f"{title}: {case}", note(f"cannot draw case {case!r}: {e}")))
                continue
            png = figure_png(fig)
            figures.append((f"{title.lower()} {case}", png))
            text = f"<p>mean Dice {score:.4f} ({html.escape(dice)}); lines: reference, fill: prediction.</p>"
            sections.append((f"{title}: {case}", text + _img_tag(png, f"{title} {case}")))
    return sections, figures, missing


def _write_html(path: Path, run_dir: Path, sections: list[tuple[str, str]]) -> None:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Training report: {html.escape(str(run_dir))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Training report</h1>",
        f'<p class="meta">run folder {html.escape(str(run_dir))}; generated {when} by unet-monai report.</p>',
    ]
    parts += [f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>" for title, body in sections]
    parts.append("</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        readable_mode(tmp)


def _write_png(path: Path, figures: list[tuple[str, bytes]]) -> None:
    import io

    import matplotlib.image as mpimg
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from unet_monai.cli.overlay import save_figure

    images = [mpimg.imread(io.BytesIO(png), format="png") for _, png in figures]
    width = max(im.shape[1] for im in images)
    heights = [im.shape[0] * width / im.shape[1] for im in images]
    dpi = 100
    fig = Figure(figsize=(width / dpi, sum(heights) / dpi))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(images), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, im in zip(axes, images):
        ax.imshow(im)
        ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0, hspace=0.02)
    save_figure(fig, path, dpi=dpi)


def run(args: argparse.Namespace) -> int:
    """Run ``report`` with parsed arguments; returns the exit status."""
    run_dir = Path(args.run_dir).expanduser()
    if not run_dir.is_dir():
        logger.error("%s: %s", run_dir, "does not exist." if not run_dir.exists() else "is not a folder.")
        return 1
    if (run_dir / "configs").is_dir() and (run_dir / "eval").is_dir():
        run_dir = run_dir / "eval"
    run_dir = run_dir.resolve()
    parts = ("history.json", "metrics_per_case.csv", "predictions")
    if not any((run_dir / p).exists() for p in parts):
        logger.error("%s: nothing to report: no %s.", run_dir, ", ".join(parts))
        return 1
    out_dir = Path(args.out).expanduser() if args.out else run_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        logger.error("%s: cannot create the output folder (%s).", out_dir, e.strerror or e)
        return 1
    sections, figures, missing = build_report(run_dir)
    for text in missing:
        logger.warning("%s", text)
    try:
        if args.format in ("html", "both"):
            _write_html(out_dir / "report.html", run_dir, sections)
            logger.info("wrote %s", out_dir / "report.html")
        if args.format in ("png", "both"):
            if figures:
                _write_png(out_dir / "report.png", figures)
                logger.info("wrote %s", out_dir / "report.png")
            else:
                logger.warning("no figure to put in report.png: not written.")
    except OSError as e:
        logger.error("%s: cannot write the report (%s).", out_dir, e.strerror or e)
        return 1
    return 0
