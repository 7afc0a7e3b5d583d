"""Synthetic darkfield microscopy of blood with spirochaete bacteria: a generator for demos and tests.

The UNet++ seed was trained on the Kaggle dataset "Bacteria detection with darkfield microscopy" (RGB
images of blood cells and thin spiral bacteria, masks 0 background, 1 blood cell, 2 bacterium), which
cannot be downloaded here. This module draws look-alikes with the same layout and label convention:

- a dark background with uneven illumination (one or two broad glows), vignetting, a faint
  low-frequency texture, sensor noise and a little optical blur;
- round red blood cells (label 1) of varied size, slightly elliptical, with the bright rim and dimmer
  centre they show in darkfield; some are placed touching or overlapping a neighbour;
- thin, bright, yellowish-white spiral bacteria (label 2): a slowly curving centre line with a
  sinusoidal wave, a few pixels wide; drawn over the cells, so a bacterium on a cell is labelled 2;
- distractors labelled background: small bright debris dots and dim platelet-like blobs, so that
  brightness alone does not identify a bacterium.

Sizes scale with the image (``size`` 512 is the seed's network input; 64 to 256 for tests); bacteria
stay at least about 3 pixels wide in the mask at any size. Everything is drawn from ``[seed, index]``
with vectorised numpy (no per-pixel Python loops), so a dataset is byte-identical for a given seed and
20 images of 256x256 take well under a second of compute.

Files (the Kaggle layout, which :func:`unet_monai.data.microscopy.find_image_pairs` reads)::

    out_dir/images/000.png   RGB uint8 (or .jpg / .tif with ``ext``)
    out_dir/masks/000.png    8-bit grey class indices 0/1/2 (``mask_format="index"``, the Kaggle format)
                             or RGB colour-coded (``mask_format="color"``): black 0, red 1, yellow 2
    out_dir/generation.json  the arguments and every image's drawn parameters

This module imports neither torch nor MONAI, so the command line starts quickly::

    python -m unet_monai.data.synthetic_microscopy --out data/synthetic_darkfield --images 20 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from unet_monai.utils.io import atomic_path, save_json_atomic

__all__ = ["SyntheticMicroscopyImage", "generate_dataset", "generate_image", "main"]

logger = logging.getLogger(__name__)

# The seed's colour coding (class -> RGB); the same table as unet_monai.data.microscopy.SEED_COLORS, repeated
# here so that the generator does not import MONAI (a test checks that the two agree).
_PALETTE = np.array([[0, 0, 0], [255, 0, 0], [255, 255, 0]], dtype=np.uint8)
_MASK_FORMATS = ("index", "color")
_IMAGE_EXTS = (".png", ".jpg", ".tif")


@dataclass
class SyntheticMicroscopyImage:
    """One generated image.

    Attributes:
        image: uint8 RGB array (H, W, 3).
        label: uint8 array (H, W): 0 background, 1 blood cell, 2 bacterium.
        params: the drawn parameters (counts, sizes, noise ...), JSON-ready.
    """

    image: np.ndarray
    label: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def _window(cy: float, cx: float, radius: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The pixel window of a disc of ``radius`` around (cy, cx), clipped to the image; None if outside."""
    y0, y1 = max(int(cy - radius), 0), min(int(cy + radius) + 2, shape[0])
    x0, x1 = max(int(cx - radius), 0), min(int(cx + radius) + 2, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Dark, unevenly lit background (H, W, 3) in [0, 1] linear intensity."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    aspect = w / h
    base = np.array([0.025, 0.028, 0.04], dtype=np.float32) * np.float32(rng.uniform(0.6, 1.4))
    img = np.broadcast_to(base, (h, w, 3)).copy()
    glows = []
    for _ in range(int(rng.integers(1, 3))):
        gy, gx = rng.uniform(-0.3, 1.3, size=2)
        radius = float(rng.uniform(0.25, 0.7))
        amp = float(rng.uniform(0.05, 0.2))
        tint = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.8, 1.15)], dtype=np.float32)
        glow = np.exp(-(((y - gy) ** 2) + ((x - gx) * aspect) ** 2) / (2 * radius**2)).astype(np.float32)
        img += amp * glow[:, :, None] * tint
        glows.append({"centre": [round(float(gy), 3), round(float(gx), 3)], "radius": round(radius, 3)})
    # faint low-frequency texture (out-of-focus plasma)
    coarse = rng.standard_normal((h // 16 + 2, w // 16 + 2)).astype(np.float32)
    texture = ndimage.zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1]), order=3)[:h, :w]
    img += 0.008 * texture[:, :, None]
    vignette = float(rng.uniform(0.2, 0.5))
    vy, vx = rng.uniform(0.35, 0.65, size=2)
    img *= (1.0 - vignette * ((y - vy) ** 2 + ((x - vx) * aspect) ** 2) / 0.5)[:, :, None].clip(0.3, 1.0)
    return img, {"glows": glows, "vignetting": round(vignette, 3)}


