"""Training history: per-epoch loss (and loss components), validation metrics, a JSON log and learning curves."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from unet_monai.utils.io import atomic_path, save_json_atomic

__all__ = ["TrainingHistory", "plot_learning_curves"]

logger = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    """A metric value as a float (``None`` for values that are not a finite scalar)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class TrainingHistory:
    """Record a run's learning curves in ``history.json`` and draw them in ``learning_curves.png``.

    Per epoch it records the mean training loss, the mean of each loss component when the loss
    function exposes them (``HybridLoss.components``: focal, MS-SSIM, IoU, classification), the
    learning rate and the epoch time; after each validation, the evaluator's metrics (the per-class Dice
    included). The JSON is rewritten atomically after every epoch, so it is readable while training
    runs (``unet-monai report`` draws it); the PNG is drawn at the end of training. A resumed run keeps the
    records of the epochs it resumes from (attach this handler after the checkpoint loader). Only rank 0
    writes.

    Args:
        output_dir: folder for ``history.json`` and ``learning_curves.png``.
        evaluator: the validation evaluator, whose metrics are recorded after each of its runs.
        loss_function: the training loss; if it has a ``components`` mapping, its terms are logged.
        optimizer: to record the learning rate of its first parameter group.
        plot: draw the PNG at the end of training (needs matplotlib; skipped with a warning if absent).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        evaluator: Engine | None = None,
        loss_function: Any | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        plot: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.loss_function = loss_function
        self.optimizer = optimizer
        self.plot = plot
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._epoch_start = 0.0
        self._trainer: Engine | None = None

    @property
    def json_path(self) -> Path:
        return self.output_dir / "history.json"

    @property
    def png_path(self) -> Path:
        return self.output_dir / "learning_curves.png"

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validation_completed)

    def _started(self, engine: Engine) -> None:
        """On a resumed run (the trainer starts past epoch 0), keep the history of the epochs it resumes from."""
        done = engine.state.epoch
        self.history = {"train": [], "validation": []}
        if done > 0 and self.json_path.is_file():
            try:
                previous = json.loads(self.json_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                logger.warning("cannot read %s to continue it (%s): starting a new history.", self.json_path, e)
                return
            for part in ("train", "validation"):
                self.history[part] = [r for r in previous.get(part, []) if r.get("epoch", 0) <= done]

    def _epoch_started(self, engine: Engine) -> None:
        self._sums.clear()
        self._count = 0
        self._epoch_start = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"] if isinstance(output, dict) else None
        value = _scalar(loss)
        if value is None:
            return
        self._sums["loss"] += value
        for name, term in (getattr(self.loss_function, "components", None) or {}).items():
            term_value = _scalar(term)
            if term_value is not None:
                self._sums[name] += term_value
        self._count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        record: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        record.update({k: v / max(self._count, 1) for k, v in self._sums.items()})
        if self.optimizer is not None:
            record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        record["seconds"] = time.perf_counter() - self._epoch_start
        self.history["train"].append(record)
        self._write_json()

    def _validation_completed(self, evaluator: Engine) -> None:
        epoch = self._trainer.state.epoch if self._trainer is not None else evaluator.state.epoch
        record: dict[str, Any] = {"epoch": epoch}
        for name, value in evaluator.state.metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                record[name] = [float(v) for v in value.flatten()]
            else:
                scalar = _scalar(value)
                if scalar is not None:
                    record[name] = scalar
        self.history["validation"].append(record)
        self._write_json()

    def _completed(self, engine: Engine) -> None:
        self._write_json()
        if self.plot and idist.get_rank() == 0 and self.history["train"]:
            try:
                plot_learning_curves(self.history, self.png_path)
            except ImportError:
                logger.warning("matplotlib is not installed: no learning-curve PNG drawn.")

    def _write_json(self) -> None:
        if idist.get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_json_atomic(self.history, self.json_path)


def plot_learning_curves(history: dict[str, list[dict[str, Any]]], path: str | os.PathLike) -> Path:
    """Draw training loss (and its components) and validation metrics per epoch into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = history.get("train", []), history.get("validation", [])
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    skip = {"epoch", "iteration", "lr", "seconds"}
    for key in dict.fromkeys(k for r in train for k in r if k not in skip):
        points = [(r["epoch"], r[key]) for r in train if key in r]
        ax_loss.plot(*zip(*points), marker=".", label=key, linewidth=2 if key == "loss" else 1)
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_loss.legend(fontsize=8)
    for key in dict.fromkeys(k for r in val for k in r if k != "epoch" and not isinstance(r[k], list)):
        points = [(r["epoch"], r[key]) for r in val if key in r]
        ax_val.plot(*zip(*points), marker="o", label=key)
    ax_val.set(title="validation", xlabel="epoch", ylim=(0, 1))
    if val:
        ax_val.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
