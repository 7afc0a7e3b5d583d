"""Per-case evaluation tables: one CSV row per case with every metric per class, plus a summary CSV."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from unet_monai.utils.io import atomic_path

__all__ = ["CaseMetricsWriter", "case_name"]

logger = logging.getLogger(__name__)


def case_name(filename: Any) -> str:
    """A case id from an image path: the file name without ``.nii``/``.nii.gz`` and the like."""
    name = Path(str(filename)).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _filenames(batch: Any, key: str) -> list[str]:
    """The ``filename_or_obj`` of every item of a (collated or decollated) evaluator batch."""
    items = batch if isinstance(batch, list) else [batch]
    names: list[str] = []
    for item in items:
        meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict", {})
        value = meta.get("filename_or_obj", "unknown")
        names.extend(str(v) for v in value) if isinstance(value, (list, tuple)) else names.append(str(value))
    return names


class CaseMetricsWriter:
    """Write ``metrics_per_case.csv`` and ``metrics_summary.csv`` at the end of an evaluation run.

    MONAI's metric handlers (``MeanDice``, ``HausdorffDistance``, ``SurfaceDistance``) keep per-case,
    per-class values in ``engine.state.metric_details`` when built with ``save_details=True``. This
    handler joins them into ONE table, a row per case and a column per metric and class
    (``dice_liver``, ``hd95_tumour``, ...), plus a summary (mean, std, median, min, max and the number
    of cases where the value is defined; NaN, e.g. the tumour Dice of a case without tumour, is left
    out of the statistics). MONAI's ``MetricsSaver`` writes one file per metric instead, not atomically.
    Both files are written through a temporary file and renamed.

    Args:
        output_dir: folder for the two CSV files.
        metrics: the ``metric_details`` names to write, mapped to column prefixes, e.g.
            ``{"val_mean_dice": "dice", "val_hd95": "hd95", "val_asd": "asd"}``.
        class_names: names of the classes the metrics are computed for, in channel order
            (background excluded when the metrics exclude it), e.g. ``["liver", "tumour"]``.
        image_key: key of the batch whose ``filename_or_obj`` names the case.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics: dict[str, str],
        class_names: Sequence[str],
        image_key: str = "image",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metrics = dict(metrics)
        self.class_names = list(class_names)
        self.image_key = image_key
        self._cases: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _collect(self, engine: Engine) -> None:
        self._cases.extend(case_name(f) for f in _filenames(engine.state.batch, self.image_key))

    def table(self, engine: Engine) -> tuple[list[str], list[list[Any]]]:
        """The per-case header and rows from ``engine.state.metric_details``."""
        details = getattr(engine.state, "metric_details", {})
        header, columns = ["case"], []
        for name, prefix in self.metrics.items():
            if name not in details:
                raise KeyError(f"metric {name!r} has no per-case details: build its handler with save_details=True.")
            values = details[name]
            values = values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            values = values.reshape(values.shape[0], -1)
            if values.shape[1] != len(self.class_names):
                raise ValueError(
                    f"metric {name!r} has {values.shape[1]} class column(s) but class_names lists "
                    f"{len(self.class_names)}: {self.class_names}."
                )
            header += [f"{prefix}_{c}" for c in self.class_names]
            columns.append(values)
        data = np.concatenate(columns, axis=1) if columns else np.zeros((len(self._cases), 0))
        cases = self._cases if len(self._cases) == data.shape[0] else [f"case_{i}" for i in range(data.shape[0])]
        return header, [[case, *row.tolist()] for case, row in zip(cases, data)]

    def __call__(self, engine: Engine) -> None:
        header, rows = self.table(engine)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(self.output_dir / "metrics_per_case.csv", header, rows)
        summary = []
        for j, column in enumerate(header[1:], start=1):
            values = np.array([r[j] for r in rows], dtype=float)
            values = values[np.isfinite(values)]
            stats = (
                [values.mean(), values.std(), np.median(values), values.min(), values.max()]
                if values.size
                else [math.nan] * 5
            )
            summary.append([column, *(float(s) for s in stats), int(values.size)])
        _write_csv(
            self.output_dir / "metrics_summary.csv", ["metric", "mean", "std", "median", "min", "max", "n"], summary
        )
        for row in summary:
            logger.info("%s: mean %.4f, std %.4f (n=%d)", row[0], row[1], row[2], row[6])


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
