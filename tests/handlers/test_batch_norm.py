"""Precise BatchNorm: recomputed running statistics, restored modes, the hook before validation."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.inferers import SimpleInferer

from unet_monai.handlers import PreciseBatchNorm, recompute_batch_norm_stats
from unet_monai.networks import UNetPlusPlus


def _data(n: int = 8, shift: float = 3.0, scale: float = 2.0, spatial_dims: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    size = (1,) + (8,) * spatial_dims
    return [
        {"image": torch.randn(size, generator=g) * scale + shift, "label": torch.randint(0, 2, size, generator=g)}
        for _ in range(n)
    ]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 1, bias=False)
    torch.nn.init.ones_(conv.weight)  # every channel equals the input: its statistics are the data's
    return torch.nn.Sequential(
        conv, torch.nn.BatchNorm2d(4, momentum=0.01), torch.nn.Dropout(0.5), torch.nn.Conv2d(4, 2, 1)
    )


def test_statistics_become_the_datas_mean_and_variance():
    data = _data()
    net = _net().eval()
    bn = net[1]
    assert torch.allclose(bn.running_mean, torch.zeros(4))  # stale: never trained
    used = recompute_batch_norm_stats(net, DataLoader(Dataset(data), batch_size=2), num_batches=None)
    assert used == 4
    images = torch.stack([d["image"] for d in data])
    # cumulative average of per-batch means / unbiased variances (equal batch sizes)
    batches = images.reshape(4, -1)
    assert torch.allclose(bn.running_mean, batches.mean(1).mean().expand(4), atol=1e-5)
    assert torch.allclose(bn.running_var, batches.var(1).mean().expand(4), atol=1e-4)
    assert abs(bn.running_mean[0].item() - 3.0) < 0.3 and abs(bn.running_var[0].item() - 4.0) < 0.6
    # modes and momentum restored: eval everywhere, momentum back to 0.01
    assert not any(m.training for m in net.modules())
    assert bn.momentum == 0.01


def test_dropout_is_off_while_measuring_and_training_mode_is_restored():
    net = _net().train()
    seen = []
    net[2].register_forward_hook(lambda m, i, o: seen.append(m.training))
    recompute_batch_norm_stats(net, DataLoader(Dataset(_data()), batch_size=4), num_batches=1)
    assert seen == [False]
    assert all(m.training for m in net.modules())


def test_num_batches_limits_the_pass_and_bad_values_are_refused():
    net = _net()
    loader = DataLoader(Dataset(_data()), batch_size=2)
    assert recompute_batch_norm_stats(net, loader, num_batches=3) == 3
    drawn = []

    def counting():
        for batch in loader:
            drawn.append(batch)
            yield batch

    recompute_batch_norm_stats(net, counting(), num_batches=2)
    assert len(drawn) == 2  # no batch loaded beyond num_batches
    with pytest.raises(ValueError, match="num_batches"):
        recompute_batch_norm_stats(net, loader, num_batches=0)
    with pytest.raises(ValueError, match="no batch"):
        recompute_batch_norm_stats(net, [], num_batches=None)
    with pytest.raises(ValueError, match="num_batches"):
        PreciseBatchNorm(validator=None, num_batches=-1)


def test_a_network_without_batch_norm_is_left_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.InstanceNorm2d(2, track_running_stats=False))
    assert recompute_batch_norm_stats(net, [object()]) == 0  # nothing run, not even the batch


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_handler_recomputes_before_each_validation_of_a_monai_training(spatial_dims):
    """With momentum 0.01 and 2 iterations, the running mean stays near 0; recomputed, it is the data's."""
    data = _data(n=4, spatial_dims=spatial_dims)
    torch.manual_seed(0)
    net = UNetPlusPlus(spatial_dims=spatial_dims, in_channels=1, out_channels=2, features=(2, 2, 2, 2, 2))
    first_bn = next(m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.01
    loader = DataLoader(Dataset(data), batch_size=2)
    means: list[torch.Tensor] = []
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data[:1]), batch_size=1),
        network=net,
        inferer=SimpleInferer(),
    )
    evaluator.add_event_handler(Events.STARTED, lambda e: means.append(first_bn.running_mean.clone()))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),  # weights fixed: the statistics are comparable
        loss_function=lambda pred, label: (pred[0] if isinstance(pred, (list, tuple)) else pred).mean(),
        train_handlers=[PreciseBatchNorm(evaluator, num_batches=None)],
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run())
    stale = first_bn.running_mean.clone()
    trainer.run()
    assert len(means) == 2  # before both validations
    # what the first conv + BN sees: recompute by hand on the whole training set, compare
    expected = _net_first_layer_mean(net, data)
    assert torch.allclose(means[-1], expected, atol=1e-4)
    assert not torch.allclose(stale, expected, atol=1e-2)
    assert first_bn.momentum == 0.01


def _net_first_layer_mean(net: torch.nn.Module, data: list[dict]) -> torch.Tensor:
    conv = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    with torch.no_grad():
        out = conv(torch.stack([d["image"] for d in data]))
    return out.transpose(0, 1).reshape(out.shape[1], -1).mean(1)


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        net = _net()
        data = _data(n=4, shift=float(rank * 10))  # rank 0 around 0, rank 1 around 10
        recompute_batch_norm_stats(net, DataLoader(Dataset(data), batch_size=2), num_batches=None)
        torch.save(net[1].running_mean, f"{out_dir}/mean{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_end_with_the_average_of_their_statistics(tmp_path):
    torch.multiprocessing.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    means = [torch.load(tmp_path / f"mean{r}.pt", weights_only=True) for r in (0, 1)]
    own = [torch.stack([d["image"] for d in _data(n=4, shift=float(r * 10))]).mean() for r in (0, 1)]
    assert torch.equal(means[0], means[1])  # every rank holds the same statistics
    assert torch.allclose(means[0], ((own[0] + own[1]) / 2).expand(4), atol=1e-4)
