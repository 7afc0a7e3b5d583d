"""TrainingHistory: per-epoch records, validation metrics, the PNG, and continuity across a resume."""

from __future__ import annotations

import json

import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import TrainingHistory


class _Loss:
    components = {"focal": torch.tensor(0.5), "iou": torch.tensor(0.25)}


def _trainer() -> Engine:
    return Engine(lambda engine, batch: {"loss": torch.tensor(float(batch))})


def _evaluator(epoch_dice: dict[int, float]) -> Engine:
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        engine.state.metrics = {
            "val_mean_dice": epoch_dice.get(len(epoch_dice), 0.5),
            "per_class": torch.tensor([1.0, 0.0]),
        }

    return evaluator


def test_records_losses_components_and_validation(tmp_path):
    trainer, evaluator = _trainer(), _evaluator({})
    TrainingHistory(tmp_path, evaluator=evaluator, loss_function=_Loss()).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
    trainer.run([1.0, 3.0], max_epochs=2)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2]
    assert history["train"][0]["loss"] == 2.0 and history["train"][0]["focal"] == 0.5
    assert [r["epoch"] for r in history["validation"]] == [1, 2]
    assert history["validation"][0]["per_class"] == [1.0, 0.0]
    assert (tmp_path / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resumed_run_continues_the_previous_history(tmp_path):
    first = _trainer()
    TrainingHistory(tmp_path, plot=False).attach(first)
    first.run([1.0], max_epochs=3)  # epochs 1..3 recorded
    resumed = _trainer()

    @resumed.on(Events.STARTED)
    def _resume_at_epoch_2(engine):  # stands for TrainingCheckpointer, which comes first in train#handlers
        engine.state.epoch, engine.state.iteration = 2, 2

    TrainingHistory(tmp_path, plot=False).attach(resumed)
    resumed.run([1.0], max_epochs=4)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in history["train"]] == [1, 2, 3, 4]
