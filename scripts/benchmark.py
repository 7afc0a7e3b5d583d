"""The whole benchmark suite in one process: measures, then writes ``docs/benchmarks.md`` and its plots.

Sections (``--sections``, default all; each reuses the single-purpose benchmark scripts' functions):

- ``networks``: training step time (forward + cross-entropy + backward + Adam) and peak memory of
  UNetPlusPlus, UNet3Plus with and without ``use_checkpointing``, MONAI BasicUNetPlusPlus and BasicUNet,
  interleaved in one process, ratios per round (``scripts/benchmark_networks.py``);
- ``pruning``: inference of the UNet++ pruned to levels 1..4 against MONAI BasicUNet++ (target: L2 <= 0.6x L4);
- ``growth``: step time and peak memory against input size (2D 128, 256, 320, 512; 3D 48, 64, 96), one
  fresh process per point (time and memory of the same steps), plotted;
- ``throughput``: the convolution FLOPs per second of each network's training step (counted by
  ``torch.utils.flop_counter.FlopCounterMode``) as a fraction of the machine's convolution peak, measured
  in the same run on one large 3x3 convolution; target >= 40% in 2D;
- ``options``: AMP (bfloat16 / float16), channels_last, ``torch.compile`` (``unet_monai.bundle.compile_network``)
  and ``cudnn.benchmark`` on a UNet++ training step, interleaved (CPU: fp32, channels_last, bfloat16, and
  compile only with ``--compile``);
- ``inference``: seconds per 256x256x128 volume of the 2D bundles' inference path (SliceStackInferer:
  batched slices, no overlap, channels_last) against MONAI's SliceInferer with default settings, and of
  the 3D bundles' SlidingWindowInferer settings against SlidingWindowInferer defaults, same network and
  weights; target 2D >= 1.5x faster;
- ``losses``: MS-SSIM loss forward + backward against pytorch-msssim (``scripts/benchmark_losses.py``);
- ``data``: data pipeline throughput with and without caching (``scripts/benchmark_data.py``);
- ``bundles`` (CUDA only): each bundle's training throughput and peak GPU memory with AMP, from its own
  ``train.json`` (network, loss, optimizer, inferer), and the inference time of a 512x512x500 volume
  through its ``inference.json`` network and inferer.

Results go to ``--json`` after every section (``--merge`` keeps the sections of an earlier run that
this run does not repeat; ``--render-only`` rewrites the document from the JSON). The document's
explanatory text is the template in this file; the tables and plots are filled from the results.

Usage::

    python scripts/benchmark.py --threads 1                 # everything (CPU: about 30 minutes)
    python scripts/benchmark.py --quick --no-doc            # smoke run, tiny sizes, < 1 minute
    python scripts/benchmark.py --sections inference,losses --merge
    python scripts/benchmark.py --device cuda --amp --channels-last --compile   # GPU: every option measured
    python scripts/benchmark.py --render-only               # document from benchmark_results/benchmark.json

A benchmark prints figures and PASS/FAIL lines against the targets; it is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import _bench as bench  # noqa: E402
import benchmark_networks as bn  # noqa: E402

SECTIONS = ("networks", "pruning", "growth", "throughput", "options", "inference", "losses", "data", "bundles")
GROWTH_SIZES = {2: (128, 256, 320, 512), 3: (48, 64, 96)}
QUICK_GROWTH_SIZES = {2: (32, 64), 3: (32,)}
#: (key, label, network, checkpointing) of the networks compared in every section
NETWORKS = (
    ("unetpp", "UNet++ (ours)", "unetpp", False),
    ("basic_unetpp", "MONAI BasicUNet++", "basic_unetpp", False),
    ("basic_unet", "MONAI BasicUNet", "basic_unet", False),
    ("unet3plus", "UNet 3+", "unet3plus", False),
    ("unet3plus_ckpt", "UNet 3+ ckpt", "unet3plus", True),
)
#: this project's networks held to the throughput target (the checkpointed UNet 3+ recomputes forward
#: segments that FlopCounterMode does not count, so its FLOP/s understate the work done)
OURS = ("unetpp", "unet3plus")
#: the sections that check targets
CHECKED = ("networks", "pruning", "throughput", "inference")
TARGET_THROUGHPUT_2D = 0.40
TARGET_SLICE_SPEEDUP = 1.5
VOLUME = (256, 256, 128)
GPU_VOLUME = (512, 512, 500)
#: the bundles section of the latest GPU run (with its machine), kept in the repository: a CPU run's document
#: shows it instead of "not measured", since the development machines have no GPU
GPU_RECORD = ROOT / "docs" / "benchmarks" / "gpu_bundles.json"
#: the bundles whose inference paths the inference section times (with the run's widths)
BUNDLE_2D = "liver_ct_unetplusplus_2d_segmentation"
BUNDLES_2D = (BUNDLE_2D, "liver_ct_unet3plus_2d_segmentation")
BUNDLE_3D = "liver_ct_unetplusplus_3d_segmentation"


# ------------------------------------------------------------------------------------------------ setup


def settings_for(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Input shapes and widths of this run (CPU sizes, GPU sizes, or the smoke run's)."""
    cuda = device.type == "cuda"
    if args.quick:
        return {
            "shape_2d": (1, 1, 64, 64),
            "shape_3d": (1, 1, 32, 32, 32),
            "unet3plus_features": (8, 16, 32, 64, 128),
            "growth_sizes": QUICK_GROWTH_SIZES,
            "growth_divisor": {2: 4, 3: 8},
            "infer_features": (4, 8, 8, 16, 16),
            "infer_features_3d": (4, 8, 8, 16, 16),
            "volume": (64, 64, 8),
            "patch": (32, 32, 32),
            "options_shape": (1, 1, 64, 64),
        }
    u3 = bn.PAPER_UNET3PLUS_FEATURES if (cuda or args.paper_widths) else bn.CPU_UNET3PLUS_FEATURES
    return {
        "shape_2d": (16, 1, 256, 256) if cuda else (2, 1, 256, 256),
        "shape_3d": (2, 1, 96, 96, 96) if cuda else (1, 1, 48, 48, 48),
        "unet3plus_features": tuple(u3),
        "growth_sizes": GROWTH_SIZES,
        # CPU: widths divided by 2 (2D) and 4 (3D) so that 2D 512 and 3D 96 fit the run's time
        "growth_divisor": {2: 1, 3: 1} if cuda else {2: 2, 3: 4},
        "infer_features": (32, 64, 128, 256, 512) if cuda else (8, 16, 32, 64, 128),
        "infer_features_3d": (32, 64, 128, 256, 512) if cuda else (4, 8, 16, 32, 64),
        "volume": VOLUME,
        "patch": (96, 96, 96),
        "options_shape": (16, 1, 256, 256) if cuda else (1, 1, 256, 256),
    }


def worker_args(args: argparse.Namespace, steps: int) -> argparse.Namespace:
    """The attributes benchmark_networks' timing and memory functions read."""
    return argparse.Namespace(
        amp=args.amp,
        channels_last=args.channels_last,
        threads=args.threads,
        mem_steps=steps,
        mem_jobs=args.mem_jobs,
        worker_timeout=args.worker_timeout,
    )


def network_cases(prefix: str, shape: tuple[int, ...], features: dict[str, tuple[int, ...] | None]) -> list[bn.Case]:
    """The five compared networks at one input shape; ratios: ours vs MONAI's, checkpointing vs plain."""
    baselines = {"unetpp": "basic_unetpp", "basic_unetpp": "basic_unet", "unet3plus": "basic_unet"}
    baselines["unet3plus_ckpt"] = "unet3plus"
    cases = []
    for key, label, network, ckpt in NETWORKS:
        family = "unet3plus" if network == "unet3plus" else "unetpp"
        base = baselines.get(key)
        cases.append(
            bn.Case(
                f"{prefix}{key}",
                label,
                network,
                shape,
                checkpointing=ckpt,
                features=features[family],
                baseline=f"{prefix}{base}" if base else None,
            )
        )
    return cases


# --------------------------------------------------------------------------------------------- sections


