"""Checkpoint handlers: the best model as a plain state_dict, and a full training checkpoint to resume from.

MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver(atomic=False)``, so a crash during a
save can leave a truncated ``model.pt``. These handlers write through
:func:`unet_monai.utils.io.save_torch_atomic` instead (temporary file + rename) and load with
``torch.load(..., weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from unet_monai.utils.io import save_torch_atomic
from unet_monai.utils.serialization import load_checkpoint, unwrap_model

__all__ = ["BestModelSaver", "TrainingCheckpointer"]

logger = logging.getLogger(__name__)


class BestModelSaver:
    """Save the network's weights (a plain ``state_dict``) whenever the evaluator's key metric improves.

    Attach it to the validation evaluator (list it in ``validate#handlers``). The file is what
    ``evaluate.json``, ``inference.json``, ``ckpt_export`` and MONAI Label load: a ``state_dict`` with no
    ``module.`` prefix (DDP is unwrapped) and no optimizer state. Only rank 0 writes.

    Args:
        save_path: destination, usually ``<bundle_root>/models/model.pt``.
        network: the trained network (DDP-wrapped or not).
    """

    def __init__(self, save_path: str | os.PathLike, network: torch.nn.Module) -> None:
        self.save_path = Path(save_path)
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        if getattr(state, "best_metric_epoch", -1) != state.epoch or idist.get_rank() != 0:
            return
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(unwrap_model(self.network).state_dict(), self.save_path)
        logger.info(
            "saved best model (%s = %.4f at epoch %d) to %s",
            state.key_metric_name,
            float(state.best_metric),
            state.epoch,
            self.save_path,
        )


class TrainingCheckpointer:
    """Keep a full training checkpoint and resume an interrupted run from it.

    The checkpoint holds the network, the optimizer, the learning-rate scheduler, the AMP grad scaler,
    the trainer's state (epoch, iteration) and the evaluator's best metric, so a resumed run goes on
    exactly where the last checkpoint left it and does not overwrite a better ``model.pt`` with a worse
    one. It is written atomically every ``save_interval`` epochs and at the end of training; only rank 0
    writes, every rank reads.

    With ``resume=True`` (one override: ``--resume true``) the checkpoint is loaded when the trainer
    starts; if there is none yet, training starts from scratch with a warning, so a job script can always
    pass ``--resume true``.

    Args:
        save_path: destination, usually ``<bundle_root>/models/checkpoint.pt``.
        network: the trained network (DDP-wrapped or not).
        optimizer: its optimizer.
        lr_scheduler: an optional learning-rate scheduler.
        evaluator: the validation evaluator whose best metric is saved and restored.
        resume: load the checkpoint (if present) when training starts.
        save_interval: save every this many epochs (the final epoch is always saved).
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any | None = None,
        evaluator: Engine | None = None,
        resume: bool = False,
        save_interval: int = 1,
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be a positive number of epochs, got {save_interval!r}.")
        self.save_path = Path(save_path)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.resume = bool(resume)
        self.save_interval = int(save_interval)

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def state_dict(self, engine: Engine) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain Python values (loadable with ``weights_only``)."""
        state: dict[str, Any] = {
            "network": unwrap_model(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {"epoch": engine.state.epoch, "iteration": engine.state.iteration},
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if self.evaluator is not None:
            state["best_metric"] = float(self.evaluator.state.best_metric)
            state["best_metric_epoch"] = int(self.evaluator.state.best_metric_epoch)
        return state

    def save(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(self.state_dict(engine), self.save_path)
        logger.debug("saved training checkpoint (epoch %d) to %s", engine.state.epoch, self.save_path)

    def load(self, engine: Engine) -> None:
        if not self.save_path.is_file():
            logger.warning("resume requested but %s does not exist: training starts from scratch.", self.save_path)
            return
        ckpt = load_checkpoint(self.save_path, map_location="cpu")
        missing = [k for k in ("network", "optimizer", "trainer") if k not in ckpt]
        if missing:
            raise ValueError(f"{self.save_path} is not a training checkpoint: it lacks {missing}.")
        unwrap_model(self.network).load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in ckpt:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        if self.evaluator is not None and "best_metric" in ckpt:
            self.evaluator.state.best_metric = ckpt["best_metric"]
            self.evaluator.state.best_metric_epoch = ckpt["best_metric_epoch"]
        epoch, iteration = int(ckpt["trainer"]["epoch"]), int(ckpt["trainer"]["iteration"])
        if epoch > engine.state.max_epochs:
            raise ValueError(
                f"{self.save_path} was saved at epoch {epoch}, beyond this run's max_epochs "
                f"{engine.state.max_epochs}; raise max_epochs to resume it."
            )
        engine.state.epoch, engine.state.iteration = epoch, iteration
        logger.info("resumed training from %s at epoch %d (iteration %d)", self.save_path, epoch, iteration)
