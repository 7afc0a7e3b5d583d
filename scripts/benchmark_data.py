"""Data pipeline throughput on generated LiTS-like data: 2.5D slices/s and 3D patches/s, with and without caching.

Prints a table (figures, not a pass/fail test). The machines are shared, so compare rows of one run
as ratios rather than absolute numbers across runs. Torch runs with one thread by default, as in
DataLoader worker processes: the rates are per worker.

2.5D rows:
- ``re-read per slice``: the whole volume preprocessed for every slice (what caching avoids);
- ``PersistentDataset``: MONAI's disk cache of the preprocessed volume (``.pt``), loaded whole per slice;
- ``CacheDataset``: MONAI's in-memory cache of the volumes, stacked per slice (each access deep-copies
  the cached volume);
- ``LiTSSliceDataset memory`` / ``disk (cold, warm)``: this project's dataset (float16 arrays in RAM, or
  memory-mapped ``.npy`` files); ``+ augmentation`` adds ``lits_2d_augmentation``.

3D rows: ``lits_3d_transforms("train")`` through ``Dataset`` (no cache), ``CacheDataset`` (everything
before the random crop cached in RAM) and ``PersistentDataset`` (cached on disk).

Usage::

    python scripts/benchmark_data.py --cases 6 --json benchmark_results/data.json
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.utils import set_determinism

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet_monai.data import (
    LiTSSliceDataset,
    generate_dataset,
    lits_2d_augmentation,
    lits_2d_preprocessing,
    lits_3d_transforms,
    volume_to_slice_stack,
)
from unet_monai.utils.io import save_json_atomic


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _best(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs (the machines are shared: the minimum is the least disturbed)."""
    return min(_timed(fn)[0] for _ in range(repeats))


