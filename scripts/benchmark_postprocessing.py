"""Time and memory of the liver bundles' label filters on a LiTS-sized label map.

A 512 x 512 x 500 uint8 label map (0.75 x 0.75 x 1 mm, a CT of the abdomen) holds an ellipsoidal "liver" of
about 1.6 l with a tumour, joined by a thin bridge to a neighbour; the script times
``OpenForegroundd`` (``--radius`` mm) and ``KeepLargestConnectedComponentd`` as the bundles chain them and
prints the seconds of each and the process's peak resident memory above the label map. Run it alone: the
figures are this machine's.

    python scripts/benchmark_postprocessing.py --radius 4.5
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import KeepLargestConnectedComponentd

from unet_monai.data import OpenForegroundd


def label_map(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """The test label map, built slice by slice (no float volume of the whole shape is ever held)."""
    labels = np.zeros(shape, np.uint8)
    x, y = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    for k in range(shape[2]):
        z = k * spacing[2]
        liver = ((x - 150) / 90) ** 2 + ((y - 200) / 70) ** 2 + ((z - 250) / 60) ** 2 <= 1
        neighbour = ((x - 285) / 25) ** 2 + ((y - 200) / 25) ** 2 + ((z - 250) / 25) ** 2 <= 1
        bridge = (x > 230) & (x < 265) & (np.abs(y - 200) < 1.5) & (abs(z - 250) < 1.5)
        tumour = ((x - 140) / 15) ** 2 + ((y - 190) / 15) ** 2 + ((z - 250) / 15) ** 2 <= 1
        labels[..., k][liver | neighbour | bridge] = 1
        labels[..., k][tumour] = 2
    return labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--radius", type=float, default=4.5, help="opening radius in mm")
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 500])
    p.add_argument("--spacing", type=float, nargs=3, default=[0.75, 0.75, 1.0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    labels = label_map(tuple(args.shape), tuple(args.spacing))
    affine = np.diag([*args.spacing, 1.0])
    data = {"pred": MetaTensor(torch.from_numpy(labels)[None], affine=torch.as_tensor(affine))}
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opening = OpenForegroundd("pred", radius_mm=args.radius)
    largest = KeepLargestConnectedComponentd("pred", applied_labels=[1, 2], independent=False)
    t0 = time.perf_counter()
    opened = opening(dict(data))
    t1 = time.perf_counter()
    opening_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kept = largest(opened)["pred"][0].numpy()
    t2 = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fg = labels > 0
    litres = fg.sum() * np.prod(args.spacing) / 1e6
    print(f"label map {tuple(args.shape)} at {tuple(args.spacing)} mm, foreground {litres:.2f} l")
    print(f"opening (radius {args.radius} mm): {t1 - t0:.1f} s; largest component: {t2 - t1:.1f} s")
    cut = not kept[int(250 / args.spacing[0]) :].any()
    print(f"foreground voxels {int(fg.sum())} -> {int((kept > 0).sum())} (all beyond x = 250 mm removed: {cut})")
    print(
        f"peak resident memory above the process with the label map ({base_mb:.0f} MB): "
        f"{opening_mb - base_mb:.0f} MB after the opening, {peak_mb - base_mb:.0f} MB after the largest component"
    )


if __name__ == "__main__":
    main()
