"""EpochSeeder, RNG state capture and the determinism switch."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import EpochSeeder, configure_determinism
from unet_monai.handlers.seeding import epoch_seeds, get_rng_state, set_rng_state

from .common import make_run, same_tensors


def test_epoch_seeds_depend_only_on_seed_epoch_and_rank():
    assert epoch_seeds(0, 3) == epoch_seeds(0, 3, rank=0)
    seeds = {epoch_seeds(s, e, r) for s in (0, 1) for e in (1, 2) for r in (0, 1)}
    assert len(seeds) == 8  # all different
    global_seed, data_seed = epoch_seeds(0, 1)
    assert global_seed != data_seed and all(0 <= s < 2**32 for s in (global_seed, data_seed))
    with pytest.raises(ValueError, match="non-negative"):
        epoch_seeds(-1, 0)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
    torch.save({"rng": get_rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # noqa: NPY002
    set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # noqa: NPY002


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_epoch_does_not_depend_on_earlier_epochs(num_workers):
    """Epoch 3 sees the same order and augmentation whether the process ran epochs 1-2 or starts at epoch 3."""
    full = make_run(None, num_workers=num_workers)
    full.trainer.run(full.loader, max_epochs=3)
    assert not same_tensors(full.batches[2], full.batches[3])  # epochs do differ from each other

    late = make_run(None, construction_seed=7, num_workers=num_workers)
    late.trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 2))
    late.trainer.run(late.loader, max_epochs=3)
    assert list(late.batches) == [3]
    assert same_tensors(late.batches[3], full.batches[3])


def test_another_seed_gives_another_epoch():
    a, b = make_run(None, seed=0), make_run(None, seed=1)
    for run in (a, b):
        run.trainer.run(run.loader, max_epochs=1)
    assert not same_tensors(a.batches[1], b.batches[1])


def test_without_seeder_a_late_epoch_differs():
    """The control for the test above: without EpochSeeder the construction state leaks into the epoch."""
    full = make_run(None, seed=None)
    full.trainer.run(full.loader, max_epochs=3)
    late = make_run(None, seed=None, construction_seed=7)
    late.trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 2))
    late.trainer.run(late.loader, max_epochs=3)
    assert not same_tensors(late.batches[3], full.batches[3])


def test_persistent_workers_are_reported(caplog):
    with caplog.at_level(logging.WARNING):
        make_run(None, num_workers=1, persistent_workers=True)
    assert "persistent workers" in caplog.text


def test_loader_generator_is_reseeded():
    dataset = list(range(20))
    orders = []
    for construction in (0, 1):
        generator = torch.Generator().manual_seed(construction)
        loader = torch.utils.data.DataLoader(dataset, batch_size=20, shuffle=True, generator=generator)
        engine = Engine(lambda e, b: None)
        engine.data_loader = loader
        seeder = EpochSeeder(seed=3)
        seeder.attach(engine)
        engine.state.epoch = 4
        seeder(engine)
        orders.append(next(iter(loader)).tolist())
    assert orders[0] == orders[1]


@pytest.fixture
def restore_backend_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[:2]
    torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


def test_configure_determinism(restore_backend_flags):
    configure_determinism(True)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    torch.use_deterministic_algorithms(False)
    configure_determinism(False)
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