def _draw_cells(
    rng: np.random.Generator, img: np.ndarray, label: np.ndarray, scale: float, num: int, overlap_fraction: float
) -> list[dict[str, float]]:
    """Add red blood cells (bright rim, dimmer centre) to ``img`` and label their discs 1."""
    h, w = label.shape
    cells: list[tuple[float, float, float]] = []
    records = []
    rim_width = max(0.8, 1.6 * scale)
    for _ in range(num):
        r = float(rng.uniform(0.03, 0.065)) * min(h, w)
        if cells and rng.uniform() < overlap_fraction:
            # next to an existing cell, closer than the sum of radii: touching or overlapping
            py, px, pr = cells[int(rng.integers(len(cells)))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = float(rng.uniform(0.6, 1.0)) * (pr + r)
            cy, cx = py + dist * np.sin(angle), px + dist * np.cos(angle)
        else:
            cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        cells.append((cy, cx, r))
        ry, rx = r * float(rng.uniform(0.88, 1.12)), r * float(rng.uniform(0.88, 1.12))
        theta = float(rng.uniform(0, np.pi))
        win = _window(cy, cx, max(ry, rx) + 4 * rim_width, (h, w))
        if win is None:
            continue
        yy = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None] - cy
        xx = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :] - cx
        u = (xx * np.cos(theta) + yy * np.sin(theta)) / rx
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) / ry
        rho = np.sqrt(u**2 + v**2)
        inside = rho < 1.0
        rim = np.exp(-0.5 * ((rho - 1.0) * r / rim_width) ** 2)
        fill = float(rng.uniform(0.12, 0.3)) * (0.45 + 0.55 * rho**2) * inside
        intensity = (fill + float(rng.uniform(0.35, 0.7)) * rim).astype(np.float32)
        colour = np.array([1.0, rng.uniform(0.22, 0.45), rng.uniform(0.1, 0.25)], dtype=np.float32)
        img[win] += intensity[:, :, None] * colour
        label[win][inside] = 1
        records.append({"radius": round(r, 2)})
    return records


def _draw_bacteria(
    rng: np.random.Generator, img: np.ndarray, label: np.ndarray, scale: float, num: int
) -> list[dict[str, float]]:
    """Add thin bright spirals: rasterise dense centre-line samples, blur them for the image, dilate for the label."""
    h, w = label.shape
    side = min(h, w)
    skeleton = np.zeros((h, w), dtype=np.float32)
    records = []
    for _ in range(num):
        length = float(rng.uniform(0.15, 0.35)) * side
        wavelength = max(float(rng.uniform(0.016, 0.03)) * side, 4.0)
        amplitude = max(float(rng.uniform(0.004, 0.009)) * side, 1.0)
        brightness = float(rng.uniform(0.6, 1.0))
        s = np.arange(0.0, length, 0.35, dtype=np.float32)
        heading = rng.uniform(0, 2 * np.pi) + float(rng.uniform(-1.2, 1.2)) * (s / length - 0.5)
        start = rng.uniform(0.1, 0.9, size=2) * np.array([h, w])
        step = np.diff(s, prepend=0.0)
        cy = start[0] + np.cumsum(step * np.sin(heading))
        cx = start[1] + np.cumsum(step * np.cos(heading))
        wave = amplitude * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi))
        py = np.rint(cy + wave * np.cos(heading)).astype(np.int64)
        px = np.rint(cx - wave * np.sin(heading)).astype(np.int64)
        keep = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        np.maximum.at(skeleton, (py[keep], px[keep]), brightness)
        records.append(
            {"length": round(length, 1), "wavelength": round(wavelength, 2), "amplitude": round(amplitude, 2)}
        )
    if not records:
        return records
    sigma = max(0.6, 0.9 * scale)
    # a blurred one-pixel line peaks at about 1 / (sqrt(2 pi) sigma): rescale so its core keeps the brightness
    core = ndimage.gaussian_filter(skeleton, sigma) * np.float32(np.sqrt(2 * np.pi) * sigma)
    colour = np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.55, 0.8)], dtype=np.float32)
    img += np.minimum(core, 1.2)[:, :, None] * colour
    half_width = max(1.0, 1.8 * scale)
    near = ndimage.distance_transform_edt(skeleton == 0) <= half_width
    label[near] = 2
    return records


