"""Reproducible training epochs: per-epoch seeding, RNG state capture, and the deterministic-algorithms switch.

A training run is reproducible, and an interrupted run can be resumed to the same weights, when the random
numbers each epoch uses depend only on ``(seed, epoch)`` and not on what happened before: how many epochs
this process has run, which RNG draws validation made, whether the process was restarted. The
:class:`EpochSeeder` handler gives each epoch that property by re-seeding, when the epoch starts and
before its DataLoader iterator is created, every random source the epoch draws from:

- Python's ``random``, NumPy's global RNG and torch's default generators (CPU and CUDA): the shuffling
  order of ``RandomSampler``, the seeds torch hands to DataLoader workers (from which MONAI's
  ``worker_init_fn`` seeds each worker's copy of the transforms), dropout;
- the random state of every MONAI randomizable transform of the dataset (``monai.data.utils.set_rnd``,
  what MONAI's DataLoader does once at construction), which the transforms use with ``num_workers=0``;
- a ``generator`` given to the DataLoader or its sampler.

``DistributedSampler`` is already seeded from ``(seed, epoch)`` by MONAI's workflow; each DDP rank gets its
own stream, ``(seed, epoch, rank)``. :meth:`~unet_monai.data.LiTSSliceDataset.set_epoch` redraws its
slices from ``(seed, epoch)`` by itself (``DatasetEpochSetter``).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd

from unet_monai.utils.flags import as_bool

__all__ = ["EpochSeeder", "configure_determinism", "epoch_seeds", "get_rng_state", "set_rng_state"]

logger = logging.getLogger(__name__)


def epoch_seeds(seed: int, epoch: int, rank: int = 0) -> tuple[int, int]:
    """Two independent 32-bit seeds that depend only on ``(seed, epoch, rank)``.

    The first seeds the global generators (``random``, NumPy, torch), the second the dataset's transforms,
    so that no transform draws the same stream as the global NumPy generator. Derived with NumPy's
    ``SeedSequence``, so nearby seeds and epochs give unrelated streams.

    Raises:
        ValueError: a negative ``seed``, ``epoch`` or ``rank``.
    """
    values = (int(seed), int(epoch), int(rank))
    if min(values) < 0:
        raise ValueError(f"seed, epoch and rank must be non-negative integers, got {values}.")
    global_seed, data_seed = np.random.SeedSequence(list(values)).generate_state(2)
    return int(global_seed), int(data_seed)


def get_rng_state() -> dict[str, Any]:
    """The state of the global generators (Python, NumPy, torch CPU and, if initialised, CUDA).

    Returned as tensors, numbers and lists only, so a checkpoint holding it still loads with
    ``torch.load(..., weights_only=True)``. Restore it with :func:`set_rng_state`.
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002 - the global generator is the state to save
    version, python_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": list(python_state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global generators from :func:`get_rng_state`'s output (CUDA only where it was saved)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            np_state["kind"],
            np.asarray(np_state["keys"], dtype=np.int64).astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py_state = state["python"]
    random.setstate((int(py_state["version"]), tuple(int(x) for x in py_state["state"]), py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning(
                "not restoring the CUDA RNG state: saved for %d devices, %d visible now.",
                len(cuda_states),
                torch.cuda.device_count(),
            )


def configure_determinism(deterministic: bool = False) -> None:
    """Choose between bitwise-reproducible and fastest GPU kernels (no effect on CPU-only runs).

    ``deterministic=True``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (operations without
    a deterministic CUDA implementation warn instead of failing), cuDNN restricted to deterministic
    algorithms with autotuning off (``cudnn.benchmark=False``: autotuning may pick a different, equally
    deterministic, algorithm in each run, and different algorithms round differently), and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed for deterministic cuBLAS; set before the first CUDA call,
    i.e. in the bundle's ``initialize``, unless the environment already sets it).

    ``deterministic=False`` (the bundles' default): ``cudnn.benchmark=True``, the fastest convolution
    algorithms for the input sizes, chosen by timing; repeated GPU runs then agree only to within
    floating-point rounding.

    Seeding is separate: ``monai.utils.set_determinism(seed)`` once and :class:`EpochSeeder` per epoch.
    """
    if as_bool(deterministic, "deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


class EpochSeeder:
    """Re-seed every random source of a training epoch from ``(seed, epoch, rank)`` when the epoch starts.

    With it, the data order and augmentations of epoch ``e`` do not depend on earlier epochs or on whether
    the process was restarted, so a run resumed from a checkpoint at the end of epoch ``e - 1``
    (:class:`~unet_monai.handlers.TrainingCheckpointer`) reproduces the uninterrupted run: on CPU the final
    weights are bitwise equal (``tests/reliability/test_resume.py``). It fires at ``EPOCH_STARTED``,
    before ignite creates the epoch's DataLoader iterator; list it first in ``train#handlers``.

    Seeded per epoch: ``random``, NumPy's and torch's global generators (sampler order, worker seeds,
    dropout), the MONAI randomizable transforms reachable from ``dataset`` (``set_rnd``, as MONAI's
    DataLoader and ``worker_init_fn`` do), and a ``generator`` held by the DataLoader or its sampler.

    DataLoader workers: with ``num_workers > 0`` each epoch's workers are seeded by torch from the (re-seeded)
    global generator, and MONAI's ``worker_init_fn`` seeds their transforms from that, so epochs are
    reproducible as long as the workers are created per epoch. ``persistent_workers=True`` keeps the
    workers, and the random state of their transforms, across epochs, out of this handler's reach: it
    logs a warning (the bundles set ``persistent_workers`` to false for that reason).

    Args:
        seed: the run's seed (the bundles pass ``@seed``).
        dataset: the dataset whose transforms are seeded; by default the trainer's
            ``data_loader.dataset`` (MONAI workflows keep the loader as ``engine.data_loader``).

    Example::

        trainer = SupervisedTrainer(..., train_handlers=[EpochSeeder(seed=0), ...])
    """

    def __init__(self, seed: int = 0, dataset: Any | None = None) -> None:
        epoch_seeds(seed, 0)  # validates the seed
        self.seed = int(seed)
        self.dataset = dataset
        self.data_loader: Any | None = None

    def attach(self, engine: Engine) -> None:
        self.data_loader = getattr(engine, "data_loader", None)
        if self.dataset is None and self.data_loader is not None:
            self.dataset = getattr(self.data_loader, "dataset", None)
        loader = self.data_loader
        if loader is not None and getattr(loader, "persistent_workers", False) and loader.num_workers > 0:
            logger.warning(
                "the training DataLoader keeps persistent workers: their transforms' random state carries over "
                "from epoch to epoch and cannot be re-seeded, so epochs (and resumed runs) are not reproducible. "
                "Use persistent_workers=False for reproducible training."
            )
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        global_seed, data_seed = epoch_seeds(self.seed, engine.state.epoch, idist.get_rank())
        random.seed(global_seed)
        np.random.seed(global_seed)  # noqa: NPY002 - seeding the legacy global generator on purpose
        torch.manual_seed(global_seed)  # also seeds every CUDA device
        if self.dataset is not None:
            set_rnd(self.dataset, data_seed)
        for owner in (self.data_loader, getattr(self.data_loader, "sampler", None)):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(global_seed)
