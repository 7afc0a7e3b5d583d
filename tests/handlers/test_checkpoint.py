"""TrainingCheckpointer and BestModelSaver: what is saved when, exact resume, and every way a resume can go wrong."""

from __future__ import annotations

import errno
import logging
import os
import pickle

import pytest
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import BestModelSaver, TrainingCheckpointer
from unet_monai.handlers import checkpoint as checkpoint_module
from unet_monai.utils.serialization import UnsafeCheckpointError

from .common import BATCH_SIZE, NUM_SAMPLES, Killed, make_run, same_tensors

EPOCH_LENGTH = NUM_SAMPLES // BATCH_SIZE
EPOCHS = 3


class _RunsCode:
    """Unpickling this would create a marker file: it stands for any code a crafted checkpoint could run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_content_loads_with_weights_only(tmp_path):
    run = make_run(tmp_path / "checkpoint.pt")
    run.trainer.run(run.loader, max_epochs=2)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"network", "optimizer", "lr_scheduler", "trainer", "rng", "best_metric", "best_metric_epoch"}
    assert ckpt["trainer"] == {"epoch": 2, "iteration": 2 * EPOCH_LENGTH, "epoch_length": EPOCH_LENGTH, "max_epochs": 2}
    assert ckpt["best_metric"] == 2.0 and ckpt["best_metric_epoch"] == 2
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert same_tensors(ckpt["network"], run.network.state_dict())


def test_iteration_checkpoints_skip_the_epoch_end(tmp_path, monkeypatch):
    """Inside an epoch every N iterations; at the epoch's last iteration only the end-of-epoch save (after LR step)."""
    saves: list[tuple[str, int, int]] = []
    run = make_run(tmp_path / "checkpoint.pt", save_interval_iterations=2)
    original = TrainingCheckpointer.state_dict

    def recording(self, engine):
        state = original(self, engine)
        saves.append((engine.last_event_name.name, state["trainer"]["epoch"], state["trainer"]["iteration"]))
        return state

    monkeypatch.setattr(TrainingCheckpointer, "state_dict", recording)
    run.trainer.run(run.loader, max_epochs=2)
    assert saves == [
        ("ITERATION_COMPLETED", 0, 2),
        ("ITERATION_COMPLETED", 0, 4),
        ("EPOCH_COMPLETED", 1, 5),
        ("ITERATION_COMPLETED", 1, 6),
        ("ITERATION_COMPLETED", 1, 8),
        ("EPOCH_COMPLETED", 2, 10),  # iteration 10 is epoch 2's last: no ITERATION_COMPLETED save
        ("COMPLETED", 2, 10),
    ]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    "save_interval_iterations, kill_at, expected",
    [(0, EPOCH_LENGTH + 3, (1, 5)), (1, EPOCH_LENGTH + 3, (1, 8)), (2, 2 * EPOCH_LENGTH + 3, (2, 12))],
    ids=["epoch-checkpoint", "mid-epoch-checkpoint", "mid-epoch-every-2"],
)
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(
    tmp_path, num_workers, save_interval_iterations, kill_at, expected
):
    reference = make_run(None, num_workers=num_workers)
    reference.trainer.run(reference.loader, max_epochs=EPOCHS)

    path = tmp_path / "checkpoint.pt"
    crashed = make_run(
        path, save_interval_iterations=save_interval_iterations, num_workers=num_workers, kill_at_iteration=kill_at
    )
    with pytest.raises(Killed):
        crashed.trainer.run(crashed.loader, max_epochs=EPOCHS)
    saved = torch.load(path, weights_only=True)["trainer"]
    assert (saved["epoch"], saved["iteration"]) == expected

    # a new "process": different construction state, same seed, --resume true
    resumed = make_run(path, construction_seed=99, resume=True, num_workers=num_workers)
    resumed.trainer.run(resumed.loader, max_epochs=EPOCHS)
    assert resumed.trainer.state.iteration == EPOCHS * EPOCH_LENGTH
    assert same_tensors(resumed.network.state_dict(), reference.network.state_dict())
    assert same_tensors(resumed.optimizer.state_dict(), reference.optimizer.state_dict())
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()
    # the resumed run trained on exactly the batches the reference trained on after the checkpoint
    done = saved["iteration"] - saved["epoch"] * EPOCH_LENGTH
    first = saved["epoch"] + 1
    assert same_tensors(resumed.batches[first], reference.batches[first][done:])
    for epoch in range(first + 1, EPOCHS + 1):
        assert same_tensors(resumed.batches[epoch], reference.batches[epoch])


