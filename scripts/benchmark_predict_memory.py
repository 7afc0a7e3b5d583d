"""Peak memory and time of ``unet-monai predict`` on a 512 x 512 x 500 int16 CT volume with a 2D bundle.

Builds the volume once (``--workdir`` keeps it between runs): a synthetic LiTS-like case from
:func:`unet_monai.data.generate_case` (512 x 512, ``--block`` slices) repeated along z to ``--slices``
slices, stored as int16 with a NIfTI intercept of -1024 (stored value = HU + 1024) in ``.nii.gz``: the
scaled-int16 case where nibabel's default read returns a float64 volume (2 GB at this size). Then a
copy of the 2D bundle (configs only) gets a ``models/model.pt`` of random weights for the widths asked
for (the values do not matter for memory or time), and ``unet-monai predict`` runs in a child process
per configuration. Peak RSS is the child's ``ru_maxrss`` (from ``os.wait4``), time its wall time
including start-up (imports, bundle parsing, reading and writing the volume).

Configurations (``--runs``):

- ``stream``: the default path (slabs of slices) with the small widths ``--features`` on the whole volume;
- ``whole``: ``--no-stream``, the bundle's own whole-volume pipeline, same network, for comparison;
- ``paper``: the paper's widths 64..1024 on the first ``--paper-slices`` slices only (one slice takes
  seconds on CPU, 500 would take more than an hour): gives the time per slice and the activation
  memory at the CPU batch size, from which the full-volume figures are extrapolated.

Usage::

    python scripts/benchmark_predict_memory.py --workdir /tmp/bench_predict --threads 2
    python scripts/benchmark_predict_memory.py --slices 100 --runs stream whole   # quicker

Prints a Markdown table (docs/cli.md records one). The machines are shared: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unet_monai.data import generate_case  # noqa: E402

BUNDLE = "liver_ct_unet3plus_2d_segmentation"
PAPER_WIDTHS = [64, 128, 256, 512, 1024]


def make_volume(path: Path, size: int, slices: int, block: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` x ``slices`` scaled-int16 CT volume (generated block repeated along z)."""
    if path.is_file():
        return path
    case = generate_case(seed, size=size, num_slices=max(8, min(block, slices)), spacing=(0.75, 0.75, 1.0))
    stored = (case.image.astype(np.int32) + 1024).clip(-32768, 32767).astype(np.int16)
    reps = -(-slices // stored.shape[2])
    volume = np.tile(stored, (1, 1, reps))[:, :, :slices]
    img = nib.Nifti1Image(volume, case.affine)
    img.header.set_slope_inter(1.0, -1024.0)
    img.set_data_dtype(np.int16)
    tmp = path.with_name(path.name + ".part.nii.gz")
    nib.save(img, tmp)
    os.replace(tmp, path)
    return path


def make_bundle(dest: Path, features: list[int]) -> Path:
    """A copy of the 2D bundle's configs with random weights of the given widths."""
    import torch
    from monai.bundle import ConfigParser

    bundle = dest / f"{BUNDLE}_{'-'.join(map(str, features))}"
    if (bundle / "models" / "model.pt").is_file():
        return bundle
    shutil.copytree(REPO / "bundles" / BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "eval", "data"))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["features"] = features
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


def run_predict(bundle: Path, volume: Path, out: Path, features: list[int], threads: int, extra: list[str]) -> dict:
    """One ``unet-monai predict`` child: peak RSS (GB) and wall time (s)."""
    cmd = [
        sys.executable, "-m", "unet_monai", "predict", "--overwrite", "-b", str(bundle), "-i", str(volume),
        "-o", str(out), "--device", "cpu", "--override", f"features={json.dumps(features).replace(' ', '')}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"predict failed ({code}):\n{stdout}\n{stderr[-3000:]}")
    # the per-volume time predict logs: reading, predicting and writing, without start-up and bundle loading
    found = re.search(r"\(\d+x\d+x\d+, ([0-9.]+) s;", stderr)
    return {
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # ru_maxrss is in KiB on Linux
        "wall_s": wall,
        "volume_s": float(found.group(1)) if found else float("nan"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=None, help="keeps the volume and bundle copies (default: a temporary folder)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, default=500)
    p.add_argument("--block", type=int, default=50, help="slices generated, then repeated along z (default 50)")
    p.add_argument("--features", default="16,32,64,128,256", help="small widths of the stream/whole runs")
    p.add_argument("--paper-slices", type=int, default=8, help="slices of the paper-width run (default 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", nargs="+", default=["stream", "whole", "paper"], choices=["stream", "whole", "paper"])
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    volume = make_volume(work / f"ct_{args.size}x{args.size}x{args.slices}.nii.gz", args.size, args.slices, args.block)
    print(
        f"volume {volume} ({volume.stat().st_size / 1e6:.0f} MB on disk) ready in {time.perf_counter() - start:.0f} s"
    )
    small = [int(f) for f in args.features.split(",")]
    results = []
    for run in args.runs:
        if run == "paper":
            thin = make_volume(work / f"ct_{args.size}x{args.size}x{args.paper_slices}.nii.gz", args.size,
                               args.paper_slices, args.block)  # fmt: skip
            features, source, extra = PAPER_WIDTHS, thin, []
        else:
            features, source, extra = small, volume, ([] if run == "stream" else ["--no-stream"])
        bundle = make_bundle(work, features)
        result = run_predict(bundle, source, work / f"out_{run}", features, args.threads, extra)
        slices = nib.load(source).shape[2]
        result.update(run=run, features=features, slices=slices, s_per_slice=result["volume_s"] / slices)
        results.append(result)
        print(f"{run}: {result}", flush=True)
    print()
    print("| run | widths | slices | peak RSS (GB) | process wall (s) | volume (s) | s / slice |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {','.join(map(str, r['features']))} | {r['slices']} | {r['peak_rss_gb']:.2f} | "
              f"{r['wall_s']:.0f} | {r['volume_s']:.0f} | {r['s_per_slice']:.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