def _draw_distractors(rng: np.random.Generator, img: np.ndarray, scale: float, num: int) -> None:
    """Debris dots and platelet-like blobs: bright or dim round specks, labelled background."""
    h, w = img.shape[:2]
    for _ in range(num):
        radius = float(rng.uniform(0.6, 4.0)) * max(scale, 0.5)
        cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        win = _window(cy, cx, 3 * radius, (h, w))
        if win is None:
            continue
        yy = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None] - cy
        xx = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :] - cx
        blob = np.exp(-0.5 * (yy**2 + xx**2) / radius**2).astype(np.float32)
        colour = np.array([rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0)], dtype=np.float32)
        img[win] += float(rng.uniform(0.15, 0.6)) * blob[:, :, None] * colour


def generate_image(
    seed: int | Sequence[int] | np.random.Generator = 0,
    size: int | Sequence[int] = 512,
    num_cells: int | Sequence[int] = (6, 22),
    num_bacteria: int | Sequence[int] = (1, 6),
    num_distractors: int | Sequence[int] = (5, 30),
    overlap_fraction: float = 0.3,
) -> SyntheticMicroscopyImage:
    """Draw one darkfield image and its label in memory.

    Args:
        seed: an int, a sequence of ints (``[dataset_seed, index]``) or a numpy Generator.
        size: ``H = W = size``, or ``(H, W)``; at least 32. Object sizes scale with ``min(H, W) / 512``.
        num_cells: number of blood cells, or a ``(low, high)`` range (inclusive) drawn per image.
        num_bacteria: number of bacteria, or a range.
        num_distractors: number of debris dots and platelet-like blobs (background), or a range.
        overlap_fraction: share of cells placed touching or overlapping an earlier cell.

    Returns:
        a :class:`SyntheticMicroscopyImage`: uint8 RGB (H, W, 3), uint8 label (H, W) with 0/1/2, parameters.

    Raises:
        ValueError: a size under 32 or a bad range.

    Example::

        sample = generate_image(seed=[0, 3], size=256)
        sample.image.shape, sorted(np.unique(sample.label))  # ((256, 256, 3), [0, 1, 2])
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))  # type: ignore[index]
    if min(h, w) < 32:
        raise ValueError(f"size must be at least 32x32, got {(h, w)}.")
    if not 0.0 <= overlap_fraction <= 1.0:
        raise ValueError(f"overlap_fraction must be in [0, 1], got {overlap_fraction}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    scale = min(h, w) / 512.0
    n_cells = _draw_count(rng, num_cells, "num_cells")
    n_bacteria = _draw_count(rng, num_bacteria, "num_bacteria")
    n_distractors = _draw_count(rng, num_distractors, "num_distractors")

    img, bg_params = _background(rng, h, w)
    label = np.zeros((h, w), dtype=np.uint8)
    cells = _draw_cells(rng, img, label, scale, n_cells, overlap_fraction)
    _draw_distractors(rng, img, scale, n_distractors)
    bacteria = _draw_bacteria(rng, img, label, scale, n_bacteria)

    # optics and sensor: slight blur, shot noise and read noise, then 8-bit quantisation
    img = ndimage.gaussian_filter(img, sigma=(max(0.5, 0.7 * scale), max(0.5, 0.7 * scale), 0))
    read_noise = float(rng.uniform(0.004, 0.015))
    shot = float(rng.uniform(0.01, 0.03))
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img += noise * (read_noise + shot * np.sqrt(np.clip(img, 0.0, None)))
    image = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)

    counts = np.bincount(label.ravel(), minlength=3)
    params = {
        "shape": [h, w],
        "cells": len(cells),
        "cells_drawn": n_cells,
        "bacteria": len(bacteria),
        "distractors": n_distractors,
        "cell_radii": [c["radius"] for c in cells],
        "bacteria_shapes": bacteria,
        "read_noise": round(read_noise, 4),
        "shot_noise": round(shot, 4),
        "pixels": {"background": int(counts[0]), "blood_cell": int(counts[1]), "bacteria": int(counts[2])},
        **bg_params,
    }
    return SyntheticMicroscopyImage(image=image, label=label, params=params)


def _range(value: int | Sequence[int], name: str) -> tuple[int, int]:
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[misc]
    lo, hi = int(lo), int(hi)
    if lo < 0 or lo > hi:
        raise ValueError(f"{name} must be a count >= 0 or a (low, high) pair with 0 <= low <= high, got {value!r}.")
    return lo, hi


def _draw_count(rng: np.random.Generator, value: int | Sequence[int], name: str) -> int:
    lo, hi = _range(value, name)
    return int(rng.integers(lo, hi + 1))


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _save_image(array: np.ndarray, path: Path) -> None:
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".jpg":
            Image.fromarray(array).save(tmp, format="JPEG", quality=95)
        elif suffix == ".tif":
            Image.fromarray(array).save(tmp, format="TIFF")
        else:
            Image.fromarray(array).save(tmp, format="PNG")


def generate_dataset(
    out_dir: str | os.PathLike,
    num_images: int = 20,
    seed: int = 0,
    size: int | Sequence[int] = 512,
    mask_format: str = "index",
    ext: str = ".png",
    num_cells: int | Sequence[int] = (6, 22),
    num_bacteria: int | Sequence[int] = (1, 6),
    num_distractors: int | Sequence[int] = (5, 30),
    overlap_fraction: float = 0.3,
    start_index: int = 0,
) -> list[dict[str, str]]:
    """Write a synthetic darkfield dataset in the Kaggle layout and return its datalist.

    Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so a dataset of 5 images is the
    first 5 of one of 20, and the same arguments give byte-identical files. Every file is written through
    :func:`unet_monai.utils.io.atomic_path`; ``generation.json`` records the arguments and each image's
    drawn parameters.

    Args:
        out_dir: output folder (created if missing); ``images/`` and ``masks/`` are made inside.
        num_images: number of images (>= 1).
        seed: dataset seed.
        size: image side (square) or ``(H, W)``; 512 is the seed's network input, 64 to 256 suit tests.
        mask_format: ``"index"`` (default): 8-bit grey PNG holding 0/1/2, the Kaggle dataset's format;
            ``"color"``: RGB PNG, black background, red (255, 0, 0) blood cells, yellow (255, 255, 0) bacteria.
        ext: image format, ``".png"`` (default), ``".jpg"`` (quality 95) or ``".tif"``. Masks are always PNG.
        num_cells, num_bacteria, num_distractors, overlap_fraction: see :func:`generate_image`.
        start_index: number of the first image (file ``f"{start_index:03d}"``).

    Returns:
        the datalist ``[{"image": abs path, "label": abs path, "case": "000"}, ...]``.

    Raises:
        ValueError: an unknown mask format or extension, ``num_images < 1``, or a bad size or range.

    Example::

        datalist = generate_dataset("data/synthetic_darkfield", num_images=8, seed=1, size=256)
    """
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {_MASK_FORMATS}, got {mask_format!r}.")
    if ext not in _IMAGE_EXTS:
        raise ValueError(f"ext must be one of {_IMAGE_EXTS}, got {ext!r}.")
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}.")
    for value, name in ((num_cells, "num_cells"), (num_bacteria, "num_bacteria"), (num_distractors, "num_distractors")):
        _range(value, name)
    root = Path(out_dir)
    images_dir, masks_dir = root / "images", root / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)

    datalist: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(start_index, start_index + num_images):
        sample = generate_image(
            np.random.default_rng([seed, i]),
            size=size,
            num_cells=num_cells,
            num_bacteria=num_bacteria,
            num_distractors=num_distractors,
            overlap_fraction=overlap_fraction,
        )
        name = f"{i:03d}"
        image_path, mask_path = images_dir / f"{name}{ext}", masks_dir / f"{name}.png"
        _save_image(sample.image, image_path)
        _save_png(sample.label if mask_format == "index" else _PALETTE[sample.label], mask_path)
        datalist.append({"image": str(image_path.resolve()), "label": str(mask_path.resolve()), "case": name})
        records.append({"case": name, **sample.params})
    elapsed = time.perf_counter() - start

    written = {Path(d[k]).name for d in datalist for k in ("image", "label")}
    stale = sorted(
        f"{d.name}/{f.name}"
        for d in (images_dir, masks_dir)
        for f in d.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name not in written
    )
    if stale:
        logger.warning(
            "%s also holds %d files from an earlier run (e.g. %s); discovery will list them", root, len(stale), stale[0]
        )
    args = {
        "num_images": num_images,
        "seed": seed,
        "size": [int(size), int(size)] if np.isscalar(size) else [int(s) for s in size],  # type: ignore[union-attr]
        "mask_format": mask_format,
        "ext": ext,
        "num_cells": list(_range(num_cells, "num_cells")),
        "num_bacteria": list(_range(num_bacteria, "num_bacteria")),
        "num_distractors": list(_range(num_distractors, "num_distractors")),
        "overlap_fraction": overlap_fraction,
        "start_index": start_index,
    }
    save_json_atomic(
        {
            "generator": "unet_monai.data.synthetic_microscopy",
            "labels": {"0": "background", "1": "blood_cell", "2": "bacteria"},
            "arguments": args,
            "images": records,
        },
        root / "generation.json",
    )
    logger.info("generated %d images in %s (%.2f s)", num_images, root, elapsed)
    return datalist


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m unet_monai.data.synthetic_microscopy --out DIR --images N --seed S``."""
    p = argparse.ArgumentParser(
        prog="python -m unet_monai.data.synthetic_microscopy", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--out", required=True, help="output folder (images/, masks/, generation.json)")
    p.add_argument("--images", type=int, default=20, help="number of images (default 20)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--size", type=int, nargs="+", default=[512], help="side, or H W (default 512)")
    p.add_argument("--mask-format", default="index", choices=_MASK_FORMATS, help="grey indices or RGB colours")
    p.add_argument("--ext", default=".png", choices=_IMAGE_EXTS, help="image format (masks are always PNG)")
    p.add_argument("--cells", type=int, nargs="+", default=[6, 22], help="blood cells per image, N or LOW HIGH")
    p.add_argument("--bacteria", type=int, nargs="+", default=[1, 6], help="bacteria per image, N or LOW HIGH")
    args = p.parse_args(argv)

    def pair(x: list[int], what: str) -> int | tuple[int, int]:
        if len(x) not in (1, 2):
            p.error(f"{what}: expected one value or two, got {x}")
        return x[0] if len(x) == 1 else (x[0], x[1])

    start = time.perf_counter()
    datalist = generate_dataset(
        args.out,
        num_images=args.images,
        seed=args.seed,
        size=pair(args.size, "--size"),
        mask_format=args.mask_format,
        ext=args.ext,
        num_cells=pair(args.cells, "--cells"),
        num_bacteria=pair(args.bacteria, "--bacteria"),
    )
    print(
        f"wrote {len(datalist)} images ({args.mask_format} masks) to {Path(args.out).resolve()} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
