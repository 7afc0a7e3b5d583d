"""Optional ``torch.compile`` of a bundle's network, with a clean fall-back to eager execution."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from unet_monai.utils.flags import as_bool

__all__ = ["compile_network", "is_compiled"]

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """A MONAI ``MetaTensor`` as a plain tensor (torch.compile traces plain tensors; pytorch/pytorch#117026)."""
    as_tensor = getattr(value, "as_tensor", None)
    return as_tensor() if isinstance(value, torch.Tensor) and callable(as_tensor) else value


def _summary(error: BaseException, limit: int = 400) -> str:
    """The first lines of an error message on one line (dynamo's messages run over many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " | ".join(lines[:3])
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _CompiledForward:
    """Instance-level ``forward`` of a module: the compiled forward, or the eager one once compiling failed.

    Held in ``module.__dict__["forward"]``, so ``module(x)`` still runs the module's hooks and then
    this callable. On an exception from the compiled call the eager forward runs the same inputs:
    when it succeeds, compiling is what failed, so a warning is logged and the eager forward is put
    back for good (the instance attribute is removed); when it fails too, the input was at fault and
    the eager error is raised, with compiling left on.
    """

    def __init__(self, module: torch.nn.Module, compiled: Callable[..., Any], description: str) -> None:
        self.module = module
        self.compiled = compiled
        self.description = description

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).forward(self.module, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*(_plain(a) for a in args), **{k: _plain(v) for k, v in kwargs.items()})
        except Exception as compile_error:
            out = self.eager(*args, **kwargs)  # raises (the input's fault) when eager fails as well
            logger.warning(
                "torch.compile(%s) failed at run time, falling back to eager execution: %s: %s",
                self.description,
                type(compile_error).__name__,
                _summary(compile_error),
            )
            self.module.__dict__.pop("forward", None)
            return out

    def __deepcopy__(self, memo: dict[int, Any]) -> Callable[..., Any]:
        # A deep copy of the module must not call the original's compiled graph (it holds the original's
        # parameters): the copy gets an eager forward bound to itself.
        new_module = memo.get(id(self.module))
        if new_module is None:
            new_module = copy.deepcopy(self.module, memo)
        return type(new_module).forward.__get__(new_module)

    def __reduce__(self) -> Any:
        raise TypeError("a network prepared by compile_network cannot be pickled; save its state_dict().")


def is_compiled(network: torch.nn.Module) -> bool:
    """Whether ``network`` (or the module inside a DDP / DataParallel wrapper) runs a compiled forward."""
    inner = getattr(network, "module", network)
    return isinstance(inner.__dict__.get("forward"), _CompiledForward)


def compile_network(
    network: torch.nn.Module,
    enabled: bool = True,
    mode: str | None = None,
    backend: str | Callable[..., Any] = "inductor",
    dynamic: bool | None = None,
) -> torch.nn.Module:
    """Compile ``network``'s forward with ``torch.compile`` in place, falling back to eager on failure.

    The same module object is returned, with an instance-level ``forward`` that calls the compiled
    forward: parameters, buffers, ``state_dict()`` keys (no ``_orig_mod.`` prefix, unlike the
    ``OptimizedModule`` that ``torch.compile(network)`` returns), hooks, ``train()`` / ``eval()`` and
    every reference a bundle holds to ``@network`` stay as they are, so checkpoint handlers and
    ``CheckpointLoader`` need no change. MONAI ``MetaTensor`` inputs are passed to the compiled graph
    as plain tensors (the outputs are plain tensors, as with MONAI's own ``compile=True``).

    Falls back to eager execution, with a logged warning, when ``torch.compile`` cannot be set up
    (build time: unsupported platform or Python, unknown backend) or when compiling fails at a call
    (run time: e.g. no C++ compiler for inductor's CPU code); compilation is lazy, so the first
    forward is where most failures show. An exception that eager execution raises as well (a wrong
    input) is raised unchanged and leaves compilation on. ``torch.compile`` for the CPU needs a C++
    compiler; the first call of every new input shape or train/eval mode is slow (compilation).

    A network inside ``DistributedDataParallel`` / ``DataParallel`` is compiled inside the wrapper;
    calling this twice does nothing the second time. ``copy.deepcopy`` of the result gives an eager
    copy; ``torch.jit.script`` and export should start from the bundle's ``network_def``.

    Args:
        network: the module to compile (modified in place and returned).
        enabled: ``False`` returns ``network`` untouched (the bundles' default).
        mode: ``torch.compile`` mode: ``None``/``"default"``, ``"reduce-overhead"`` (CUDA graphs),
            ``"max-autotune"``.
        backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` or ``"eager"`` to check
            tracing without code generation).
        dynamic: ``torch.compile``'s ``dynamic`` (``None``: dynamic shapes after a first recompilation).

    Returns:
        ``network``, with a compiled forward when compiling could be set up.

    Example::

        network = compile_network(UNet3Plus(spatial_dims=2).to(device), enabled=True)
        # bundle config: "network": "$unet_monai.bundle.compile_network(@network_def.to(@device), @compile)"
    """
    if not as_bool(enabled, "compile_network(enabled)"):
        return network
    inner = (
        network.module
        if isinstance(network, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel)
        else network
    )
    if not isinstance(inner, torch.nn.Module):
        raise TypeError(f"compile_network expects a torch.nn.Module, got {type(network).__name__}.")
    if is_compiled(inner):
        return network
    description = type(inner).__name__
    eager_forward = type(inner).forward.__get__(inner)
    try:
        compiled = torch.compile(eager_forward, mode=mode, backend=backend, dynamic=dynamic)
    except Exception as e:
        logger.warning(
            "torch.compile(%s) could not be set up, running eagerly: %s: %s", description, type(e).__name__, _summary(e)
        )
        return network
    inner.forward = _CompiledForward(inner, compiled, description)  # instance attribute, see the docstring
    logger.info("compiled %s with torch.compile(mode=%r, backend=%r)", description, mode, backend)
    return network
