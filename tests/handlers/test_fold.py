"""FoldBatchNorm: folded while an inference engine runs, the checkpoint's network again afterwards."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader
from monai.inferers import SimpleInferer
from torch.nn.modules.batchnorm import _BatchNorm

from unet_monai.handlers import FoldBatchNorm
from unet_monai.networks import UNetPlusPlus


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 8, 16, 16))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _evaluator(net: torch.nn.Module, handlers: list) -> SupervisedEvaluator:
    data = [{"image": torch.rand(1, 1, 16, 16), "label": torch.zeros(1, 1, 16, 16)} for _ in range(2)]
    return SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=data, network=net, inferer=SimpleInferer(), val_handlers=handlers
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_folded_during_the_run_restored_after_and_a_second_run_reloads(tmp_path, enabled):
    net = _net()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    keys = set(net.state_dict())
    ref = net.eval()(torch.ones(1, 1, 16, 16)).detach()
    seen = []
    evaluator = _evaluator(
        net,
        [CheckpointLoader(load_path=str(path), load_dict={"model": net}), FoldBatchNorm(net, enabled=enabled)],
    )

    @evaluator.on(Events.ITERATION_COMPLETED)
    def count(engine):
        seen.append(sum(isinstance(m, _BatchNorm) for m in net.modules()))

    for _ in range(2):  # the second run's CheckpointLoader needs the original state_dict keys
        evaluator.run()
    n_bn = sum(isinstance(m, _BatchNorm) for m in net.modules())
    assert seen == ([0] * 4 if enabled else [n_bn] * 4)
    assert set(net.state_dict()) == keys
    assert torch.equal(net(torch.ones(1, 1, 16, 16)), ref)


def test_restored_when_the_run_fails():
    net = _net()
    n_bn = sum(isinstance(m, _BatchNorm) for m in net.modules())
    evaluator = _evaluator(net, [FoldBatchNorm(net)])

    @evaluator.on(Events.ITERATION_COMPLETED)
    def fail(engine):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        evaluator.run()
    assert sum(isinstance(m, _BatchNorm) for m in net.modules()) == n_bn
