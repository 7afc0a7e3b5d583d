"""A tiny, fully random training loop on plain ignite, for the checkpoint and seeding handler tests.

Everything random that a bundle training has is here too: a shuffled MONAI DataLoader (optionally with
workers), a MONAI random transform, dropout in the network; plus AdamW and a step scheduler whose state
must survive a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import RandGaussianNoised

from unet_monai.handlers import EpochSeeder, TrainingCheckpointer, WeightAveraging

NUM_SAMPLES = 10
BATCH_SIZE = 2  # 5 iterations per epoch


class Killed(Exception):
    """Stands for the process dying: raised from a handler, it ends the run where it is."""


@dataclass
class Run:
    trainer: Engine
    evaluator: Engine
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DataLoader
    checkpointer: TrainingCheckpointer | None
    averaging: WeightAveraging | None = None
    batches: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # epoch -> the batches it trained on


def make_run(
    path: Path | None,
    *,
    construction_seed: int = 0,
    seed: int | None = 0,
    resume: bool = False,
    save_interval_iterations: int = 0,
    num_workers: int = 0,
    num_samples: int = NUM_SAMPLES,
    kill_at_iteration: int | None = None,
    persistent_workers: bool = False,
    ema_momentum: float | None = None,
    checkpoint_average: bool = True,
) -> Run:
    """Build a fresh training run, as a new process would.

    ``construction_seed`` seeds everything built here (network initialisation, the DataLoader's one-off
    seeding of the transforms), standing for a process whose state differs from the interrupted one's;
    ``seed=None`` leaves out the :class:`EpochSeeder`; ``ema_momentum`` keeps a :class:`WeightAveraging` of the
    weights, saved with the checkpoint unless ``checkpoint_average=False``.
    """
    torch.manual_seed(construction_seed)
    network = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    dataset = Dataset(
        [{"x": torch.full((4,), float(i))} for i in range(num_samples)], transform=RandGaussianNoised("x", prob=1.0)
    )
    loader = DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=persistent_workers,
    )

    def step(engine: Engine, batch: dict) -> float:
        network.train()
        optimizer.zero_grad()
        loss = network(batch["x"]).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    trainer.data_loader = loader  # what MONAI workflows expose, and EpochSeeder looks for
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1.0, -1
    run = Run(trainer, evaluator, network, optimizer, scheduler, loader, None)

    if seed is not None:
        EpochSeeder(seed=seed).attach(trainer)
    if ema_momentum is not None:
        run.averaging = WeightAveraging(network, momentum=ema_momentum)
        run.averaging.attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Engine) -> None:
        run.batches.setdefault(engine.state.epoch, []).append(engine.state.batch["x"].clone())

    @trainer.on(Events.EPOCH_COMPLETED)
    def _schedule_and_validate(engine: Engine) -> None:
        scheduler.step()
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = float(engine.state.epoch), engine.state.epoch

    if path is not None:
        run.checkpointer = TrainingCheckpointer(
            path,
            network,
            optimizer,
            lr_scheduler=scheduler,
            evaluator=evaluator,
            averaged_network=run.averaging.averaged_network if run.averaging and checkpoint_average else None,
            resume=resume,
            save_interval_iterations=save_interval_iterations,
        )
        run.checkpointer.attach(trainer)
    if kill_at_iteration is not None:

        @trainer.on(Events.ITERATION_COMPLETED(once=kill_at_iteration))
        def _kill(engine: Engine) -> None:
            raise Killed(f"killed at iteration {engine.state.iteration}")

    return run


def same_tensors(a: dict, b: dict) -> bool:
    """Bitwise equality of two (nested) state dicts."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b
