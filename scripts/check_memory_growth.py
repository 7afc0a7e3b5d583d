"""Check that resident memory does not grow across training epochs nor across predicting a folder of volumes.

Runs, in this process and through MONAI's ``ConfigWorkflow``, a bundle's real ``train.json`` for a few epochs
and its ``inference.json`` over a folder of generated volumes, at reduced widths and sizes. The resident
set size (RSS, ``VmRSS`` of ``/proc/self/status``, after ``gc.collect()``) is sampled at the end of every
training epoch and after every predicted volume. The first epoch / volume is warm-up (allocator pools,
caches, lazily imported modules); growth is measured from there:

    growth = (RSS at the last sample - RSS after warm-up) / RSS after warm-up

and must stay within ``--limit`` percent (default 5); the exit status is 1 when it does not. The volumes
to predict all have one size by default; with ``--vary-sizes`` the RSS rises with the largest volume seen
so far and then levels off (``second_half_growth_pct`` tells a leak from that).

Example::

    python scripts/check_memory_growth.py --epochs 8 --volumes 50
    python scripts/check_memory_growth.py --bundle liver_ct_unetplusplus_3d_segmentation --epochs 6 --volumes 20
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_2D = {"features": [8, 16, 16, 32, 32], "spatial_size": [64, 64], "batch_size": 4, "sw_batch_size": 16}
TINY_3D = {
    "features": [4, 8, 8, 16, 16],
    "spacing": [3.0, 3.0, 3.0],
    "patch_size": [32, 32, 32],
    "num_samples": 2,
    "batch_size": 1,
}


TRIM = False  # --malloc-trim: hand freed heap memory back to the system before each sample


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux ``/proc``), after a garbage collection."""
    gc.collect()
    if TRIM:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status (this script needs Linux).")


def summary(name: str, samples: list[float], warmup: int = 1) -> dict[str, Any]:
    """RSS figures in MiB and growth in percent.

    ``growth_pct``: last sample against the sample after warm-up (the first ``warmup`` samples).
    ``second_half_growth_pct``: last sample against the middle one; a leak grows in both halves, while an
    allocator's high-water mark (set by the largest input seen so far) levels off.
    """
    base = samples[warmup - 1]
    after = samples[warmup - 1 :]
    middle = samples[len(samples) // 2]
    return {
        "phase": name,
        "samples": len(samples),
        "after_warmup_mib": round(base, 1),
        "last_mib": round(samples[-1], 1),
        "max_mib": round(max(after), 1),
        "growth_pct": round(100.0 * (samples[-1] - base) / base, 2),
        "max_growth_pct": round(100.0 * (max(after) - base) / base, 2),
        "second_half_growth_pct": round(100.0 * (samples[-1] - middle) / middle, 2),
    }


def copy_bundle(name: str, dest: Path) -> Path:
    target = dest / name
    ignore = shutil.ignore_patterns("models", "eval", "data", "predictions")
    shutil.copytree(REPO / "bundles" / name, target, ignore=ignore)
    return target


def measure_training(bundle: Path, dataset: Path, epochs: int, overrides: dict[str, Any]) -> list[float]:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        workflow_type="train",
        logging_file=False,
        bundle_root=str(bundle),
        dataset_dir=str(dataset),
        epochs=epochs,
        val_interval=2,
        val_fraction=0.2,
        **overrides,
    )
    workflow.initialize()
    samples: list[float] = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: samples.append(rss_mib()))
    workflow.run()
    workflow.finalize()
    return samples


def measure_inference(bundle: Path, volumes: Path, output: Path, overrides: dict[str, Any]) -> list[float]:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    keys = ("features", "spatial_size", "sw_batch_size", "spacing", "patch_size")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    quiet = {  # SaveImaged logs every file it writes
        f"postprocessing#transforms#{i}#print_log": False
        for i, t in enumerate(config["postprocessing"]["transforms"])
        if t["_target_"] == "SaveImaged"
    }
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        workflow_type="infer",
        logging_file=False,
        bundle_root=str(bundle),
        dataset_dir=str(volumes),
        output_dir=str(output),
        **{k: v for k, v in overrides.items() if k in keys},
        **quiet,
    )
    workflow.initialize()
    samples: list[float] = []
    evaluator = workflow.parser.get_parsed_content("evaluator")
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: samples.append(rss_mib()))
    workflow.run()
    workflow.finalize()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="liver_ct_unet3plus_2d_segmentation")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--volumes", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--vary-sizes",
        action="store_true",
        help="predict volumes of varied sizes (48-64 voxels in-plane, 12-20 slices) instead of 56x56x16 each",
    )
    parser.add_argument(
        "--malloc-trim",
        action="store_true",
        help="call glibc's malloc_trim(0) before each sample: tells allocator high-water marks from leaks",
    )
    parser.add_argument("--limit", type=float, default=5.0, help="allowed growth after warm-up, in percent")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given; a temporary folder otherwise")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    global TRIM
    TRIM = args.malloc_trim

    import torch

    from unet_monai.data import generate_dataset
    from unet_monai.utils.io import save_json_atomic

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="memory_growth_"))
    workdir.mkdir(parents=True, exist_ok=True)
    is_3d = "_3d_" in args.bundle
    overrides = {**(TINY_3D if is_3d else TINY_2D), "num_workers": args.num_workers}
    try:
        start = time.perf_counter()
        train_data, volumes = workdir / "train_data", workdir / "volumes"
        generate_dataset(train_data, num_cases=args.train_cases, seed=0, size=(64, 80), slices=(16, 24))
        size, slices = ((48, 64), (12, 20)) if args.vary_sizes else (56, 16)
        generate_dataset(volumes, num_cases=args.volumes, seed=1, size=size, slices=slices)
        bundle = copy_bundle(args.bundle, workdir)
        print(f"data generated in {time.perf_counter() - start:.0f} s; torch threads: {torch.get_num_threads()}")

        start = time.perf_counter()
        train = measure_training(bundle, train_data, args.epochs, overrides)
        print(f"training: {args.epochs} epochs in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        infer = measure_inference(bundle, volumes, workdir / "predictions", overrides)
        print(f"inference: {len(infer)} volumes in {time.perf_counter() - start:.0f} s")
        predicted = len(list((workdir / "predictions").glob("*_seg.nii.gz")))
        if predicted != args.volumes:
            print(f"expected {args.volumes} predictions, found {predicted}")
            return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    results = [summary("training (per epoch)", train), summary("inference (per volume)", infer)]
    header = list(results[0])
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(r[h]) for h in header))
    print("training RSS per epoch (MiB):", [round(x, 1) for x in train])
    print("inference RSS every 10 volumes (MiB):", [round(x, 1) for x in infer[::10]] + [round(infer[-1], 1)])
    if args.json is not None:
        record = {"bundle": args.bundle, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
        record.update({"train_rss_mib": train, "infer_rss_mib": infer})
        save_json_atomic(record, args.json, indent=1)
    failed = [r["phase"] for r in results if r["growth_pct"] > args.limit]
    if failed:
        print(f"FAIL: RSS grew by more than {args.limit}% after warm-up in: {', '.join(failed)}")
        return 1
    print(f"OK: RSS growth after warm-up within {args.limit}% (pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