def test_resume_without_epoch_seeder_is_not_exact(tmp_path):
    """The control: the same crash and resume without per-epoch seeding gives other weights."""
    reference = make_run(None, seed=None)
    reference.trainer.run(reference.loader, max_epochs=EPOCHS)
    path = tmp_path / "checkpoint.pt"
    crashed = make_run(path, seed=None, kill_at_iteration=EPOCH_LENGTH + 3)
    with pytest.raises(Killed):
        crashed.trainer.run(crashed.loader, max_epochs=EPOCHS)
    resumed = make_run(path, seed=None, construction_seed=99, resume=True)
    resumed.trainer.run(resumed.loader, max_epochs=EPOCHS)
    assert not same_tensors(resumed.network.state_dict(), reference.network.state_dict())


def test_missing_checkpoint_warns_and_starts_from_scratch(tmp_path, caplog):
    run = make_run(tmp_path / "checkpoint.pt", resume=True)
    with caplog.at_level(logging.WARNING):
        run.trainer.run(run.loader, max_epochs=1)
    assert "does not exist: training starts from scratch" in caplog.text
    assert run.trainer.state.iteration == EPOCH_LENGTH
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["trainer"]["epoch"] == 1


def _saved_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    run = make_run(path)
    run.trainer.run(run.loader, max_epochs=2)
    return path


@pytest.mark.parametrize(
    "damage, error, match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), ValueError, "truncated or not a PyTorch"),
        (lambda p: p.write_bytes(b""), ValueError, "is empty"),
        (lambda p: p.write_bytes(b"\x80\x02garbage"), UnsafeCheckpointError, "not a plain-weights file"),
        (lambda p: torch.save(torch.nn.Linear(4, 8).state_dict(), p), ValueError, "is not a training checkpoint"),
        (lambda p: torch.save([1, 2], p), ValueError, "is not a training checkpoint"),
    ],
    ids=["truncated", "empty", "garbage", "plain-state-dict", "a-list"],
)
def test_bad_checkpoint_fails_naming_the_file_and_changes_nothing(tmp_path, damage, error, match):
    path = _saved_checkpoint(tmp_path)
    damage(path)
    run = make_run(path, resume=True, construction_seed=5)
    before = {k: v.clone() for k, v in run.network.state_dict().items()}
    with pytest.raises(error, match=match) as info:
        run.trainer.run(run.loader, max_epochs=3)
    assert "checkpoint.pt" in str(info.value)
    assert run.trainer.state.iteration == 0  # no training happened
    assert same_tensors(run.network.state_dict(), before)