def _serve(ds, order) -> None:
    """Fetch the samples in ``order`` and drop them (keeping them would time the allocation of GBs)."""
    for i in order:
        ds[int(i)]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_2d(datalist: list[dict], work: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    size = (args.spatial_size, args.spatial_size)
    pre = lits_2d_preprocessing("val", spatial_size=size)
    common = {"num_slices": args.num_slices, "spatial_size": size, "neg_fraction": args.neg_fraction}

    # this project's dataset, in memory and on disk
    setup, ds = _timed(lambda: LiTSSliceDataset(datalist, **common))
    # timed blocks of at least ~2000 samples (several shuffled epochs): sub-second timings are too noisy here
    epochs = max(1, -(-2000 // len(ds)))
    order = np.concatenate([np.random.default_rng(e).permutation(len(ds)) for e in range(epochs)])
    n_all = len(order)
    t = _best(lambda: _serve(ds, order), 3)
    rows.append(_row("2.5D", "LiTSSliceDataset memory cache", setup, n_all, t, "slices"))
    cache = work / "slice_cache"
    setup, disk = _timed(lambda: LiTSSliceDataset(datalist, cache_dir=cache, **common))
    t = _best(lambda: _serve(disk, order), 3)
    rows.append(_row("2.5D", "LiTSSliceDataset disk cache, cold (builds)", setup, n_all, t, "slices"))
    setup, disk = _timed(lambda: LiTSSliceDataset(datalist, cache_dir=cache, **common))
    t = _best(lambda: _serve(disk, order), 3)
    rows.append(_row("2.5D", "LiTSSliceDataset disk cache, warm (reused)", setup, n_all, t, "slices"))
    setup, aug = _timed(lambda: LiTSSliceDataset(datalist, transform=lits_2d_augmentation(), **common))
    t, _ = _timed(lambda: _serve(aug, order[: len(ds)]))
    rows.append(_row("2.5D", "LiTSSliceDataset memory + lits_2d_augmentation", setup, len(ds), t, "slices"))

    # baselines on a sample of the same slices (they are slow)
    sample = [tuple(int(x) for x in ds._index[int(i)]) for i in order[: args.baseline_slices]]

    def reread() -> None:
        for v, z in sample:
            out = pre(dict(datalist[v]))
            volume_to_slice_stack(out["image"], args.num_slices, indices=[z])

    t, _ = _timed(reread)
    rows.append(_row("2.5D", "no cache: re-read volume per slice", 0.0, len(sample), t, "slices"))

    persistent = PersistentDataset(datalist, transform=pre, cache_dir=work / "persistent_2d")
    setup, _ = _timed(lambda: [persistent[i] for i in range(len(datalist))])

    def from_persistent() -> None:
        for v, z in sample:
            volume_to_slice_stack(persistent[v]["image"], args.num_slices, indices=[z])

    t, _ = _timed(from_persistent)
    rows.append(_row("2.5D", "MONAI PersistentDataset (volume .pt per slice)", setup, len(sample), t, "slices"))

    setup, cached = _timed(lambda: CacheDataset(datalist, transform=pre, progress=False))

    def from_cache() -> None:
        for v, z in sample:
            volume_to_slice_stack(cached[v]["image"], args.num_slices, indices=[z])

    t, _ = _timed(from_cache)
    rows.append(_row("2.5D", "MONAI CacheDataset (volume in RAM, copied per slice)", setup, len(sample), t, "slices"))


def bench_3d(datalist: list[dict], work: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    def make():
        return lits_3d_transforms("train", patch_size=tuple(args.patch), num_samples=args.num_samples)

    n = len(datalist) * args.num_samples

    def epoch(ds) -> int:
        return sum(len(ds[i]) for i in range(len(ds)))

    set_determinism(0)
    t, count = _timed(lambda: epoch(Dataset(datalist, transform=make())))
    rows.append(_row("3D", "Dataset, no cache", 0.0, count, t, "patches"))
    setup, cds = _timed(lambda: CacheDataset(datalist, transform=make(), progress=False))
    t, count = _timed(lambda: epoch(cds))
    rows.append(_row("3D", "CacheDataset (in memory)", setup, count, t, "patches"))
    pds = PersistentDataset(datalist, transform=make(), cache_dir=work / "persistent_3d")
    t_cold, _ = _timed(lambda: epoch(pds))
    t, count = _timed(lambda: epoch(pds))
    rows.append(_row("3D", "PersistentDataset (disk), warm epoch", t_cold, count, t, "patches"))
    assert count == n


def _row(pipeline: str, variant: str, setup: float, items: int, seconds: float, unit: str) -> dict:
    return {
        "pipeline": pipeline,
        "variant": variant,
        "setup_s": round(setup, 2),
        "items": items,
        "seconds": round(seconds, 2),
        "per_s": round(_rate(items, seconds), 1),
        "unit": unit,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--size", type=int, nargs=2, default=[128, 192], help="in-plane size range of the generated cases")
    p.add_argument("--slices", type=int, nargs=2, default=[48, 96], help="slice-count range of the generated cases")
    p.add_argument("--spatial-size", type=int, default=256, help="2.5D network size")
    p.add_argument("--num-slices", type=int, default=3)
    p.add_argument("--neg-fraction", type=float, default=0.1)
    p.add_argument("--baseline-slices", type=int, default=24, help="slices timed for the slow baselines")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32], help="3D patch size")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1, as in DataLoader workers; 0: default)")
    p.add_argument("--data", default=None, help="use this dataset folder instead of generating one")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    """Generate (or find) the data, run the 2.5D and 3D measurements and return the table rows."""
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        if args.data:
            from unet_monai.data import find_cases

            datalist = find_cases(args.data)[: args.cases]
            gen_s = 0.0
        else:
            gen_s, datalist = _timed(
                lambda: generate_dataset(
                    work / "lits", num_cases=args.cases, seed=0, size=tuple(args.size), slices=tuple(args.slices)
                )
            )
        voxels = sum(int(np.prod(nib.load(d["image"]).shape)) for d in datalist)
        print(
            f"{len(datalist)} cases, {voxels / 1e6:.1f} M voxels, generated in {gen_s:.1f} s; "
            f"torch threads {torch.get_num_threads()}; 2.5D {args.spatial_size}px x {args.num_slices} slices, "
            f"3D patches {tuple(args.patch)} x {args.num_samples}"
        )
        rows: list[dict] = []
        bench_2d(datalist, work, args, rows)
        bench_3d(datalist, work, args, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    header = f"| {'pipeline':8} | {'variant':52} | {'setup s':>8} | {'items':>6} | {'time s':>7} | {'rate':>16} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        rate = f"{r['per_s']:.1f} {r['unit']}/s"
        print(
            f"| {r['pipeline']:8} | {r['variant']:52} | {r['setup_s']:8.2f} | {r['items']:6d} | "
            f"{r['seconds']:7.2f} | {rate:>16} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json_atomic({"arguments": vars(args), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