def run_networks(args, device, cfg, log) -> dict[str, Any]:
    """Interleaved training steps of the five networks, 2D and 3D; peak memory in worker processes."""
    rows, checks = [], []
    conv: dict[str, float] = {}
    for dims, shape in ((2, cfg["shape_2d"]), (3, cfg["shape_3d"])):
        cases = network_cases(f"{dims}d/", shape, {"unetpp": None, "unet3plus": cfg["unet3plus_features"]})
        wargs = worker_args(args, args.mem_steps)
        times, params, flops = bn.time_cases(cases, args.steps, args.warmup, wargs, device, log, conv_flops=conv)
        memory = {} if args.skip_memory else bn.measure_memory(cases, wargs, device, log)
        dim_rows = bn.build_rows(cases, times, params, flops, memory)
        for row in dim_rows:
            row["conv_gflop"] = conv.get(row["key"], 0.0) / 1e9
        rows += dim_rows
    checks = bn.build_checks({r["key"]: r for r in rows})
    return {"rows": rows, "checks": checks, "unet3plus_features": list(cfg["unet3plus_features"])}


def run_pruning(args, device, cfg, log) -> dict[str, Any]:
    """Inference of the UNet++ pruned to levels 1..4 and of MONAI BasicUNet++, interleaved (2D input)."""
    cases = bn.infer_cases(cfg["shape_2d"])
    wargs = worker_args(args, 1)
    times, params, flops = bn.time_cases(cases, args.prune_repeats, 1, wargs, device, log, collect=False)
    rows = bn.build_rows(cases, times, params, flops, {})
    return {"rows": rows, "checks": bn.build_checks({r["key"]: r for r in rows})}