def test_crafted_checkpoint_is_refused_and_its_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as f:
        pickle.dump({"network": _RunsCode(str(marker)), "optimizer": {}, "trainer": {}}, f)
    run = make_run(path, resume=True)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load .*checkpoint\.pt"):
        run.trainer.run(run.loader, max_epochs=3)
    assert not marker.exists()
    # and the torch.save form of the same attack
    torch.save({"network": {}, "optimizer": {}, "trainer": {}, "x": _RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"holds pickled code \(posix\.system\)"):
        make_run(path, resume=True).trainer.run(run.loader, max_epochs=3)
    assert not marker.exists()


def test_checkpoint_beyond_max_epochs_is_a_clear_error(tmp_path):
    path = _saved_checkpoint(tmp_path)  # 2 epochs done
    run = make_run(path, resume=True)
    with pytest.raises(ValueError, match=r"saved at epoch 2, beyond this run's max_epochs 1; raise max_epochs"):
        run.trainer.run(run.loader, max_epochs=1)


def test_mid_epoch_checkpoint_beyond_max_epochs_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    crashed = make_run(path, save_interval_iterations=1, kill_at_iteration=EPOCH_LENGTH + 2)
    with pytest.raises(Killed):
        crashed.trainer.run(crashed.loader, max_epochs=3)
    run = make_run(path, resume=True)
    with pytest.raises(ValueError, match=r"saved at epoch 1 plus 2 iterations, beyond this run's max_epochs 1"):
        run.trainer.run(run.loader, max_epochs=1)


def test_checkpoint_at_max_epochs_resumes_to_a_finished_run(tmp_path):
    path = _saved_checkpoint(tmp_path)
    run = make_run(path, resume=True)
    run.trainer.run(run.loader, max_epochs=2)
    assert run.batches == {} and run.trainer.state.epoch == 2
    # the evaluator's best metric is restored, so a later validation cannot replace a better model.pt
    assert run.evaluator.state.best_metric == 2.0 and run.evaluator.state.best_metric_epoch == 2


def test_checkpoint_of_another_network_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    other = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(other.parameters())
    trainer = {"epoch": 1, "iteration": 5}
    torch.save({"network": other.state_dict(), "optimizer": opt.state_dict(), "trainer": trainer}, path)
    run = make_run(path, resume=True)
    with pytest.raises(ValueError, match=r"network weights in .*checkpoint\.pt do not fit this network"):
        run.trainer.run(run.loader, max_epochs=3)


def test_changed_epoch_length_restarts_the_interrupted_epoch(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    crashed = make_run(path, save_interval_iterations=1, kill_at_iteration=EPOCH_LENGTH + 2)
    with pytest.raises(Killed):
        crashed.trainer.run(crashed.loader, max_epochs=3)
    run = make_run(path, resume=True, num_samples=NUM_SAMPLES + 2 * BATCH_SIZE)  # 7 iterations per epoch now
    with caplog.at_level(logging.WARNING):
        run.trainer.run(run.loader, max_epochs=3)
    assert "epoch 2 restarts from its first batch" in caplog.text
    assert [len(run.batches[e]) for e in (2, 3)] == [7, 7]
    assert run.trainer.state.iteration == 3 * 7


def test_save_interrupted_by_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = _saved_checkpoint(tmp_path)
    previous = path.read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # half of it made it to disk
            fh.truncate(os.path.getsize(f) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    run = make_run(path)
    with pytest.raises(OSError, match="No space left"):
        run.trainer.run(run.loader, max_epochs=1)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_stale_temporary_files_are_removed_when_training_starts(tmp_path):
    path = _saved_checkpoint(tmp_path)
    stale = tmp_path / ".checkpoint.pt.abc123.tmp.pt"  # what a SIGKILL during a save leaves
    stale.write_bytes(b"partial")
    unrelated = tmp_path / ".model.pt.abc123.tmp.pt"
    unrelated.write_bytes(b"partial")
    run = make_run(path)
    run.trainer.run(run.loader, max_epochs=1)
    assert not stale.exists() and unrelated.exists()


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module.idist, "get_rank", lambda: 1)
    run = make_run(tmp_path / "checkpoint.pt")
    run.trainer.run(run.loader, max_epochs=1)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"save_interval": 0}, "save_interval must be"), ({"save_interval_iterations": -1}, "save_interval_iterations")],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=match):
        TrainingCheckpointer(tmp_path / "c.pt", net, torch.optim.SGD(net.parameters(), lr=0.1), **kwargs)


def test_best_model_saver_writes_plain_state_dict_on_improvement_only(tmp_path):
    net = torch.nn.Linear(2, 2)
    evaluator = Engine(lambda e, b: None)
    BestModelSaver(tmp_path / "model.pt", net).attach(evaluator)
    evaluator.state.key_metric_name = "val_mean_dice"
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 0.5, 1
    evaluator.state.epoch = 1
    evaluator.fire_event(Events.EPOCH_COMPLETED)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert same_tensors(saved, net.state_dict())
    evaluator.state.epoch = 2  # best metric still from epoch 1: nothing written
    with torch.no_grad():
        net.weight.add_(1.0)
    evaluator.fire_event(Events.EPOCH_COMPLETED)
    assert same_tensors(torch.load(tmp_path / "model.pt", weights_only=True), saved)
