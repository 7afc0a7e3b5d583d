"""compile_network: torch.compile in place, same outputs as eager, clean fall-back when compiling fails."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from unet_monai.bundle.compile import compile_network, is_compiled
from unet_monai.networks import UNet3Plus, UNetPlusPlus


def _tiny(name: str, spatial_dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "unetplusplus":
        return UNetPlusPlus(spatial_dims, 1, 2, features=(4, 4, 8, 8, 8), deep_supervision=True)
    return UNet3Plus(spatial_dims, 1, 2, features=(4, 4, 8, 8, 8), deep_supervision=True)


def test_disabled_returns_the_network_untouched():
    net = _tiny("unetplusplus")
    assert compile_network(net, enabled=False) is net
    assert not is_compiled(net)
    assert "forward" not in net.__dict__


@pytest.mark.parametrize("name", ["unetplusplus", "unet3plus"])
def test_compiled_network_matches_eager_and_keeps_its_state_dict(name):
    """aot_eager traces and runs the same graph machinery as inductor, without generating C++ (fast)."""
    net = _tiny(name)
    ref = copy.deepcopy(net)
    keys = list(net.state_dict())
    assert compile_network(net, backend="aot_eager") is net
    assert is_compiled(net)
    assert list(net.state_dict()) == keys  # no "_orig_mod." prefix: checkpoint handlers save the same keys
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in net.state_dict())
    x = torch.randn(2, 1, 32, 32)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        getattr(ref, mode)()
        out, expected = net(x), ref(x)
        out = out if isinstance(out, list) else [out]
        expected = expected if isinstance(expected, list) else [expected]
        assert len(out) == len(expected)
        for a, b in zip(out, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert is_compiled(net)  # no fall-back happened


@pytest.mark.slow
def test_inductor_gives_eager_outputs_and_gradients():
    """The default backend, as the bundles use it (generates and builds C++ on CPU: ~30 s)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    ref = copy.deepcopy(net)
    compile_network(net)
    x = torch.randn(2, 1, 16, 16)
    out, expected = net(x), ref(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    scale = float(ref[0].weight.grad.abs().max())
    # the batch-norm backward sums cancel, so the fused kernels differ from eager by float rounding only
    torch.testing.assert_close(net[0].weight.grad, ref[0].weight.grad, rtol=1e-3, atol=1e-4 * scale)
    assert is_compiled(net)


def test_failure_at_build_falls_back_with_a_warning(caplog):
    net = _tiny("unetplusplus").eval()
    with caplog.at_level(logging.WARNING, logger="unet_monai.bundle.compile"):
        assert compile_network(net, backend="no_such_backend") is net
    assert "could not be set up" in caplog.text
    assert not is_compiled(net)
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("forced compiler failure")


def test_failure_at_the_first_call_falls_back_to_eager(caplog):
    net = _tiny("unet3plus").eval()
    ref = copy.deepcopy(net)
    compile_network(net, backend=_failing_backend)
    assert is_compiled(net)
    x = torch.randn(1, 1, 32, 32)
    with caplog.at_level(logging.WARNING, logger="unet_monai.bundle.compile"):
        out = net(x)
    assert "falling back to eager" in caplog.text and "forced compiler failure" in caplog.text
    torch.testing.assert_close(out, ref(x))
    assert not is_compiled(net)  # eager for good: no retry at every call
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unet_monai.bundle.compile"):
        torch.testing.assert_close(net(x), ref(x))
    assert caplog.text == ""


def test_an_input_error_is_raised_and_compiling_stays_on():
    net = _tiny("unetplusplus").eval()
    compile_network(net, backend="aot_eager")
    with pytest.raises(ValueError, match="input channel"):
        net(torch.randn(1, 3, 16, 16))
    assert is_compiled(net)


def test_metatensor_inputs_and_wrappers():
    from monai.data import MetaTensor

    net = _tiny("unetplusplus").eval()
    ref = copy.deepcopy(net)
    wrapped = torch.nn.DataParallel(net)  # moves the network to cuda:0 where a GPU is present
    device = next(net.parameters()).device
    ref.to(device)
    assert compile_network(wrapped, backend="aot_eager") is wrapped
    assert is_compiled(wrapped) and is_compiled(net)
    assert compile_network(net, backend="aot_eager") is net  # a second call changes nothing
    x = MetaTensor(torch.randn(1, 1, 16, 16, device=device))
    torch.testing.assert_close(torch.as_tensor(net(x)), ref(x.as_tensor()))
    assert not is_compiled(copy.deepcopy(net))  # a deep copy runs eagerly, on its own parameters
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    assert not torch.equal(clone(x.as_tensor()), net(x.as_tensor()))


BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
BUNDLE_NAMES = sorted(p.parent.parent.name for p in BUNDLES_DIR.glob("*/configs/metadata.json"))


@pytest.mark.parametrize("config", ["train.json", "inference.json", "multi_gpu_train.json"])
@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_bundle_compile_flag(name, config):
    """Every bundle has a ``compile`` id (default false) that compiles ``@network`` in place, same state_dict."""
    configs = BUNDLES_DIR / name / "configs"
    files = [configs / "train.json", configs / config] if config == "multi_gpu_train.json" else [configs / config]
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    assert parser["compile"] is False
    if config == "multi_gpu_train.json":  # the DDP wrapper needs a process group: check the wrapped module
        parser["network"] = parser["network"]["module"]
    parser["device"] = "$torch.device('cpu')"
    eager = parser.get_parsed_content("network", instantiate=True)
    assert not is_compiled(eager)
    parser["compile"] = True
    parser.ref_resolver.reset()
    compiled = parser.get_parsed_content("network", instantiate=True, lazy=False)
    assert is_compiled(compiled)  # torch.compile is lazy: nothing is compiled before the first forward
    assert list(compiled.state_dict()) == list(eager.state_dict())
