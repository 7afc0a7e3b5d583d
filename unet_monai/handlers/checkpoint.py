"""Checkpoint handlers: the best model as a plain state_dict, and a full training checkpoint to resume from.

MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver(atomic=False)``, so a crash during a
save can leave a truncated ``model.pt``. These handlers write through
:func:`unet_monai.utils.io.save_torch_atomic` instead (temporary file + rename) and load with
``torch.load(..., weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers.seeding import get_rng_state, set_rng_state
from unet_monai.utils.flags import as_bool
from unet_monai.utils.io import remove_stale_temporaries, save_torch_atomic
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
    the trainer's position (epoch, iteration, epoch length), the evaluator's best metric and the global RNG
    states, so a resumed run goes on exactly where the checkpoint left it and does not overwrite a better
    ``model.pt`` with a worse one. It is written atomically (temporary file + rename, see
    :func:`~unet_monai.utils.io.save_torch_atomic`): a kill or a full disk during a save keeps the previous
    checkpoint (the temporary file a killed save leaves behind is deleted when the next run starts). Only
    rank 0 writes; every rank reads.

    When it is written:

    - every ``save_interval`` epochs, at the end of the epoch (after the learning-rate step and the
      validation of that epoch, when the handlers are listed in the bundles' order), and when training ends;
    - with ``save_interval_iterations > 0``, also every that many iterations inside an epoch (never at an
      epoch's last iteration: the end-of-epoch save covers it).

    Resuming (``resume=True``, one override: ``--resume true``): the checkpoint is loaded when the trainer
    starts. If there is none yet, training starts from scratch with a warning, so a job script can always
    pass ``--resume true``. From an end-of-epoch checkpoint the run continues with the next epoch; with
    :class:`~unet_monai.handlers.EpochSeeder` seeding each epoch from ``(seed, epoch)`` the resumed run
    repeats the uninterrupted run exactly. From a mid-epoch checkpoint the interrupted epoch is replayed:
    its data order is rebuilt, the batches already trained on are loaded and skipped (data loading, no
    training), the global RNG states are restored, and training goes on with the next batch, which again
    reproduces the uninterrupted run. If the epoch length has changed since the save (other data or batch
    size), the interrupted epoch restarts from its first batch instead, with a warning.

    Args:
        save_path: destination, usually ``<bundle_root>/models/checkpoint.pt``.
        network: the trained network (DDP-wrapped or not).
        optimizer: its optimizer.
        lr_scheduler: an optional learning-rate scheduler.
        evaluator: the validation evaluator whose best metric is saved and restored.
        averaged_network: the moving average of the weights kept by
            :class:`~unet_monai.handlers.WeightAveraging` (its ``averaged_network``), saved and restored with the
            rest; ``None`` (no average kept) leaves it out.
        resume: load the checkpoint (if present) when training starts.
        save_interval: save every this many epochs (the final epoch is always saved).
        save_interval_iterations: also save every this many iterations (0: only at epoch ends).

    Raises:
        ValueError: on resume, a checkpoint that is corrupt, truncated, not a training checkpoint, does not fit
            the network, or lies beyond this run's ``max_epochs`` (all naming the file).
        UnsafeCheckpointError: on resume, a checkpoint holding pickled objects other than weights (never run).

    Example::

        TrainingCheckpointer("models/checkpoint.pt", net, opt, lr_scheduler=sched, evaluator=evaluator,
                             resume=True, save_interval_iterations=500).attach(trainer)
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any | None = None,
        evaluator: Engine | None = None,
        averaged_network: torch.nn.Module | None = None,
        resume: bool = False,
        save_interval: int = 1,
        save_interval_iterations: int = 0,
    ) -> None:
        if isinstance(save_interval, bool) or int(save_interval) < 1:
            raise ValueError(f"save_interval must be a positive number of epochs, got {save_interval!r}.")
        if isinstance(save_interval_iterations, bool) or int(save_interval_iterations) < 0:
            raise ValueError(
                "save_interval_iterations must be a number of iterations >= 0 (0: save at epoch ends only), "
                f"got {save_interval_iterations!r}."
            )
        self.save_path = Path(save_path)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.averaged_network = averaged_network
        self.resume = as_bool(resume, "resume")
        self.save_interval = int(save_interval)
        self.save_interval_iterations = int(save_interval_iterations)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._remove_stale_temporaries)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        if self.save_interval_iterations:
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(every=self.save_interval_iterations), self._save_within_epoch
            )
        engine.add_event_handler(Events.COMPLETED, self.save)

    def state_dict(self, engine: Engine) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain Python values (loadable with ``weights_only``).

        ``trainer`` holds ``epoch`` (the number of COMPLETED epochs, also when saved inside an epoch, where
        ignite's ``state.epoch`` already counts the running one), ``iteration`` (all iterations done),
        ``epoch_length`` and ``max_epochs``.
        """
        epoch, iteration, length = engine.state.epoch, engine.state.iteration, engine.state.epoch_length
        if length and iteration < epoch * length:  # saved inside the running epoch
            epoch -= 1
        state: dict[str, Any] = {
            "network": unwrap_model(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {
                "epoch": int(epoch),
                "iteration": int(iteration),
                "epoch_length": None if length is None else int(length),
                "max_epochs": None if engine.state.max_epochs is None else int(engine.state.max_epochs),
            },
            "rng": get_rng_state(),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if self.averaged_network is not None:
            state["averaged_network"] = self.averaged_network.state_dict()
        if self.evaluator is not None:
            state["best_metric"] = float(self.evaluator.state.best_metric)
            state["best_metric_epoch"] = int(self.evaluator.state.best_metric_epoch)
        return state

    def save(self, engine: Engine) -> None:
        """Write the checkpoint atomically (rank 0 only)."""
        if idist.get_rank() != 0:
            return
        self.save_path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(self.state_dict(engine), self.save_path)
        logger.debug(
            "saved training checkpoint (epoch %d, iteration %d) to %s",
            engine.state.epoch,
            engine.state.iteration,
            self.save_path,
        )

    def _remove_stale_temporaries(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        removed = remove_stale_temporaries(self.save_path)
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted checkpoint save", len(removed))

    def _save_within_epoch(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        if length and engine.state.iteration % length == 0:
            return  # the epoch's last iteration: the end-of-epoch save (after LR step and validation) follows
        self.save(engine)

    def load(self, engine: Engine) -> None:
        """Restore the checkpoint into the network, optimizer, scheduler, scaler, evaluator and trainer state."""
        if not self.save_path.is_file():
            logger.warning("resume requested but %s does not exist: training starts from scratch.", self.save_path)
            return
        ckpt = load_checkpoint(self.save_path, map_location="cpu")
        if not isinstance(ckpt, dict):
            raise ValueError(f"{self.save_path} is not a training checkpoint: it holds a {type(ckpt).__name__}.")
        missing = [k for k in ("network", "optimizer", "trainer") if k not in ckpt]
        if missing:
            raise ValueError(f"{self.save_path} is not a training checkpoint: it lacks {missing}.")
        epoch, iteration = int(ckpt["trainer"]["epoch"]), int(ckpt["trainer"]["iteration"])
        saved_length = ckpt["trainer"].get("epoch_length")
        length = engine.state.epoch_length
        done_in_epoch = iteration - epoch * int(saved_length) if saved_length else 0
        if not 0 <= done_in_epoch < (saved_length or 1):
            raise ValueError(
                f"{self.save_path} is inconsistent: iteration {iteration} does not lie in epoch {epoch + 1} "
                f"of length {saved_length}."
            )
        max_epochs = engine.state.max_epochs
        if max_epochs is not None and epoch + (1 if done_in_epoch else 0) > max_epochs:
            raise ValueError(
                f"{self.save_path} was saved at epoch {epoch}"
                + (f" plus {done_in_epoch} iterations" if done_in_epoch else "")
                + f", beyond this run's max_epochs {max_epochs}; raise max_epochs (--epochs) to "
                "resume it, or start a new run without --resume."
            )

        try:
            unwrap_model(self.network).load_state_dict(ckpt["network"])
        except RuntimeError as e:
            raise ValueError(f"the network weights in {self.save_path} do not fit this network: {e}") from e
        if self.averaged_network is not None:
            if "averaged_network" not in ckpt:
                logger.warning(
                    "%s holds no moving average of the weights (saved without it): the average restarts from the "
                    "resumed weights.",
                    self.save_path,
                )
                self.averaged_network.load_state_dict(unwrap_model(self.network).state_dict())
            else:
                try:
                    self.averaged_network.load_state_dict(ckpt["averaged_network"])
                except RuntimeError as e:
                    raise ValueError(
                        f"the averaged network weights in {self.save_path} do not fit this network: {e}"
                    ) from e
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"the optimizer state in {self.save_path} does not fit this optimizer: {e}") from e
        if self.lr_scheduler is not None and "lr_scheduler" in ckpt:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        if self.evaluator is not None and "best_metric" in ckpt:
            self.evaluator.state.best_metric = ckpt["best_metric"]
            self.evaluator.state.best_metric_epoch = ckpt["best_metric_epoch"]

        if length is not None and saved_length is not None and int(saved_length) != int(length) and done_in_epoch:
            logger.warning(
                "%s was saved %d iterations into epoch %d with %d iterations per epoch, but an epoch now has %d "
                "(other data or batch size): epoch %d restarts from its first batch, not exactly resumed.",
                self.save_path,
                done_in_epoch,
                epoch + 1,
                saved_length,
                length,
                epoch + 1,
            )
            done_in_epoch = 0
        engine.state.epoch = epoch
        # ignite counts an epoch's iterations from state.iteration: keep it a multiple of the current length
        engine.state.iteration = epoch * int(length) + done_in_epoch if length else iteration
        # the RNG states are rank 0's (the rank that saved): other DDP ranks keep their own per-epoch streams
        rng = ckpt.get("rng") if idist.get_rank() == 0 else None
        if done_in_epoch:
            engine.state.dataloader = _ReplayedEpoch(engine, engine.state.dataloader, done_in_epoch, rng)
        elif rng is not None:
            set_rng_state(rng)
        if done_in_epoch:
            logger.info(
                "resumed training from %s inside epoch %d: %d of its %d iterations are done (iteration %d); "
                "replaying its data order to go on from there",
                self.save_path,
                epoch + 1,
                done_in_epoch,
                length,
                engine.state.iteration,
            )
        else:
            logger.info(
                "resumed training from %s after epoch %d (iteration %d)", self.save_path, epoch, engine.state.iteration
            )


class _ReplayedEpoch:
    """The training data for the first epoch after a mid-epoch resume: the same batches, minus those done.

    Ignite creates the epoch's iterator after ``EPOCH_STARTED`` (after :class:`EpochSeeder` has re-seeded the
    epoch), through ``iter(engine.state.dataloader)``. This stand-in loads and drops the ``skip`` batches
    the checkpoint had already trained on, which advances the sampler and the transforms' random states
    exactly as the interrupted run did, restores the global RNG states saved with the checkpoint, and hands
    back the real loader's iterator; later epochs iterate the loader itself.
    """

    def __init__(self, engine: Engine, loader: Any, skip: int, rng_state: dict[str, Any] | None) -> None:
        self.engine = engine
        self.loader = loader
        self.skip = skip
        self.rng_state = rng_state

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.engine.state.dataloader = self.loader
        iterator = iter(self.loader)
        for _ in range(self.skip):
            next(iterator)
        if self.rng_state is not None:
            set_rng_state(self.rng_state)
        return iterator
