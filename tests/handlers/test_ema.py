"""WeightAveraging: the average it keeps, BatchNorm statistics, the switch, and an exact resume."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import WeightAveraging

from .common import BATCH_SIZE, NUM_SAMPLES, Killed, make_run, same_tensors

EPOCH_LENGTH = NUM_SAMPLES // BATCH_SIZE

EPOCHS = 3


def test_average_follows_the_weights_with_the_given_momentum(tmp_path):
    momentum = 0.2
    run = make_run(None, ema_momentum=momentum)
    expected = {k: v.clone() for k, v in run.network.state_dict().items()}

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def _track(engine: Engine) -> None:  # registered after the handler: sees the weights it averaged
        for key, value in run.network.state_dict().items():
            expected[key].mul_(1 - momentum).add_(value, alpha=momentum)

    run.trainer.run(run.loader, max_epochs=2)
    averaged = run.averaging.averaged_network.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value)
    assert not same_tensors(averaged, run.network.state_dict())  # an average, not a copy of the last weights
    assert run.averaging.evaluation_network is run.averaging.averaged_network


def test_batch_norm_statistics_are_averaged_too():
    network = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 1), torch.nn.BatchNorm1d(2))
    averaging = WeightAveraging(network, momentum=0.5)
    trainer = Engine(lambda engine, batch: network.train()(batch))
    averaging.attach(trainer)
    trainer.run([torch.full((4, 1, 3), 10.0)], max_epochs=1)
    live = network[1].running_mean
    # one update of momentum 0.5 from the initial statistics (zeros)
    torch.testing.assert_close(averaging.averaged_network[1].running_mean, 0.5 * live)
    assert not averaging.averaged_network.training  # the average is for evaluation


def test_warm_up_starts_with_the_larger_momentum():
    network = torch.nn.Linear(2, 1)
    averaging = WeightAveraging(network, momentum=0.01, warmup_momentum=0.5, warmup_iterations=10)
    trainer = Engine(lambda engine, batch: None)
    averaging.attach(trainer)
    seen: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.ema_momentum))
    trainer.run(range(20), max_epochs=1)
    assert seen[0] == pytest.approx(0.5)
    assert seen[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(seen))


def test_disabled_keeps_no_average_and_evaluates_the_network():
    network = torch.nn.Linear(2, 1)
    averaging = WeightAveraging(network, momentum=0.1, enabled="false")  # a command line's string
    trainer = Engine(lambda engine, batch: None)
    averaging.attach(trainer)
    trainer.run(range(3), max_epochs=1)
    assert averaging.averaged_network is None
    assert averaging.evaluation_network is network
    assert not hasattr(trainer.state, "ema_momentum")


def test_a_wrapped_network_is_averaged_unwrapped():
    network = torch.nn.Linear(2, 1)
    averaging = WeightAveraging(torch.nn.DataParallel(network), momentum=0.1)
    assert set(averaging.averaged_network.state_dict()) == set(network.state_dict())  # no "module." prefix


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"momentum": 0.0}, "momentum must lie in"),
        ({"momentum": 1.0}, "momentum must lie in"),
        ({"momentum": True}, "momentum must lie in"),
        ({"warmup_momentum": 1.5, "warmup_iterations": 5}, "warmup_momentum must lie in"),
        ({"warmup_iterations": -1}, "warmup_iterations must be"),
        ({"enabled": "maybe"}, "enabled"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightAveraging(torch.nn.Linear(2, 1), **kwargs)


def test_resume_after_a_crash_continues_the_average_exactly(tmp_path):
    reference = make_run(None, ema_momentum=0.2)
    reference.trainer.run(reference.loader, max_epochs=EPOCHS)
    path = tmp_path / "checkpoint.pt"
    crashed = make_run(path, ema_momentum=0.2, kill_at_iteration=EPOCH_LENGTH + 3)
    with pytest.raises(Killed):
        crashed.trainer.run(crashed.loader, max_epochs=EPOCHS)
    assert "averaged_network" in torch.load(path, weights_only=True)
    resumed = make_run(path, ema_momentum=0.2, construction_seed=99, resume=True)
    resumed.trainer.run(resumed.loader, max_epochs=EPOCHS)
    assert same_tensors(resumed.network.state_dict(), reference.network.state_dict())
    averaged = resumed.averaging.averaged_network.state_dict()
    assert same_tensors(averaged, reference.averaging.averaged_network.state_dict())


def test_checkpoint_without_an_average_restarts_it_from_the_weights_with_a_warning(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    first = make_run(path, ema_momentum=0.2, checkpoint_average=False)
    first.trainer.run(first.loader, max_epochs=1)
    assert "averaged_network" not in torch.load(path, weights_only=True)
    resumed = make_run(path, ema_momentum=0.2, construction_seed=99, resume=True)
    loaded: dict[str, torch.Tensor] = {}
    resumed.trainer.add_event_handler(
        Events.STARTED, lambda e: loaded.update(resumed.averaging.averaged_network.state_dict())
    )
    with caplog.at_level(logging.WARNING):
        resumed.trainer.run(resumed.loader, max_epochs=1)  # the checkpoint is at max_epochs: loads, trains nothing
    assert "holds no moving average" in caplog.text and str(path) in caplog.text
    assert same_tensors(loaded, first.network.state_dict())


def test_average_starts_from_weights_loaded_when_training_starts():
    """A CheckpointLoader of pretrained weights runs at STARTED before it: the average starts there."""
    network = torch.nn.Linear(2, 1)
    pretrained = {"weight": torch.full((1, 2), 3.0), "bias": torch.full((1,), -1.0)}
    trainer = Engine(lambda engine, batch: None)  # no training: the average stays where it started
    trainer.add_event_handler(Events.STARTED, lambda e: network.load_state_dict(pretrained))
    averaging = WeightAveraging(network, momentum=0.1)  # built from the initialization
    averaging.attach(trainer)
    trainer.run(range(2), max_epochs=1)
    torch.testing.assert_close(dict(averaging.averaged_network.state_dict()), pretrained)