def growth_cases(cfg: dict[str, Any]) -> list[bn.Case]:
    cases = []
    for dims, sizes in cfg["growth_sizes"].items():
        div = cfg["growth_divisor"][dims]
        feats = {
            "unetpp": tuple(max(1, f // div) for f in bn.UNETPP_MATCHED["features"]),
            "unet3plus": tuple(max(1, f // div) for f in cfg["unet3plus_features"]),
        }
        for size in sizes:
            shape = (1, 1, *([size] * dims))
            cases += network_cases(f"growth/{dims}d/{size}/", shape, feats)
    return cases


def _last_line(error: str | None, limit: int = 200) -> str | None:
    """The last non-empty line of an error message (a worker's traceback ends with the exception)."""
    if not error:
        return None
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return (lines[-1] if lines else error)[:limit]


def run_growth(args, device, cfg, log) -> dict[str, Any]:
    """Each (network, size) in a fresh process: ``--growth-steps`` steps, peak memory, last step's time."""
    cases = growth_cases(cfg)
    log(f"growth: {len(cases)} worker processes, {args.growth_steps} steps each")
    results = bn.measure_memory(cases, worker_args(args, args.growth_steps), device, log)
    rows = []
    for case in cases:
        _, dims, size, key = case.key.split("/")
        res = results.get(case.key, {})
        steps = res.get("worker_step_s") or []
        rows.append(
            {
                "dims": int(dims[0]),
                "size": int(size),
                "network": key,
                "label": case.label,
                "features": list(case.features) if case.features else list(bn.UNETPP_MATCHED["features"]),
                "step_s": min(steps[1:]) if len(steps) > 1 else (steps[0] if steps else None),
                "first_step_s": steps[0] if steps else None,
                "peak_mib": res.get("peak_mib"),
                "error": _last_line(res.get("error")),
            }
        )
    return {"rows": rows, "divisor": {str(k): v for k, v in cfg["growth_divisor"].items()}}


def conv_peak(device: torch.device, dims: int, dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict[str, Any]:
    """Forward FLOP/s of one large 3x3 convolution (the machine's convolution peak), best memory format."""
    if dims == 2:
        channels, batch, spatial = (256, 64, (64, 64)) if device.type == "cuda" else (256, 8, (64, 64))
    else:
        channels, batch, spatial = (128, 8, (32, 32, 32)) if device.type == "cuda" else (128, 2, (24, 24, 24))
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
    conv = conv_cls(channels, channels, 3, padding=1, bias=False).to(device, dtype)
    x = torch.randn(batch, channels, *spatial, device=device, dtype=dtype)
    flop = 2.0 * batch * channels * channels * 3**dims * float(torch.tensor(spatial).prod())
    best: dict[str, Any] = {}
    formats = [("contiguous", torch.contiguous_format)]
    formats.append(("channels_last", torch.channels_last if dims == 2 else torch.channels_last_3d))
    for name, fmt in formats:
        c, xi = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            c(xi)  # warm-up (and cudnn autotuning when benchmark mode is on)
            t = min(bench.time_call(lambda c=c, xi=xi: c(xi), device) for _ in range(repeats))
        gflops = flop / t / 1e9
        if not best or gflops > best["gflop_per_s"]:
            best = {"gflop_per_s": gflops, "format": name, "seconds": t}
    return best | {"shape": [batch, channels, *spatial], "gflop": flop / 1e9, "dtype": str(dtype)}


def run_throughput(args, device, results, log) -> dict[str, Any]:
    """Achieved convolution FLOP/s of the networks section's steps, as a fraction of the conv peak."""
    dtype = torch.float16 if args.amp and device.type == "cuda" else torch.float32  # as the networks ran
    peaks = {dims: conv_peak(device, dims, dtype) for dims in (2, 3)}
    for dims, p in peaks.items():
        log(f"conv peak {dims}D: {p['gflop_per_s']:.1f} GFLOP/s ({p['format']}, {p['shape']})")
    rows, checks = [], []
    for row in (results.get("networks") or {}).get("rows", []):
        median = row["time_s"]["median"]
        achieved = row["conv_gflop"] / median if median else float("nan")
        peak = peaks[row["dims"]]["gflop_per_s"]
        rows.append(
            {
                "key": row["key"],
                "label": row["label"],
                "dims": row["dims"],
                "conv_gflop": row["conv_gflop"],
                "step_s": median,
                "conv_gflop_per_s": achieved,
                "fraction": achieved / peak,
            }
        )
    for r in rows:
        if r["dims"] == 2 and r["key"].split("/")[1] in OURS:
            checks.append(
                {
                    "target": f"2D {r['label']}: conv FLOP/s >= {TARGET_THROUGHPUT_2D:.0%} of the conv peak",
                    "measured": f"{r['fraction']:.0%}",
                    "value": r["fraction"],
                    "pass": r["fraction"] >= TARGET_THROUGHPUT_2D,
                }
            )
    if not rows:
        log("throughput: no networks results (run the networks section in this run or with --merge)")
    return {"peaks": {str(k): v for k, v in peaks.items()}, "rows": rows, "checks": checks}


def run_options(args, device, cfg, log) -> dict[str, Any]:
    """AMP, channels_last, torch.compile and cudnn.benchmark on a UNet++ training step, interleaved."""
    from unet_monai.bundle import compile_network, is_compiled

    cuda = device.type == "cuda"
    case = bn.Case("options/unetpp", "UNet++ (ours)", "unetpp", cfg["options_shape"])
    variants: list[tuple[str, dict[str, Any]]] = [("fp32", {}), ("channels_last", {"cl": True})]
    if cuda:
        variants += [
            ("amp fp16", {"amp": torch.float16}),
            ("amp bf16", {"amp": torch.bfloat16}),
            ("amp bf16 + channels_last", {"amp": torch.bfloat16, "cl": True}),
            ("fp32, cudnn.benchmark off", {"cudnn_benchmark": False}),
        ]
    else:
        variants.append(("amp bf16 (CPU autocast)", {"amp": torch.bfloat16}))
    if cuda or args.compile:
        if cuda:
            variants.append(("torch.compile + amp bf16 + channels_last", {"amp": torch.bfloat16, "cl": True, "c": 1}))
        else:
            variants.append(("torch.compile (fp32)", {"c": 1}))
    runs: dict[str, Callable[[], None]] = {}
    notes: dict[str, str] = {}
    for name, v in variants:
        torch.manual_seed(0)
        model = bn.build_model(case).to(device)
        if v.get("cl"):
            model = model.to(memory_format=torch.channels_last)
        if v.get("c"):
            compile_network(model)
        step, model = bn.prepare(case, device, "amp" in v, bool(v.get("cl")), model, amp_dtype=v.get("amp"))
        flag = v.get("cudnn_benchmark", True)

        def run(step=step, flag=flag) -> None:
            torch.backends.cudnn.benchmark = flag
            step()

        try:
            for _ in range(2 if v.get("c") else 0):  # compilation happens here, untimed
                run()
        except Exception as e:  # report and go on
            notes[name] = f"failed: {type(e).__name__}: {e}"[:300]
            continue
        if v.get("c") and not is_compiled(model):
            notes[name] = "torch.compile failed, fell back to eager (see the warning above)"
        runs[name] = run
    times = bench.interleaved_times(runs, args.steps, device, warmup=args.warmup, between=gc.collect, progress=log)
    torch.backends.cudnn.benchmark = True
    base = times.get("fp32")
    rows = [
        {
            "variant": name,
            "time_s": bench.summarize(t),
            "speedup": 1.0 / bench.paired_ratio(t, base) if base else None,
            "note": notes.get(name, ""),
        }
        for name, t in times.items()
    ]
    rows += [{"variant": n, "time_s": None, "speedup": None, "note": msg} for n, msg in notes.items() if n not in times]
    return {"shape": list(cfg["options_shape"]), "rows": rows}


def _volume(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    return torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(0)).to(device)


def _speed_rows(times: dict[str, list[float]], baseline: str) -> list[dict[str, Any]]:
    """Per path: time summary and speed relative to ``baseline`` (inverse of the per-round time ratio)."""
    base = times[baseline]
    return [
        {"path": k, "time_s": bench.summarize(t), "speedup": 1.0 / bench.paired_ratio(t, base)}
        for k, t in times.items()
    ]


def bundle_parts(name: str, device: torch.device, **overrides: Any) -> tuple[nn.Module, nn.Module, Any]:
    """A bundle's inference network as its ``inference.json`` runs it, the same network as built (what a
    MONAI user would run: default memory format, BatchNorm not folded), and the bundle's inferer.

    The first is the second with the bundle's ``FoldBatchNorm`` handler applied (``fold_batch_norm``) and in
    the bundle's memory format; the weights are the same (random here, so BatchNorm statistics are set
    away from the identity first, as a trained network's are).
    """
    from monai.bundle import ConfigParser

    from unet_monai.bundle import fold_as_configured

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / name / "configs" / "inference.json"))
    parser["device"] = f"$torch.device('{device}')"
    for key, value in overrides.items():
        parser[key] = value
    network = parser.get_parsed_content("network").eval()
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    plain = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    fold_as_configured(parser, network)
    return network, plain, parser.get_parsed_content("inferer")


def _infer_2d(args, device, bundle, feats, vol_shape, runner, log) -> dict[str, Any]:
    """A 2D bundle's path (neighbour slices as channels, batched, channels_last) vs MONAI's SliceInferer."""
    from monai.inferers import SliceInferer

    from unet_monai.data.transforms import volume_to_slice_stack

    torch.manual_seed(0)
    net_cl, net, ours = bundle_parts(bundle, device, features=list(feats))
    net_cl_unfolded = copy.deepcopy(net).to(memory_format=torch.channels_last)
    volume = _volume(vol_shape, device)
    with torch.inference_mode():  # MONAI's SliceInferer gets the same 3-channel input, built untimed
        stack = volume_to_slice_stack(volume[0], ours.num_slices).movedim(0, -1).unsqueeze(0).contiguous()
    monai_2d = SliceInferer(roi_size=vol_shape[:2], spatial_dim=2)  # defaults: sw_batch_size 1, overlap 0.25
    runs = {
        f"SliceStackInferer (2D bundles: sw_batch_size {ours.sw_batch_size}, channels_last, BatchNorm folded)": runner(
            lambda: ours(volume, net_cl)
        ),
        "MONAI SliceInferer defaults": runner(lambda: monai_2d(stack, net)),
        "MONAI SliceInferer defaults, channels_last model": runner(lambda: monai_2d(stack, net_cl_unfolded)),
    }
    if device.type == "cpu":  # an option, not the bundles' default (their amp is on for CUDA only)

        def bf16() -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                ours(volume, net_cl)

        runs["SliceStackInferer as the bundles + bfloat16 autocast (CPU option, not default)"] = bf16
    out: dict[str, Any] = {"bundle": bundle, "sw_batch_size_2d": ours.sw_batch_size}
    with torch.inference_mode():
        a, b = ours(volume, net_cl), monai_2d(stack, net)
        out["max_abs_diff_2d"] = float((a.float() - b.float()).abs().max())
    log(f"inference 2D: {bundle}, volume {vol_shape}, widths {feats}, max |diff| {out['max_abs_diff_2d']:.2e}")
    times = bench.interleaved_times(runs, args.infer_repeats, device, warmup=1, progress=log)
    out["rows_2d"] = _speed_rows(times, "MONAI SliceInferer defaults")
    return out


def run_inference(args, device, cfg, log) -> dict[str, Any]:
    """2D and 3D bundle inference paths against MONAI's default SliceInferer / SlidingWindowInferer."""
    from monai.inferers import SlidingWindowInferer

    amp = device.type == "cuda"
    feats = cfg["infer_features"]
    vol_shape = tuple(cfg["volume"])
    out: dict[str, Any] = {"features": list(feats), "volume": list(vol_shape), "amp": amp, "patch": list(cfg["patch"])}

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    def runner(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode(), autocast():
                fn()

        return call

    # 2D: both 2D bundles (their networks differ in how much channels_last gains)
    per_bundle = [_infer_2d(args, device, b, feats, vol_shape, runner, log) for b in BUNDLES_2D]
    out |= per_bundle[0]  # the UNet++ bundle's keys, as before
    out["bundles_2d"] = per_bundle

    # 3D: the 3D bundles' SlidingWindowInferer settings against its defaults
    gc.collect()
    volume = _volume(vol_shape, device)
    torch.manual_seed(0)
    patch = tuple(cfg["patch"])
    feats_3d = cfg["infer_features_3d"]
    out["features_3d"] = list(feats_3d)
    net3d, net3d_plain, bundle_3d = bundle_parts(BUNDLE_3D, device, features=list(feats_3d), patch_size=list(patch))
    monai_3d = SlidingWindowInferer(roi_size=patch)  # defaults: sw_batch_size 1, overlap 0.25, constant
    runs = {
        f"3D bundles: sw_batch_size {bundle_3d.sw_batch_size}, overlap {bundle_3d.overlap}, {bundle_3d.mode}": runner(
            lambda: bundle_3d(volume, net3d)
        ),
        "MONAI SlidingWindowInferer defaults": runner(lambda: monai_3d(volume, net3d_plain)),
    }
    log(f"inference 3D: volume {vol_shape}, patch {patch}")
    times = bench.interleaved_times(runs, args.infer_repeats_3d, device, warmup=0, progress=log)
    out["rows_3d"] = _speed_rows(times, "MONAI SlidingWindowInferer defaults")
    out["checks"] = [
        {
            "target": f"2D inference path >= {TARGET_SLICE_SPEEDUP:.1f}x faster than SliceInferer defaults"
            f" ({r['bundle']})",
            "measured": f"{r['rows_2d'][0]['speedup']:.2f}x",
            "value": r["rows_2d"][0]["speedup"],
            "pass": r["rows_2d"][0]["speedup"] >= TARGET_SLICE_SPEEDUP,
        }
        for r in per_bundle
    ]
    return out


def run_losses(args, device, log) -> dict[str, Any]:
    import benchmark_losses

    cases = benchmark_losses.QUICK_CASES if args.quick else benchmark_losses.CASES
    log(f"losses: {len(cases)} cases, {args.loss_repeats} repeats")
    return {"rows": benchmark_losses.run_cases(cases, args.loss_repeats, device)}


def run_data(args, log) -> dict[str, Any]:
    import benchmark_data

    argv = ["--cases", "4"]
    if args.quick:
        argv = ["--cases", "2", "--size", "40", "48", "--slices", "12", "16", "--spatial-size", "64"]
        argv += ["--baseline-slices", "4", "--patch", "24", "24", "16", "--num-samples", "2"]
    data_args = benchmark_data.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        log("data pipeline (1 torch thread, as in a DataLoader worker)")
        rows = benchmark_data.run(data_args)
    finally:
        torch.set_num_threads(threads)
    return {"arguments": vars(data_args), "rows": rows}


def _bundle_batch(parser: Any, kind: str) -> tuple[int, int, tuple[int, ...]]:
    """(batch, channels, spatial) of one training iteration of a bundle."""
    bs = int(parser.get_parsed_content("batch_size"))
    if kind == "2d":
        return bs, int(parser.get_parsed_content("num_slices")), tuple(parser.get_parsed_content("spatial_size"))
    if kind == "3d":
        return bs * int(parser["num_samples"]), 1, tuple(parser.get_parsed_content("patch_size"))
    return bs * int(parser["num_samples"]), 3, tuple(parser.get_parsed_content("spatial_size"))


def run_bundles(args, device, log) -> dict[str, Any]:
    """Each bundle's training step with AMP (its own network, loss, optimizer) and a 512x512x500 inference."""
    from monai.bundle import ConfigParser

    rows = []
    for configs in sorted((ROOT / "bundles").glob("*/configs")):
        name = configs.parent.name
        kind = "microscopy" if "microscopy" in name else ("3d" if "_3d_" in name else "2d")
        row: dict[str, Any] = {"bundle": name}
        try:
            parser = ConfigParser()
            parser.read_config(str(configs / "train.json"))
            parser["device"] = f"$torch.device('{device}')"
            parser["amp"] = device.type == "cuda"
            parser["compile"] = bool(args.compile)
            if isinstance(parser.get("class_weights"), dict) and "_target_" in parser["class_weights"]:
                parser["class_weights"] = "$torch.ones(@num_classes)"  # computed from the data otherwise
            if args.bundle_features:
                parser["features"] = list(args.bundle_features)
            row |= bundle_training(parser, kind, device, args)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            row |= bundle_inference(configs, device, args, kind)
            log(f"bundle {name}: {row.get('samples_per_s', 0):.1f} samples/s, inference {row.get('infer_s')}")
        except Exception as e:  # report and go on with the next bundle
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            log(f"bundle {name} failed: {row['error']}")
        rows.append(row)
    info = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    return {"rows": rows, "volume": list((32, 32, 16) if args.quick else GPU_VOLUME)} | info


def bundle_training(parser: Any, kind: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Samples per second and peak memory of the bundle's training iteration (its network, loss, optimizer)."""
    from unet_monai.bundle import memory_format

    network = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    inferer = parser.get_parsed_content("train#inferer")
    batch, channels, spatial = _bundle_batch(parser, kind)
    if args.quick:
        spatial = tuple(min(s, 32) for s in spatial)
    classes = int(parser.get_parsed_content("num_classes"))
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, channels, *spatial), generator=g).to(device)
    y = torch.randint(0, classes, (batch, 1, *spatial), generator=g).float().to(device)
    x = x.contiguous(memory_format=memory_format(parser.get_parsed_content("channels_last"), 3 if kind == "3d" else 2))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    network.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(inferer(x, network), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup + 1):
        step()
    probe = bench.PeakMemory(device)
    probe.start()
    times = [bench.time_call(step, device) for _ in range(args.steps)]
    median = statistics.median(times)
    return {
        "input": [batch, channels, *spatial],
        "step_s": median,
        "samples_per_s": batch / median,
        "peak_mib": probe.peak_mib(),
        "amp": amp,
    }


def bundle_inference(configs: Path, device: torch.device, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Seconds for one volume through the bundle's inference network and inferer (AMP on CUDA)."""
    from monai.bundle import ConfigParser

    from unet_monai.bundle import fold_as_configured

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser["device"] = f"$torch.device('{device}')"
    parser["compile"] = bool(args.compile)
    if args.bundle_features:
        parser["features"] = list(args.bundle_features)
    if kind == "microscopy":
        return {"infer_s": None, "infer_note": "2D images, not volumes"}
    if kind == "2d":  # the preprocessing resizes slices to spatial_size: done inside the inferer here
        parser["inferer"]["spatial_size"] = "@spatial_size"
    network = parser.get_parsed_content("network").eval()
    fold_as_configured(parser, network)  # what the bundle's FoldBatchNorm handler does after loading the weights
    inferer = parser.get_parsed_content("inferer")
    volume = _volume((32, 32, 16) if args.quick else GPU_VOLUME, device)
    amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        small = volume[..., : max(1, volume.shape[-1] // 8)]
        if kind == "3d":
            small = volume[..., :96, :96, :96]
        inferer(small, network)  # warm-up (cudnn autotuning)
        probe = bench.PeakMemory(device)
        probe.start()
        t = bench.time_call(lambda: inferer(volume, network), device)
    return {"infer_s": t, "infer_peak_mib": probe.peak_mib()}


# --------------------------------------------------------------------------------------------- document


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{value:,.{digits}f}{suffix}"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _checks(checks: list[dict[str, Any]]) -> str:
    return _table(
        ("target", "measured", ""), [(c["target"], c["measured"], "PASS" if c["pass"] else "FAIL") for c in checks]
    )


def plot_growth(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = (results.get("growth") or {}).get("rows", [])
    written = []
    for dims in (2, 3):
        sub = [r for r in rows if r["dims"] == dims and r["step_s"] is not None]
        if not sub:
            continue
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
        for key, label, *_ in NETWORKS:
            pts = sorted((r["size"], r["step_s"], r["peak_mib"]) for r in sub if r["network"] == key)
            if not pts:
                continue
            sizes = [p[0] for p in pts]
            ax_t.plot(sizes, [p[1] for p in pts], marker="o", label=label)
            ax_m.plot(sizes, [p[2] for p in pts], marker="o", label=label)
        for ax, what in ((ax_t, "training step (s)"), (ax_m, "peak training memory (MiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["size"] for r in sub}))
            ax.set_xticklabels([str(s) for s in sorted({r["size"] for r in sub})])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_xlabel(f"input size ({'x'.join(['N'] * dims)}, batch 1)")
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
        ax_t.legend(fontsize=8)
        fig.suptitle(f"{dims}D: cost against input size")
        fig.tight_layout()
        path = out_dir / f"growth_{dims}d.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)
    return written


def plot_networks(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (results.get("networks") or {}).get("rows", [])
    thr = {r["key"]: r for r in (results.get("throughput") or {}).get("rows", [])}
    if not rows:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    labels = [f"{r['label']} {r['dims']}D" for r in rows]
    colors = ["tab:blue" if r["dims"] == 2 else "tab:orange" for r in rows]
    values = [
        ([r["time_s"]["median"] for r in rows], "training step (s, median)"),
        ([r["peak_mib"] or 0 for r in rows], "peak training memory (MiB)"),
        ([100 * thr[r["key"]]["fraction"] if r["key"] in thr else 0 for r in rows], "conv FLOP/s, % of conv peak"),
    ]
    for ax, (vals, title) in zip(axes, values):
        ax.barh(labels, vals, color=colors)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    axes[2].axvline(100 * TARGET_THROUGHPUT_2D, color="k", ls="--", lw=1)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    path = out_dir / "networks.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path.name]


def _peak_row(dims: str, p: dict[str, Any]) -> tuple[str, ...]:
    return (f"{dims}D 3x3", "x".join(map(str, p["shape"])), _f(p["gflop"], 1), p["format"], _f(p["gflop_per_s"], 1))


def render(results: dict[str, Any], doc: Path, plot_dir: Path) -> None:
    """Write the Markdown document and its plots from the results."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_networks(results, plot_dir) + plot_growth(results, plot_dir)
    rel = plot_dir.relative_to(doc.parent) if plot_dir.is_relative_to(doc.parent) else plot_dir
    m = results.get("machine", {})
    s = results.get("settings", {})
    parts = [TEMPLATE["intro"]]
    cpu_run = m.get("device", "cpu") == "cpu"
    parts.append(
        "## This run\n\n"
        + _table(
            ("", ""),
            [
                ("date (UTC)", m.get("date", "")),
                ("device", m.get("device", "") + (f" ({m['gpu']})" if m.get("gpu") else "")),
                ("CPU", f"{m.get('cpu_model', '')}, {m.get('cpu_count', '')} cores"),
                ("torch threads", m.get("torch_threads", "")),
                ("networks, growth: AMP / channels_last", f"{s.get('amp', False)} / {s.get('channels_last', False)}"),
                ("torch / MONAI / Python", f"{m.get('torch', '')} / {m.get('monai', '')} / {m.get('python', '')}"),
                ("load average before / after", f"{m.get('load_average')} / {m.get('load_average_after')}"),
                ("command", f"`{s.get('command', '')}`"),
                ("sections", ", ".join(f"{k} ({v:.0f} s)" for k, v in s.get("section_seconds", {}).items())),
            ],
        )
    )
    all_checks = []
    for sec in CHECKED:
        all_checks += (results.get(sec) or {}).get("checks", [])
    if all_checks:
        parts.append("### Targets\n\n" + _checks(all_checks))

    net = results.get("networks")
    if net:
        thr = {r["key"]: r for r in (results.get("throughput") or {}).get("rows", [])}
        rows = []
        for r in net["rows"]:
            t = thr.get(r["key"], {})
            rows.append(
                (
                    f"{r['label']} {r['dims']}D",
                    "x".join(str(v) for v in r["input_shape"]),
                    f"{r['params']:,}" if r.get("params") else "",
                    _f(r.get("gflop"), 0),
                    _f(r["time_s"]["median"], 3),
                    _f(r["time_s"]["min"], 3),
                    _f(r.get("time_ratio"), 2, "x"),
                    (r.get("baseline") or "/").split("/", 1)[1],
                    _f(r.get("peak_mib"), 0),
                    _f(r.get("peak_ratio"), 2, "x"),
                    _f(t.get("conv_gflop_per_s"), 1),
                    _f(100 * t["fraction"], 0, "%") if t else "",
                )
            )
        header = (
            "network",
            "input",
            "params",
            "GFLOP/step",
            "step s (median)",
            "min s",
            "time ratio",
            "vs",
            "peak MiB",
            "mem ratio",
            "conv GFLOP/s",
            "% conv peak",
        )
        parts.append(
            TEMPLATE["networks"].format(u3=tuple(net.get("unet3plus_features", ())))
            + "\n\n"
            + _table(header, rows)
            + ("\n\n![networks](" + f"{rel}/networks.png)" if "networks.png" in plots else "")
        )
    pruning = results.get("pruning")
    if pruning:
        rows = [
            (
                r["label"],
                "x".join(str(v) for v in r["input_shape"]),
                _f(r.get("gflop"), 1),
                _f(r["time_s"]["median"], 3),
                _f(r["time_s"]["min"], 3),
                _f(r.get("time_ratio"), 2, "x"),
                (r.get("baseline") or "/").split("/", 1)[1],
            )
            for r in pruning["rows"]
        ]
        header = ("model", "input", "GFLOP", "infer s (median)", "min s", "ratio", "vs")
        parts.append(TEMPLATE["pruning"] + "\n\n" + _table(header, rows))
    thr_res = results.get("throughput")
    if thr_res:
        peaks = thr_res["peaks"]
        parts.append(
            TEMPLATE["throughput"]
            + "\n\n"
            + _table(
                ("conv peak", "shape (N, C, spatial)", "GFLOP", "best format", "GFLOP/s"),
                [_peak_row(d, p) for d, p in peaks.items()],
            )
        )
    growth = results.get("growth")
    if growth:
        rows = [
            (
                f"{r['dims']}D",
                r["size"],
                r["label"],
                "-".join(map(str, r["features"])),
                _f(r["step_s"], 3),
                _f(r["peak_mib"], 0),
                r.get("error") or "",
            )
            for r in growth["rows"]
        ]
        parts.append(
            TEMPLATE["growth"].format(d2=growth["divisor"].get("2", 1), d3=growth["divisor"].get("3", 1))
            + "\n\n"
            + "\n\n".join(f"![{p}]({rel}/{p})" for p in plots if p.startswith("growth"))
            + "\n\n"
            + _table(("dims", "size", "network", "widths", "step s", "peak MiB", "error"), rows)
        )
    opts = results.get("options")
    if opts:
        rows = [
            (o["variant"], _f((o["time_s"] or {}).get("median"), 3), _f(o["speedup"], 2, "x"), o["note"])
            for o in opts["rows"]
        ]
        parts.append(
            TEMPLATE["options"].format(shape="x".join(map(str, opts["shape"])))
            + "\n\n"
            + _table(("variant", "step s (median)", "speed vs fp32", "note"), rows)
        )
    inf = results.get("inference")
    if inf:
        tables_2d = ""
        for part in inf.get("bundles_2d", [{"bundle": BUNDLE_2D, "rows_2d": inf["rows_2d"]}]):
            t2 = [(r["path"], _f(r["time_s"]["median"], 2), _f(r["speedup"], 2, "x")) for r in part["rows_2d"]]
            tables_2d += f"\n\n2D, `{part['bundle']}` (seconds per volume):\n\n"
            tables_2d += _table(("path", "s / volume", "speed vs SliceInferer defaults"), t2)
        t3 = [(r["path"], _f(r["time_s"]["median"], 2), _f(r["speedup"], 2, "x")) for r in inf["rows_3d"]]
        parts.append(
            TEMPLATE["inference"].format(
                vol="x".join(map(str, inf["volume"])),
                feats="-".join(map(str, inf["features"])),
                feats3="-".join(map(str, inf.get("features_3d", inf["features"]))),
                b2=BUNDLE_2D,
                b3=BUNDLE_3D,
                sw2=inf.get("sw_batch_size_2d"),
                diff=f"{inf.get('max_abs_diff_2d', float('nan')):.1e}",
                patch=tuple(inf.get("patch", (96, 96, 96))),
            )
            + tables_2d
            + "\n\n3D (seconds per volume):\n\n"
            + _table(("path", "s / volume", "speed vs SlidingWindowInferer defaults"), t3)
            + "\n\n"
            + TEMPLATE["inference_after"]
        )
    losses = results.get("losses")
    if losses:
        rows = [
            (r["case"], _f(r["ours_s"], 3), _f(r["reference_s"], 3), _f(r["ratio"], 2, "x"), _f(r["abs_diff"], 7))
            for r in losses["rows"]
        ]
        parts.append(
            TEMPLATE["losses"]
            + "\n\n"
            + _table(("case", "MultiScaleSSIMLoss s", "pytorch-msssim s", "time ratio", "abs loss diff"), rows)
        )
    data = results.get("data")
    if data:
        rows = [
            (r["pipeline"], r["variant"], _f(r["setup_s"], 2), r["items"], _f(r["per_s"], 1) + f" {r['unit']}/s")
            for r in data["rows"]
        ]
        parts.append(TEMPLATE["data"] + "\n\n" + _table(("pipeline", "variant", "setup s", "items", "rate"), rows))
    bundles, gpu_note = results.get("bundles"), ""
    if bundles and bundles.get("gpu"):
        GPU_RECORD.parent.mkdir(parents=True, exist_ok=True)
        GPU_RECORD.write_text(json.dumps({"machine": m, "command": s.get("command"), "bundles": bundles}, indent=1))
    elif GPU_RECORD.is_file():
        record = json.loads(GPU_RECORD.read_text())
        bundles, gm = record["bundles"], record["machine"]
        gpu_note = (
            f"\n\nFrom the latest GPU run, not this one: {gm.get('date', '')[:10]}, torch {gm.get('torch')}, "
            f"CUDA {gm.get('cuda')}, MONAI {gm.get('monai')}; `{record.get('command')}` "
            f"(kept in `{GPU_RECORD.relative_to(ROOT)}`)."
        )
    if bundles and bundles.get("gpu"):
        rows = [
            (
                b["bundle"],
                "x".join(map(str, b.get("input", []))),
                _f(b.get("samples_per_s"), 1),
                _f(b.get("peak_mib"), 0),
                _f(b.get("infer_s"), 1),
                b.get("error") or b.get("infer_note") or "",
            )
            for b in bundles["rows"]
        ]
        parts.append(
            TEMPLATE["gpu"].format(gpu=bundles["gpu"], vol="x".join(map(str, bundles["volume"])))
            + gpu_note
            + "\n\n"
            + _table(("bundle", "training input", "samples/s (AMP)", "peak GPU MiB", "s / volume", "note"), rows)
        )
    else:
        parts.append(TEMPLATE["no_gpu"])
    parts.append(TEMPLATE["notes"])
    if cpu_run:
        parts.append(TEMPLATE["cpu_notes"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n\n".join(p.strip() for p in parts) + "\n")


TEMPLATE: dict[str, str] = {
    "intro": """
# Benchmarks

This file is written by `scripts/benchmark.py`, which runs every benchmark of the project in one process
and fills the tables and plots below from that run (`docs/benchmarks/*.png`; raw figures in
`benchmark_results/benchmark.json`, git-ignored). Only the text around the tables is fixed; do not edit the
tables by hand, run the script again:

```bash
python scripts/benchmark.py --threads 1            # CPU: about 30 minutes on the 2-core development machine
python scripts/benchmark.py --device cuda --amp --channels-last --compile   # GPU: AMP, compile, the bundles
python scripts/benchmark.py --sections inference,losses --merge   # re-run some sections, keep the others
python scripts/benchmark.py --quick --no-doc        # smoke run (tiny sizes, figures meaningless)
# on a 2-core machine: two halves at once, one thread each, then one document
python scripts/benchmark.py --threads 1 --sections networks,pruning,throughput,options --json a.json --no-doc &
python scripts/benchmark.py --threads 1 --sections growth,inference,losses,data,bundles --json b.json --no-doc; wait
python scripts/benchmark.py --combine a.json b.json
```

The single-purpose scripts it reuses still run on their own with more options:
`scripts/benchmark_networks.py` (also deep supervision and pruned UNet++ inference),
`scripts/benchmark_losses.py`, `scripts/benchmark_data.py` (`scripts/_bench.py` holds the shared timing
and peak-memory helpers).

**How to read the figures.** The development machines are shared 2-core CPUs whose speed drifts by 2x or
more with other jobs, so candidates are compared **within one run, interleaved**: the configurations of a
comparison are built in one process and run round-robin (the first one of a round rotates), and a
"ratio" is the median over rounds of the per-round ratio to the named baseline, so slow drift cancels.
Absolute seconds are indicative only. Peak memory is measured in a fresh process per configuration with
`MALLOC_MMAP_THRESHOLD_=65536` (glibc gives freed blocks back, so the resident set follows the live
tensors): the peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` first) during the training steps
minus the RSS before the first forward (model, optimizer and inputs built), i.e. activations, gradients,
Adam state and workspaces. `ru_maxrss` is not used: it also keeps the RSS a child had at `exec`, the
benchmark parent's at fork time. On CUDA the figure is `torch.cuda.max_memory_allocated` over the same steps.
""",
    "networks": """
## Networks: training step and peak memory

Training step = `zero_grad` + forward + cross-entropy + backward + `Adam.step`, 3 classes, 1 input
channel, random inputs and labels (fixed seeds), deep supervision off. UNet++ (ours) is
`UNetPlusPlus(features=(32, 32, 64, 128, 256), act=("leakyrelu", {{"negative_slope": 0.1, "inplace": True}}),
norm=("instance", {{"affine": True}}))`, MONAI BasicUNetPlusPlus's configuration (the same parameter count
up to the 3 side heads MONAI always builds); MONAI BasicUNet++ and BasicUNet are the MONAI classes with
their defaults (features `(32, 32, 64, 128, 256, 32)`); UNet 3+ is `UNet3Plus(features={u3})` with its
defaults (BatchNorm, ReLU) and `use_checkpointing` False / True ("ckpt", the memory-saving option).
"time ratio" and "mem ratio" are against the "vs" row, measured in this run. GFLOP per step are counted by
`torch.utils.flop_counter.FlopCounterMode` on the untimed warm-up step (model FLOPs: the recomputation of
checkpointed segments is not seen). The last two columns are the throughput section's.

What earlier runs showed (`scripts/benchmark_networks.py`, 2D `4x1x256x256` and 3D `1x1x64x64x64`, on
this machine), and why; the table below is this run's:

- **UNet++ vs MONAI BasicUNet++: the same convolutions, less copying.** Both run the same FLOPs, so the
  time ratio can only come from the data movement around them: this project's UNet++ concatenates each
  node's inputs once and crops (a view) where MONAI concatenates the skips, concatenates again in
  `UpCat` and always runs a replicate `F.pad` (a copy, and its backward). That is worth a few percent of
  a step (0.95x-0.98x) and 8-9% of the peak memory: "never measurably slower", not "clearly faster".
  Deep supervision (three 1x1 heads and three more cross-entropies) added nothing measurable.
- **UNet 3+ checkpointing** (`use_checkpointing=True`) recomputes the full-scale decoder's branches in
  the backward pass instead of keeping them: about half the peak memory (2D -52%, 3D -50%) for up to
  20% more time.
- **UNet 3+ is expensive by design, not by implementation.** At `d1` the five branches are convolved at
  full resolution after upsampling (the paper's order): the bottleneck branch alone is a 3x3 conv from
  the widest level to 32 channels on a full-resolution map. Its time ratio to BasicUNet follows its FLOP
  ratio (compare the GFLOP and conv GFLOP/s columns): it is slow because it computes more, not because
  it computes slowly.
""",
    "pruning": """
## Pruned UNet++ inference

The UNet++ above built with deep supervision (`deep_supervision_mode="fast"`), eval mode,
`torch.inference_mode`, `set_prune_level(L)` for L = 1..4 (L4 is the full network), against MONAI
BasicUNet++'s forward (deep supervision off), on the networks section's 2D input, interleaved; the ratio
is per round to the "vs" row. Pruning level L runs only the sub-network up to node X(0,L): L1/L2/L3
compute about 17% / 37% / 64% of L4's FLOPs (the paper reports L3 saving about 32% of the inference time).
""",
    "throughput": """
## Throughput: convolution FLOP/s as a fraction of the machine's peak

The networks table's "conv GFLOP/s" is the convolution FLOPs of one training step (forward and backward,
`FlopCounterMode`, operators `aten.convolution` and `aten.convolution_backward`) divided by the median
step time; "% conv peak" divides it by the convolution peak measured in the same run: the forward FLOP/s
of one large 3x3 convolution (the best of 5 runs, in the faster of the default and channels_last memory
formats). The target is at least 40% in 2D for this project's networks: the rest of a step (norms,
activations, concatenations, upsampling, the loss, the optimizer) is memory-bound work that does not
count as FLOPs, and small convolutions at the deep levels run below the peak.
""",
    "growth": """
## Cost growth: step time and peak memory against input size

One training step (batch 1, same settings as above) per network and size, each point in a fresh
process: the step time is the faster of the steps after the first (`--growth-steps`, default 2 steps),
the peak memory is over all of them. On CPU the widths are divided by {d2} in 2D and {d3} in 3D
(shown in the table) so that 2D 512 and 3D 96 fit the run's time; the growth with size, which is
what these curves show, is a property of the architecture, not of the widths. On a GPU the full widths
are used. Both axes are logarithmic: a slope of 2 (2D) or 3 (3D) against the side length is linear
growth in the number of pixels/voxels.
""",
    "options": """
## Options: AMP, channels_last, torch.compile, cudnn.benchmark

UNet++ (ours) training step at `{shape}`, the variants interleaved in one process; "speed vs fp32" is
the inverse of the per-round time ratio to the fp32 row. On CUDA: float16 autocast with gradient scaling,
bfloat16 autocast, channels_last, `torch.compile` through `unet_monai.bundle.compile_network` (the bundles'
`compile` flag; it falls back to eager execution with a warning when compiling fails, and the row says so)
and `cudnn.benchmark` off against the default on. On CPU only fp32, channels_last and bfloat16 autocast are
measured (and `torch.compile` with `--compile`: inductor needs a C++ compiler and minutes of compiling);
CPU bfloat16 is only fast on processors with native bfloat16 instructions (this one has AVX512-BF16).
The UNet++ here is the InstanceNorm configuration of the networks section; on this CPU channels_last made
its training step slower (instance norm and channel concatenations are slower in channels_last there),
so measure before turning it on for CPU training.

In the bundles: `amp` (`$torch.device(@device).type == 'cuda'`: float16 autocast + gradient scaling on CUDA, off on
CPU), `channels_last` (2D bundles: default true; 3D bundles: true on CPU, false on CUDA, where it is not
measured yet; read through `unet_monai.bundle.memory_format`), `compile` (default false) and `deterministic` (default
false: `cudnn.benchmark=True`; the inference configs always set it) are config ids, overridable on the
command line (`--compile true`).
""",
    "inference": """
## Inference: seconds per {vol} volume

Each path runs the network and inferer that the bundle's own `configs/inference.json` builds
(the 2D bundles `{b2}` and `liver_ct_unet3plus_2d_segmentation`, the 3D bundle `{b3}`, parsed with MONAI's
`ConfigParser`), with the widths overridden to `{feats}` (2D)
and `{feats3}` (3D) in this run (the bundles' widths are 32-64-128-256-512; on CPU the full widths
would take many minutes per volume), the same weights for both paths, eval mode (the final output),
`torch.inference_mode`, float16 autocast on CUDA.

- **2D**: the 2D bundles' path is `unet_monai.inferers.SliceStackInferer(num_slices=3,
  sw_batch_size=@sw_batch_size)` with the network as their `inference.json` runs it: in channels_last
  (`channels_last: true`) and with every BatchNorm folded into the convolution before it once the weights
  are loaded (`fold_batch_norm: true`, the `unet_monai.handlers.FoldBatchNorm` handler after
  `CheckpointLoader`); each axial slice with its two neighbours as channels, `sw_batch_size` slices per
  forward ({sw2} in this run: the bundles use 32 on CUDA, UNet 3+ 8, and 1 on CPU), no overlap.
  MONAI's equivalent for a 2D network on a volume is `monai.inferers.SliceInferer` (a
  `SlidingWindowInferer` subclass), used here **with its default settings** (`sw_batch_size=1`,
  `overlap=0.25`, `mode="constant"`), `roi_size` the whole slice, `spatial_dim=2`, on the network as built
  (default memory format, BatchNorm as trained: what a MONAI user runs), and given the same 3-channel
  neighbour stack (built untimed). A third row gives SliceInferer the channels_last network without
  folding, to separate the effects; on CPU a fourth adds bfloat16 autocast to the bundles' path (an
  option, not their default: `amp` is on for CUDA only). The BatchNorm statistics are set away from the
  identity first (random weights otherwise), as a trained network's are. Largest difference between the
  outputs of the first two rows: {diff}.
- **3D**: the 3D bundles' `SlidingWindowInferer(roi_size={patch}, sw_batch_size=4, overlap=0.5,
  mode="gaussian")` on the folded network against `SlidingWindowInferer(roi_size={patch})` with the
  defaults (`sw_batch_size=1`, `overlap=0.25`, `mode="constant"`) on the network as built. The bundles'
  overlap of 0.5 means more windows (50 against 32 for this volume: smoother, more accurate borders), so it
  is slower unless batching pays more than the extra
  windows cost; there is no target for it.
""",
    "inference_after": """
Where the 2D time goes (profile of the bundles' path on CPU, `torch.profiler`): the convolutions take
about two thirds, the decoder's concatenations about 13%, batch norm about 7%; slicing the volume into
neighbour stacks and writing the outputs back is below 1%. SliceInferer's own overhead with a
whole-slice window is small too (it ran as fast as calling the network slice by slice), so on CPU the
only gains are channels_last and the batch size, and the batch works against it: in separate
measurements on this CPU (same volume, speed relative to SliceInferer's defaults) the bundles' path ran
1.31x / 1.35x / 1.33x / 1.13x with 1 / 2 / 4 / 8 slices per forward at widths 8..128, and 1.17x / 1.08x /
0.90x with 1 / 2 / 8 slices at the bundles' widths 32..512 (the activations of a large batch leave the
caches; 32 slices ran at 0.8x). So the 2D bundles now use 32 slices per forward on CUDA, where large
batches fill the GPU, and 1 on CPU. Mixed precision is the one large CPU gain (the bfloat16 row, on a CPU
with AVX512-BF16), but it changes the numerics, so the bundles keep float32 on CPU (`amp` is on for CUDA
only).

BatchNorm folding (`fold_batch_norm`, 2026-11-22) is what took the UNet++ bundle over the target: in
channels_last, BatchNorm ran 2.2x slower than in the default format (4.8 against 2.2 ms per 256x256 slice,
one thread, widths 8..128), eating part of the convolutions' 1.56x gain (54 against 85 ms); folded, it costs
nothing. UNet++ went from 1.48x (channels_last alone, the previous run) to 1.52x (per round 1.52x, 1.54x,
1.47x: at the target, not clear of it); its channels_last row without folding measured 1.35x in the same
run. The UNet 3+ path did not change measurably (1.62x folded, 1.61x unfolded channels_last).

The UNet 3+ bundle's path gains more from channels_last than the UNet++ one (its table): every decoder
node of UNet 3+ concatenates five 8-channel (at these widths; 64 at the bundles') full-scale branches
and convolves the 40 channels at the node's resolution, so more of its time is in wide convolutions at
high resolution, the kind channels_last speeds up on this CPU; UNet++'s many narrow nested nodes gain
less. SliceStackInferer gathers whole contiguous planes (the volume is moved axial-axis-first once) and
writes whole output planes; per slice it runs about 2% faster than SliceInferer on the same
channels_last network (68.3 ms against 69.6 ms per 256x256 slice at widths 8..128, measured separately;
the first against the third row of each table, before folding).

The UNet++ heads (2026-11-22, session 17): in eval mode with deep supervision the bundles' UNet++ returns the
mean of its four 1x1 heads, and channels_last sent each narrow 1x1 convolution (8 -> 3 channels at these
widths) to PyTorch's slow generic kernel: four of them plus the additions took 5.9 ms per 256x256 slice, one
thread. The mean of linear heads is one 1x1 convolution of the four inputs concatenated, with the heads'
weights concatenated and divided by four (`UNetPlusPlus._mean_head`): 1.7 ms, the same output to 3e-8. Its
effect on the bundle's path, measured against the previous code in one interleaved run (3 rounds, same
weights): 10.2 against 10.6 s per volume (medians) (1.53x against 1.48x SliceInferer's defaults), about 3%.
Profile of what is left (per slice, channels_last, folded, 70 ms): the 3x3 convolutions 77% (the ones at
256x256 with 8 output channels alone 44%: half an AVX-512 register wide), the merged head 2%, the
concatenations 10% (in channels_last a concatenation along the channels interleaves every pixel: 2x the time
of the default format's block copies), the transposed convolutions 6%, ReLU and pooling 3%. Neither
TorchScript freezing nor `torch.jit.optimize_for_inference` helped (98 / 115 ms against 91 ms per slice:
MKLDNN's blocked layouts do not pay at 8-128 channels). The 2D target is met in this run (per round 1.55x,
1.64x, 1.51x), but the margin is within the run-to-run spread of this VM (the baseline alone has measured
13.0-15.2 s per volume).
""",
    "losses": """
## MS-SSIM loss against pytorch-msssim

`unet_monai.losses.MultiScaleSSIMLoss` against `pytorch_msssim.ms_ssim` (an independent implementation),
forward + backward on the same probabilities and one-hot targets, same window, alternating runs (median);
"abs loss diff" is the difference of the two losses' values. pytorch-msssim rejects window 11 below 161
voxels per side, so the 3D comparison uses window 5; this project's loss also runs the default window 11
on 96^3 patches (4 scales after its automatic reduction), where there is no reference to compare with.
""",
    "data": """
## Data pipeline: with and without caching

`scripts/benchmark_data.py` on generated LiTS-like volumes (4 cases), one torch thread as in a DataLoader
worker: rates are per worker. 2.5D: re-reading and preprocessing the volume for every slice (what caching
avoids) against MONAI's PersistentDataset and CacheDataset and this project's `LiTSSliceDataset` (float16
arrays in RAM, or memory-mapped `.npy` files on disk, cold and warm; with augmentation). 3D:
`lits_3d_transforms("train")` through Dataset (no cache), CacheDataset and PersistentDataset.
""",
    "gpu": """
## GPU: bundle training throughput, peak memory and 512x512x500 inference

Measured on **{gpu}**. Each bundle's own `train.json` network, loss, optimizer and training inferer with
AMP (float16 autocast + gradient scaling, as the bundles' trainer does), one training iteration's input
(batch size x samples per volume), random data; peak memory is `torch.cuda.max_memory_allocated` over the
timed steps. Inference: the bundle's `inference.json` network and inferer on one {vol} volume with AMP (2D
bundles: the slices resized to the bundle's `spatial_size` inside the inferer, as the preprocessing does).
""",
    "no_gpu": """
## GPU

**Not measured: no GPU was available to the run that wrote this file**, so there are no GPU figures
here (none are estimated). `scripts/benchmark.py --device cuda` measures on a GPU: the sections above at GPU
sizes (full widths, larger batches, AMP float16/bfloat16, channels_last, `torch.compile`,
`cudnn.benchmark`, memory from `torch.cuda.max_memory_allocated`) and each bundle's training throughput
and peak GPU memory with AMP plus the inference time of a 512x512x500 volume, recorded with the GPU model.
""",
    "notes": """
## What could be optimized

- **Page faults of the default glibc allocator (CPU, environment).** A CPU training step re-faults its
  large activations: glibc serves blocks above its mmap threshold with `mmap` and unmaps them on free,
  so every step pays for fresh zero-filled pages again. With `MALLOC_MMAP_MAX_=0
  MALLOC_TRIM_THRESHOLD_=100000000000` (heap only, never trimmed) a UNet++ step at 4x1x128x128 was about
  15% faster in an earlier measurement; a caching allocator (jemalloc, tcmalloc via `LD_PRELOAD`) should
  do the same. It changes every network alike (the ratios hold); the memory benchmark must not use it.
- **UNet 3+ (an architecture option, a different model).** Projecting the upsampled branches to
  `cat_channels` with a 1x1 conv *before* upsampling would cut the full-resolution cost of `d1` several
  fold and the need for checkpointing with it, but it is not the paper's network.
- Inplace LeakyReLU after InstanceNorm (MONAI's `Convolution`) adds a `CopySlices` copy per unit in the
  backward; switching it off measured no gain.
""",
    "cpu_notes": """
## Notes on this CPU run

With the default 2 threads on a busy 2-core machine every OpenMP region waits for a descheduled
thread (a 64x64 step once took 4 s instead of 0.07 s); one thread gets a steady share of a core, so
CPU runs use `--threads 1` while other jobs run, and the figures are per core. The stalls cost per
operation, not per FLOP: networks with many small operations (BasicUNet) lose most.
""",
}


# ------------------------------------------------------------------------------------------------- main


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result dict from several runs' (a later run's section replaces an earlier one's)."""
    out: dict[str, Any] = {}
    commands, seconds = [], {}
    for run in runs:
        out |= {k: v for k, v in run.items() if k not in ("machine", "settings")}
        commands.append(run.get("settings", {}).get("command", ""))
        seconds |= run.get("settings", {}).get("section_seconds", {})
    out["machine"] = dict(runs[0].get("machine", {}))
    out["machine"]["load_average_after"] = runs[-1].get("machine", {}).get("load_average_after")
    out["settings"] = dict(runs[0].get("settings", {})) | {
        "command": " ; ".join(commands) + " ; then --combine",
        "section_seconds": seconds,
    }
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: all cores)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes and widths, 1 step, 1 thread")
    p.add_argument("--steps", type=int, default=3, help="timed interleaved training rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration first")
    p.add_argument("--mem-steps", type=int, default=2, help="training steps per memory worker process")
    p.add_argument("--mem-jobs", type=int, default=1, help="memory / growth worker processes at once (CPU)")
    p.add_argument("--growth-steps", type=int, default=2, help="training steps per growth point")
    p.add_argument("--infer-repeats", type=int, default=2, help="timed interleaved rounds, 2D inference")
    p.add_argument("--infer-repeats-3d", type=int, default=1, help="timed interleaved rounds, 3D inference")
    p.add_argument("--loss-repeats", type=int, default=3)
    p.add_argument("--prune-repeats", type=int, default=7, help="timed interleaved rounds, pruned inference")
    p.add_argument("--worker-timeout", type=float, default=1800.0)
    p.add_argument("--skip-memory", action="store_true", help="networks section: no memory worker processes")
    p.add_argument("--paper-widths", action="store_true", help="UNet 3+ with 64..1024 on CPU too")
    p.add_argument("--amp", action="store_true", help="networks and growth: autocast (CUDA float16, CPU bfloat16)")
    p.add_argument("--channels-last", action="store_true", help="networks and growth: 2D in channels_last")
    p.add_argument("--compile", action="store_true", help="also time torch.compile on CPU; compile the bundles")
    p.add_argument("--bundle-features", type=int, nargs=5, help="bundles section: override the widths (smoke runs)")
    p.add_argument("--bundles-on-cpu", action="store_true", help="run the bundles section without CUDA (smoke)")
    p.add_argument("--json", default="benchmark_results/benchmark.json")
    p.add_argument("--doc", default="docs/benchmarks.md")
    p.add_argument("--plots", default="docs/benchmarks", help="folder of the PNG plots")
    p.add_argument("--no-doc", action="store_true", help="do not write the document and plots")
    p.add_argument("--merge", action="store_true", help="keep the other sections of the existing --json")
    p.add_argument("--render-only", action="store_true", help="write the document from --json, measure nothing")
    p.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="merge the sections of these result files (e.g. of two runs of some sections each) into --json, "
        "then write the document; measures nothing",
    )
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.quick:
        args.steps, args.warmup, args.infer_repeats, args.loss_repeats, args.mem_steps = 1, 1, 1, 1, 1
        args.prune_repeats = 1
        args.threads = args.threads or 1
        args.bundle_features = args.bundle_features or [4, 8, 8, 16, 16]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_json, doc, plot_dir = Path(args.json), ROOT / args.doc, ROOT / args.plots
    if args.combine:
        results = combine([json.loads(Path(f).read_text()) for f in args.combine])
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1, default=str))
        args.render_only = True
    if args.render_only:
        render(json.loads(out_json.read_text()), doc, plot_dir)
        print(f"wrote {doc}")
        return 0
    device = bench.pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    cfg = settings_for(args, device)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[benchmark {time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    if args.merge and out_json.exists():
        results = json.loads(out_json.read_text())
    machine = bench.machine_info(device)
    results["machine"] = machine
    results["settings"] = {
        "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in cfg.items()},
        "steps": args.steps,
        "warmup": args.warmup,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "threads": args.threads,
        "quick": args.quick,
        "section_seconds": (results.get("settings") or {}).get("section_seconds", {}) if args.merge else {},
    }
    print(f"device {device}, threads {args.threads}, sections {args.sections}, load {machine['load_average']}")

    def save() -> None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str))
        tmp.replace(out_json)

    runners: dict[str, Callable[[], dict[str, Any] | None]] = {
        "networks": lambda: run_networks(args, device, cfg, log),
        "pruning": lambda: run_pruning(args, device, cfg, log),
        "growth": lambda: run_growth(args, device, cfg, log),
        "throughput": lambda: run_throughput(args, device, results, log),
        "options": lambda: run_options(args, device, cfg, log),
        "inference": lambda: run_inference(args, device, cfg, log),
        "losses": lambda: run_losses(args, device, log),
        "data": lambda: run_data(args, log),
        "bundles": lambda: (
            run_bundles(args, device, log)
            if device.type == "cuda" or args.bundles_on_cpu
            else {"rows": [], "gpu": None, "note": "no CUDA device: not measured"}
        ),
    }
    for name in SECTIONS:
        if name not in args.sections:
            continue
        t0 = time.perf_counter()
        log(f"section {name}")
        try:
            results[name] = runners[name]()
        except Exception as e:  # one failing section must not lose the others
            log(f"section {name} failed: {type(e).__name__}: {e}")
            results[name + "_error"] = f"{type(e).__name__}: {e}"
        results["settings"]["section_seconds"][name] = time.perf_counter() - t0
        save()
    results["machine"]["load_average_after"] = bench.machine_info(device)["load_average"]
    save()
    checks = [c for sec in CHECKED for c in (results.get(sec) or {}).get("checks", [])]
    print("\nTargets" + (" (quick smoke run: the figures mean nothing)" if args.quick else ""))
    for c in checks:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {c['measured']}")
    print(f"wrote {out_json}")
    if not args.no_doc:
        render(results, doc, plot_dir)
        print(f"wrote {doc} and plots in {plot_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
