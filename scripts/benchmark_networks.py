"""Training-step time and peak memory of this project's networks against MONAI's, as ratios from one run.

What is measured (3 classes, 1 input channel, random inputs and labels, fixed seeds):

- Training step = ``zero_grad`` + forward + cross-entropy loss + backward + ``Adam.step``. With deep
  supervision the loss is the sum of one cross-entropy per output, for every network alike (this
  project's UNet++ returns a list, final output first; MONAI's BasicUNetPlusPlus returns a list too).
- Networks, at the matched settings 2D ``4x1x256x256`` and 3D ``1x1x64x64x64``:

  - ``UNet++``: :class:`unet_monai.networks.UNetPlusPlus` configured like MONAI's BasicUNetPlusPlus
    (features ``(32, 32, 64, 128, 256)``, ``act=("leakyrelu", {"negative_slope": 0.1, "inplace": True})``,
    ``norm=("instance", {"affine": True})``: the same parameter count with deep supervision, 297 fewer
    without, as MONAI always builds its side heads), deep supervision off and on;
  - ``MONAI BasicUNet++``: ``monai.networks.nets.BasicUNetPlusPlus`` defaults
    (features ``(32, 32, 64, 128, 256, 32)``), deep supervision off and on;
  - ``MONAI BasicUNet``: ``monai.networks.nets.BasicUNet`` defaults (features ``(32, 32, 64, 128, 256, 32)``);
  - ``UNet 3+``: :class:`unet_monai.networks.UNet3Plus` (its defaults: BatchNorm, ReLU, no deep
    supervision) with and without ``use_checkpointing``. The paper's widths ``(64, ..., 1024)`` take
    about 30 s per 2D step on the 2-core CPU, so the CPU default here is ``(32, 64, 128, 256, 512)``;
    ``--paper-widths`` or ``--features`` change it (the widths used are printed and stored).

- Pruned UNet++ inference: UNet++ built with deep supervision, eval mode, ``torch.inference_mode``,
  ``deep_supervision_mode="fast"``, prune levels 1..4 on the 2D input, plus MONAI BasicUNet++ (deep
  supervision off) inference for reference.

How:

- Times: all training configurations of one dimensionality are built in this process and run
  round-robin (the starting network rotates every round), ``--warmup`` untimed steps each, then
  ``--steps`` timed rounds; medians are reported. A ratio is the median over rounds of the per-round
  ratio to the named baseline, so drift from other jobs on a shared machine cancels. Inference levels
  are interleaved the same way (``--infer-repeats`` rounds).
- Peak memory: every training configuration runs again in its own fresh process
  (``--worker <json>``) with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc returns freed blocks to the OS, so
  the resident set follows the live tensors). The figure is the peak RSS (``ru_maxrss`` high-water
  mark, read as ``VmHWM`` and reset to the current RSS first, see ``scripts/_bench.py``) after
  ``--mem-steps`` training steps minus the same before the first forward (model, optimizer and
  inputs already built): activations, gradients, optimizer state and workspaces. On CUDA it is
  ``torch.cuda.max_memory_allocated`` over the same steps minus the memory allocated before them.
- FLOPs: counted once per configuration by ``torch.utils.flop_counter.FlopCounterMode`` on the first
  (untimed) warm-up step; the table shows them with the achieved GFLOP/s, which tells a slow network
  from an inefficient one. They are model FLOPs: the counter does not see checkpoint recomputation.
- Device: ``--device auto`` picks CUDA when present; ``--amp`` runs the forward under autocast
  (float16 with a GradScaler on CUDA, bfloat16 on CPU); ``--channels-last`` puts every 2D model and
  input in channels_last alike. ``--threads`` sets ``torch.set_num_threads`` (default: all cores).

Targets checked (PASS/MISS with the measured number): UNet++ step time <= 1.0x BasicUNet++ (each
dimensionality, deep supervision off and on); UNet 3+ checkpointing >= 40% lower peak training memory
at <= 1.35x step time; pruned UNet++ L2 inference time <= 0.6x L4.

Usage::

    python scripts/benchmark_networks.py                      # full run (see below for its duration)
    python scripts/benchmark_networks.py --quick              # smoke run (< 1 min): tiny 2D inputs, 1 step,
                                                              # 1 thread, memory of the UNet 3+ pair only
    python scripts/benchmark_networks.py --skip-3d --skip-unet3plus --steps 3
    python scripts/benchmark_networks.py --paper-widths --json benchmark_results/networks_paper.json

Duration: every training configuration runs 1 warm-up + ``--steps`` timed + ``--mem-steps`` memory
steps (8 by default); UNet 3+ takes 55-60% of the time and 3D about half. On the busy 2-core
development machine (load average 2-5) with ``--threads 1`` the 2D part took 23 minutes and the 3D part
24; a quiet machine with both threads should be faster (not measured: it was never quiet).
``--skip-3d``, ``--skip-unet3plus``, ``--steps 3`` or ``--mem-steps 1`` shorten it. On a busy machine
prefer ``--threads 1``: two OpenMP threads stall whenever one of them is descheduled.

Writes JSON (machine, settings, every time, ratios, memory, checks) to ``--json``
(default ``benchmark_results/networks.json``). A benchmark prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 3
IN_CHANNELS = 1
SHAPE_2D = (4, IN_CHANNELS, 256, 256)
SHAPE_3D = (1, IN_CHANNELS, 64, 64, 64)
QUICK_SHAPE_2D = (1, IN_CHANNELS, 64, 64)
QUICK_SHAPE_3D = (1, IN_CHANNELS, 32, 32, 32)
#: UNet 3+ widths used by default on CPU (the paper's are PAPER_UNET3PLUS_FEATURES).
CPU_UNET3PLUS_FEATURES = (32, 64, 128, 256, 512)
PAPER_UNET3PLUS_FEATURES = (64, 128, 256, 512, 1024)
#: UNetPlusPlus arguments that match monai.networks.nets.BasicUNetPlusPlus's defaults (the same parameter count
#: with deep supervision; without it MONAI still builds its three side heads, 297 parameters for 3 classes).
UNETPP_MATCHED: dict[str, Any] = {
    "features": (32, 32, 64, 128, 256),
    "act": ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
    "norm": ("instance", {"affine": True}),
}
#: Targets of the issue.
TARGET_UNETPP_TIME_RATIO = 1.0
TARGET_CKPT_MEMORY_RATIO = 0.60  # >= 40% lower
TARGET_CKPT_TIME_RATIO = 1.35
TARGET_PRUNE_L2_RATIO = 0.6


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration (JSON-serialisable, passed to the worker processes)."""

    key: str
    label: str
    network: str  # "unetpp" | "basic_unetpp" | "basic_unet" | "unet3plus"
    shape: tuple[int, ...]
    deep_supervision: bool = False
    checkpointing: bool = False
    features: tuple[int, ...] | None = None  # 5 widths; None: UNet 3+ CPU widths, the others their matched defaults
    baseline: str | None = None  # key of the row the ratios are taken against
    mode: str = "train"  # "train" | "infer"
    prune_level: int = 4

    @property
    def dims(self) -> int:
        return len(self.shape) - 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        if d.get("features") is not None:
            d["features"] = tuple(d["features"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------- helpers


def _bench() -> ModuleType:
    """The shared helper module ``scripts/_bench.py`` (importable when this file runs as a script)."""
    try:
        import _bench
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _bench
    return _bench


def _ensure_package_importable() -> None:
    """Make ``unet_monai`` importable from a source checkout (the repository root on ``sys.path``)."""
    root = str(Path(__file__).resolve().parents[1])
    try:
        import unet_monai  # noqa: F401
    except ImportError:
        sys.path.insert(0, root)


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def build_model(case: Case) -> nn.Module:
    """The network of ``case`` (3 classes, 1 input channel), on CPU, in training mode."""
    dims = case.dims
    if case.network == "unetpp":
        from unet_monai.networks import UNetPlusPlus

        return UNetPlusPlus(
            spatial_dims=dims,
            in_channels=IN_CHANNELS,
            out_channels=NUM_CLASSES,
            deep_supervision=case.deep_supervision,
            deep_supervision_mode="fast",
            **(UNETPP_MATCHED | ({"features": case.features} if case.features else {})),
        )
    if case.network == "unet3plus":
        from unet_monai.networks import UNet3Plus

        return UNet3Plus(
            spatial_dims=dims,
            in_channels=IN_CHANNELS,
            out_channels=NUM_CLASSES,
            features=case.features or CPU_UNET3PLUS_FEATURES,
            use_checkpointing=case.checkpointing,
        )
    from monai.networks.nets import BasicUNet, BasicUNetPlusPlus

    # MONAI's six widths: the five of the levels, then the last decoder's (the first level's by default)
    monai_features = {"features": (*case.features, case.features[0])} if case.features else {}
    with contextlib.redirect_stdout(io.StringIO()):  # both print their features when built
        if case.network == "basic_unetpp":
            return BasicUNetPlusPlus(
                spatial_dims=dims,
                in_channels=IN_CHANNELS,
                out_channels=NUM_CLASSES,
                deep_supervision=case.deep_supervision,
                **monai_features,
            )
        if case.network == "basic_unet":
            return BasicUNet(spatial_dims=dims, in_channels=IN_CHANNELS, out_channels=NUM_CLASSES, **monai_features)
    raise ValueError(f"unknown network {case.network!r}")


def make_inputs(case: Case, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Random image ``(B, 1, *spatial)`` and integer labels ``(B, *spatial)`` in ``0..NUM_CLASSES-1``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=g)
    y = torch.randint(0, NUM_CLASSES, (case.shape[0], *case.shape[2:]), generator=g)
    x, y = x.to(device), y.to(device)
    if channels_last and case.dims == 2:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def prepare(
    case: Case,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    model: nn.Module | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[Callable[[], None], nn.Module]:
    """Build the model (unless given), its inputs and the callable that runs one step of ``case``.

    ``train``: zero_grad, forward, summed cross-entropy over the outputs, backward, Adam step.
    ``infer``: one forward in eval mode under ``torch.inference_mode`` (UNet++ at ``case.prune_level``).
    ``amp_dtype``: the autocast type (default float16 on CUDA, bfloat16 on CPU); the gradient scaler is
    used with float16 only.
    """
    torch.manual_seed(0)
    if model is None:
        model = build_model(case)
        model = model.to(device)
        if channels_last and case.dims == 2:
            model = model.to(memory_format=torch.channels_last)
    x, y = make_inputs(case, device, channels_last)
    if amp_dtype is None:
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp_dtype) if amp else contextlib.nullcontext()

    if case.mode == "infer":
        model.eval()
        level = case.prune_level

        def infer() -> None:
            if hasattr(model, "set_prune_level") and getattr(model, "deep_supervision", False):
                model.set_prune_level(level)
            with torch.inference_mode(), autocast():
                model(x)

        return infer, model

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda" and amp_dtype == torch.float16)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = model(x)
            outputs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(F.cross_entropy(o.float(), y) for o in outputs)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train_step, model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ cases


def train_cases(
    shape: tuple[int, ...], unet3plus_features: tuple[int, ...], with_unetpp: bool = True, with_unet3plus: bool = True
) -> list[Case]:
    """The training configurations at one input shape (2D or 3D)."""
    p = f"{len(shape) - 2}d/"
    cases = []
    if with_unetpp:
        cases += [
            Case(p + "unetpp", "UNet++ (ours)", "unetpp", shape, baseline=p + "basic_unetpp"),
            Case(p + "basic_unetpp", "MONAI BasicUNet++", "basic_unetpp", shape, baseline=p + "basic_unet"),
            Case(p + "unetpp_ds", "UNet++ (ours) DS", "unetpp", shape, True, baseline=p + "basic_unetpp_ds"),
            Case(p + "basic_unetpp_ds", "MONAI BasicUNet++ DS", "basic_unetpp", shape, True, baseline=p + "basic_unet"),
        ]
    cases.append(Case(p + "basic_unet", "MONAI BasicUNet", "basic_unet", shape))
    if with_unet3plus:
        f = unet3plus_features
        cases += [
            Case(p + "unet3plus", "UNet 3+", "unet3plus", shape, features=f, baseline=p + "basic_unet"),
            Case(p + "unet3plus_ckpt", "UNet 3+ ckpt", "unet3plus", shape, False, True, f, p + "unet3plus"),
        ]
    return cases


def infer_cases(shape: tuple[int, ...]) -> list[Case]:
    """Pruned UNet++ L1..L4 (deep supervision, fast mode) and MONAI BasicUNet++ inference, 2D."""
    p = "infer/"
    cases = [
        Case(
            p + f"unetpp_L{level}",
            f"UNet++ L{level}",
            "unetpp",
            shape,
            True,
            baseline=p + "unetpp_L4" if level < 4 else p + "basic_unetpp",
            mode="infer",
            prune_level=level,
        )
        for level in (1, 2, 3, 4)
    ]
    cases.append(Case(p + "basic_unetpp", "MONAI BasicUNet++", "basic_unetpp", shape, mode="infer"))
    return cases


# ----------------------------------------------------------------------------------------------- worker


def worker(spec_json: str) -> None:
    """Child process: build one configuration, run ``steps`` steps, report its peak memory (JSON line)."""
    bench = _bench()
    _ensure_package_importable()
    spec = json.loads(spec_json)
    case = Case.from_dict(spec["case"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    step, model = prepare(case, device, bool(spec["amp"]), bool(spec["channels_last"]))
    gc.collect()
    probe = bench.PeakMemory(device)
    probe.start()
    times = [bench.time_call(step, device) for _ in range(int(spec["steps"]))]
    bench.emit_result(
        {"key": case.key, "peak_mib": probe.peak_mib(), "worker_step_s": times, "params": n_params(model)}
        | {"memory": probe.details()}
    )


def measure_memory(
    cases: list[Case], args: argparse.Namespace, device: torch.device, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Peak memory of every case, each in its own process (``args.mem_jobs`` at a time)."""
    bench = _bench()
    script = str(Path(__file__).resolve())

    def one(case: Case) -> tuple[str, dict[str, Any]]:
        spec = {
            "case": asdict(case),
            "device": str(device),
            "amp": args.amp,
            "channels_last": args.channels_last,
            "threads": args.threads,
            "steps": args.mem_steps,
        }
        try:
            result = bench.run_worker([script, "--worker", json.dumps(spec)], timeout=args.worker_timeout)
        except Exception as e:  # report and go on: one failure should not lose the whole run
            log(f"memory worker for {case.key} failed: {e}")
            return case.key, {"error": str(e)}
        log(f"memory {case.key}: {result['peak_mib']:.0f} MiB")
        return case.key, result

    jobs = max(1, args.mem_jobs if device.type == "cpu" else 1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, cases))


# ------------------------------------------------------------------------------------------------ main


def time_cases(
    cases: list[Case],
    repeats: int,
    warmup: int,
    args: argparse.Namespace,
    device: torch.device,
    log: Callable[[str], None],
    collect: bool = True,
    conv_flops: dict[str, float] | None = None,
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, float]]:
    """Interleaved times of ``cases`` in this process.

    Returns the times per key, the parameter counts and the FLOPs of one call (counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on the first warm-up call, which is untimed; the
    counter does not see the recomputation of checkpointed segments, so these are model FLOPs).
    ``collect``: run ``gc.collect()`` (untimed) before
    every call, so that no cycle garbage of one network is collected inside another's timed step.
    ``conv_flops``: when given, receives the convolution FLOPs (forward and backward) of one call per key.
    """
    from torch.utils.flop_counter import FlopCounterMode

    bench = _bench()
    runs: dict[str, Callable[[], None]] = {}
    params: dict[str, int] = {}
    flops: dict[str, float] = {}
    shared: dict[tuple, nn.Module] = {}  # the pruning levels share one model
    for case in cases:
        share_key = (case.network, case.shape, case.deep_supervision, case.mode) if case.mode == "infer" else None
        model = shared.get(share_key) if share_key else None
        runs[case.key], model = prepare(case, device, args.amp, args.channels_last, model)
        if share_key:
            shared[share_key] = model
        params[case.key] = n_params(model)
    log(f"timing {len(cases)} configurations: {warmup} warm-up + {repeats} interleaved rounds")
    if warmup > 0:
        for key, run in runs.items():
            counter = FlopCounterMode(display=False)
            with counter:
                run()
            flops[key] = float(counter.get_total_flops())
            if conv_flops is not None:
                conv_flops[key] = bench.conv_flops(counter)
        bench.sync(device)
    between = gc.collect if collect else None
    times = bench.interleaved_times(runs, repeats, device, warmup=warmup - 1, between=between, progress=log)
    del runs, shared
    gc.collect()
    return times, params, flops


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.2f}x"


def build_rows(
    cases: list[Case],
    times: dict[str, list[float]],
    params: dict[str, int],
    flops: dict[str, float],
    memory: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    bench = _bench()
    rows = []
    for case in cases:
        t = times.get(case.key, [])
        base = case.baseline if case.baseline in times else None
        mem = memory.get(case.key, {})
        peak = mem.get("peak_mib")
        base_peak = memory.get(case.baseline or "", {}).get("peak_mib")
        row: dict[str, Any] = {
            "key": case.key,
            "label": case.label,
            "network": case.network,
            "mode": case.mode,
            "dims": case.dims,
            "input_shape": list(case.shape),
            "deep_supervision": case.deep_supervision,
            "checkpointing": case.checkpointing,
            "features": list(case.features) if case.features else None,
            "prune_level": case.prune_level if case.mode == "infer" else None,
            "params": params.get(case.key),
            "gflop": flops[case.key] / 1e9 if case.key in flops else None,
            "gflop_per_s": flops[case.key] / 1e9 / statistics.median(t) if case.key in flops and t else None,
            "baseline": case.baseline,
            "time_s": bench.summarize(t),
            "times_s": t,
            "time_ratio": bench.paired_ratio(t, times[base]) if base else None,
            "time_ratio_rounds": [a / b for a, b in zip(t, times[base])] if base else None,
            "time_ratio_of_medians": statistics.median(t) / statistics.median(times[base]) if base and t else None,
            "peak_mib": peak,
            "peak_ratio": peak / base_peak if peak and base_peak else None,
            "memory": mem or None,
        }
        rows.append(row)
    return rows


def build_checks(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """PASS/MISS of the issue's targets for the rows that were measured."""
    checks: list[dict[str, Any]] = []
    for dims in (2, 3):
        for suffix, what in (("", "DS off"), ("_ds", "DS on")):
            row = rows.get(f"{dims}d/unetpp{suffix}")
            if row and row["time_ratio"] is not None:
                r = row["time_ratio"]
                checks.append(
                    {
                        "target": f"{dims}D UNet++ step time <= {TARGET_UNETPP_TIME_RATIO:.2f}x BasicUNet++ ({what})",
                        "measured": f"{r:.2f}x",
                        "value": r,
                        "pass": r <= TARGET_UNETPP_TIME_RATIO,
                    }
                )
        row = rows.get(f"{dims}d/unet3plus_ckpt")
        if row and row["time_ratio"] is not None and row["peak_ratio"] is not None:
            m, t = row["peak_ratio"], row["time_ratio"]
            checks.append(
                {
                    "target": f"{dims}D UNet 3+ checkpointing: peak memory >= 40% lower at <= "
                    f"{TARGET_CKPT_TIME_RATIO:.2f}x step time",
                    "measured": f"{abs(1 - m) * 100:.0f}% {'lower' if m <= 1 else 'higher'} ({m:.2f}x) at {t:.2f}x",
                    "value": [m, t],
                    "pass": m <= TARGET_CKPT_MEMORY_RATIO and t <= TARGET_CKPT_TIME_RATIO,
                }
            )
    row = rows.get("infer/unetpp_L2")
    if row and row["time_ratio"] is not None:
        r = row["time_ratio"]
        checks.append(
            {
                "target": f"pruned UNet++ L2 inference time <= {TARGET_PRUNE_L2_RATIO:.1f}x L4",
                "measured": f"{r:.2f}x",
                "value": r,
                "pass": r <= TARGET_PRUNE_L2_RATIO,
            }
        )
    return checks


def print_report(
    train: list[dict[str, Any]], infer: list[dict[str, Any]], checks: list[dict[str, Any]], note: str = ""
) -> None:
    def short(key: str | None) -> str:
        return "" if key is None else key.split("/", 1)[1]

    if train:
        header = (
            f"{'model':<22} {'input':<14} {'params':>10} {'GFLOP':>6} {'step s':>7} {'min s':>7} {'GFLOP/s':>7}"
            f" {'ratio':>6} {'vs':<16} {'peak MiB':>8} {'ratio':>6}"
        )
        print(
            "\nTraining step (forward + backward + Adam step): median and fastest time; time ratio = median over "
            "rounds of the per-round ratio to the 'vs' row; peak memory ratio to the same row"
        )
        print(header)
        print("-" * len(header))
        for r in train:
            peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            print(
                f"{r['label']:<22} {_shape_str(r['input_shape']):<14} {r['params'] or 0:>10,}"
                f" {_fmt(r['gflop'], 0):>6} {r['time_s']['median']:>7.3f} {r['time_s']['min']:>7.3f}"
                f" {_fmt(r['gflop_per_s'], 1):>7} {_fmt_ratio(r['time_ratio']):>6} {short(r['baseline']):<16}"
                f" {peak:>8} {_fmt_ratio(r['peak_ratio']):>6}"
            )
    if infer:
        header = f"{'model':<22} {'input':<14} {'GFLOP':>6} {'infer s':>8} {'min s':>8} {'ratio':>7} {'vs':<16}"
        print("\nInference (eval, inference_mode; UNet++ with deep supervision, fast mode, pruned), median")
        print(header)
        print("-" * len(header))
        for r in infer:
            print(
                f"{r['label']:<22} {_shape_str(r['input_shape']):<14} {_fmt(r['gflop'], 1):>6}"
                f" {r['time_s']['median']:>8.4f} {r['time_s']['min']:>8.4f} {_fmt_ratio(r['time_ratio']):>7}"
                f" {short(r['baseline']):<16}"
            )
    if checks:
        print("\nTargets" + (f" ({note})" if note else ""))
        for c in checks:
            print(f"  {'PASS' if c['pass'] else 'MISS'}  {c['target']}: {c['measured']}")


def _busy_note(before: list[float] | None, after: list[float] | None, cores: int | None) -> str:
    """A warning when the 1-minute load average says that other jobs shared the CPU during the run."""
    if not before or not after or not cores:
        return ""
    # this run itself adds about 1 (it keeps one process busy); more means other jobs were running
    worst = max(before[0], after[0], after[2])
    if worst <= 1.5:
        return ""
    return (
        f"load average {before[0]:.1f} before, {after[0]:.1f} after (15-min {after[2]:.1f}) on {cores} cores: "
        "other jobs shared the CPU, so absolute times are inflated and ratios noisier than on a quiet machine."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: all cores)")
    parser.add_argument("--steps", type=int, default=5, help="timed interleaved training rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps per network first")
    parser.add_argument("--infer-repeats", type=int, default=15, help="timed interleaved inference rounds")
    parser.add_argument("--mem-steps", type=int, default=2, help="training steps per memory worker process")
    parser.add_argument("--mem-jobs", type=int, default=1, help="memory worker processes run at once (CPU)")
    parser.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds before a worker is killed")
    parser.add_argument("--amp", action="store_true", help="autocast: float16 + GradScaler on CUDA, bfloat16 on CPU")
    parser.add_argument("--channels-last", action="store_true", help="channels_last for every 2D model and input")
    parser.add_argument("--features", type=int, nargs=5, help="UNet 3+ widths (default: 32 64 128 256 512)")
    parser.add_argument("--paper-widths", action="store_true", help="UNet 3+ with the paper's widths 64..1024")
    parser.add_argument("--skip-3d", action="store_true", help="no 3D training configurations")
    parser.add_argument("--skip-2d", action="store_true", help="no 2D training configurations")
    parser.add_argument("--skip-unet3plus", action="store_true", help="no UNet 3+ configurations")
    parser.add_argument("--skip-unetpp", action="store_true", help="no UNet++ / BasicUNet++ training configurations")
    parser.add_argument("--skip-pruning", action="store_true", help="no pruned-inference timing")
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory worker processes")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny 2D inputs only, 1 step, 1 thread, < 1 minute"
    )
    parser.add_argument("--json", default="benchmark_results/networks.json", help="where to write the results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.infer_repeats, args.mem_steps = 1, 1, 2, 1
        args.skip_3d = True
        args.mem_jobs = max(args.mem_jobs, 2)
        # A smoke run's figures mean nothing; one thread avoids the stalls of two OpenMP threads on a shared
        # 2-core machine (tiny ops wait for a descheduled thread), which made tiny steps 50x slower.
        args.threads = args.threads or 1
    if args.paper_widths and args.features:
        parser.error("--paper-widths and --features exclude each other")
    for name in ("steps", "infer_repeats", "mem_steps", "mem_jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    bench = _bench()
    _ensure_package_importable()
    device = bench.pick_device(args.device)
    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)

    start = time.perf_counter()

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[benchmark_networks {time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    u3_features = tuple(args.features or (PAPER_UNET3PLUS_FEATURES if args.paper_widths else CPU_UNET3PLUS_FEATURES))
    shape2d, shape3d = (QUICK_SHAPE_2D, QUICK_SHAPE_3D) if args.quick else (SHAPE_2D, SHAPE_3D)
    groups: list[list[Case]] = []
    for shape, skip in ((shape2d, args.skip_2d), (shape3d, args.skip_3d)):
        if not skip:
            groups.append(train_cases(shape, u3_features, not args.skip_unetpp, not args.skip_unet3plus))
    pruning = [] if args.skip_pruning else infer_cases(shape2d)

    machine = bench.machine_info(device)
    print(
        f"device {device}, torch {machine['torch']}, monai {machine['monai']}, threads {args.threads}, "
        f"CPU {machine['cpu_model']} ({machine['cpu_count']} cores), load average {machine['load_average']}"
    )
    print(
        f"settings: {NUM_CLASSES} classes, Adam, cross-entropy (summed over deep-supervision outputs), "
        f"{args.warmup} warm-up + {args.steps} interleaved rounds, amp={args.amp}, channels_last={args.channels_last}"
    )
    print(
        f"UNet++ = UNetPlusPlus(features={UNETPP_MATCHED['features']}, leakyrelu 0.1, instance norm) vs "
        f"MONAI BasicUNetPlusPlus defaults; UNet 3+ widths {u3_features}"
        + (" (paper widths)" if u3_features == PAPER_UNET3PLUS_FEATURES else " (CPU size; --paper-widths for 64..1024)")
    )

    times: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    flops: dict[str, float] = {}
    for group in groups:
        t, p, f = time_cases(group, args.steps, args.warmup, args, device, log)
        times.update(t)
        params.update(p)
        flops.update(f)
    if pruning:
        t, p, f = time_cases(pruning, args.infer_repeats, max(args.warmup, 1), args, device, log, collect=False)
        times.update(t)
        params.update(p)
        flops.update(f)

    train = [c for g in groups for c in g]
    memory: dict[str, dict[str, Any]] = {}
    if not args.skip_memory and train:
        measured = train
        if args.quick:  # a worker costs ~6 s of imports: the smoke run measures one pair only
            pair = [c for c in train if c.network == "unet3plus"]
            measured = pair or train[:2]
        log(f"peak memory: {len(measured)} worker processes, {args.mem_steps} step(s) each")
        memory = measure_memory(measured, args, device, log)

    train_rows = build_rows(train, times, params, flops, memory)
    infer_rows = build_rows(pruning, times, params, flops, {})
    checks = build_checks({r["key"]: r for r in train_rows + infer_rows})
    machine_after = bench.machine_info(device)
    note = "quick smoke run: tiny inputs, one step, the figures mean nothing" if args.quick else ""
    print_report(train_rows, infer_rows, checks, note)
    busy = _busy_note(machine["load_average"], machine_after["load_average"], machine["cpu_count"])
    if busy:
        print(f"\nnote: {busy}")
    result = {
        "machine": machine | {"load_average_after": machine_after["load_average"], "finished": machine_after["date"]},
        "settings": {
            "num_classes": NUM_CLASSES,
            "optimizer": "Adam(lr=1e-4)",
            "loss": "sum of F.cross_entropy over the outputs",
            "steps": args.steps,
            "warmup": args.warmup,
            "infer_repeats": args.infer_repeats,
            "mem_steps": args.mem_steps,
            "amp": args.amp,
            "channels_last": args.channels_last,
            "threads": args.threads,
            "quick": args.quick,
            "unetpp_matched": {k: list(v) if isinstance(v, tuple) else v for k, v in UNETPP_MATCHED.items()},
            "unet3plus_features": list(u3_features),
            "memory_method": "cuda max_memory_allocated increase"
            if device.type == "cuda"
            else "peak RSS (VmHWM = ru_maxrss of the process image) increase over the RSS before the first "
            "forward, in a fresh process per configuration with MALLOC_MMAP_THRESHOLD_=65536",
        },
        "train": train_rows,
        "inference": infer_rows,
        "checks": checks,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
