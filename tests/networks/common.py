"""Checks shared by the network tests: every network must pass them in 2D and 3D."""

from __future__ import annotations

import io

import torch


def count_parameters(net: torch.nn.Module) -> int:
    """Trainable parameters, as Keras counts "trainable params" (running statistics excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def parameters_without_grad(net: torch.nn.Module, loss: torch.Tensor) -> list[str]:
    """Back-propagate ``loss`` and return the names of parameters that received no (or a zero) gradient."""
    net.zero_grad(set_to_none=True)
    loss.backward()
    return [name for name, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]


def scripted_roundtrip(net: torch.nn.Module) -> torch.jit.ScriptModule:
    """Script ``net`` the way ``monai.bundle ckpt_export`` does, save it and load it back."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)
