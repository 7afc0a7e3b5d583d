"""Synthetic LiTS-like abdominal CT: a generator for demos and tests, since nothing can be downloaded here.

Each case is a torso phantom in Hounsfield units with a liver (label 1) holding 0 to 3 tumours
(label 2), surrounded by the structures that make liver segmentation non-trivial on real CT: a spleen
of liver-like density, kidneys, stomach with gas, aorta and inferior vena cava, spine with
discs, ribs, lung bases above the diaphragm, subcutaneous and visceral fat, bowel gas, partial
volume blur and spatially correlated noise. Shapes, densities, spacing, field of view and
orientation vary per case, and everything is drawn from a per-case seed, so the same ``seed`` always
gives byte-identical arrays.

The anatomy is laid out in normalised body coordinates (the torso fills the in-plane field of view
and the liver spans a random part of the slices), so a small 160x160x64 volume looks like a
down-sampled abdominal CT rather than a crop of one. It is built in RAS voxel order and, for LPS
cases, flipped along the first two axes with the affine flipped to match: the anatomy stays in the
same place in world (scanner) coordinates whatever the storage orientation.

Command line::

    python -m unet_monai.data.synthetic --out data/synthetic_lits --cases 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from unet_monai.utils.io import atomic_path, save_json_atomic

__all__ = ["SyntheticCase", "generate_case", "generate_dataset", "main"]

logger = logging.getLogger(__name__)

_ORIENTATIONS = ("RAS", "LPS")
_LAYOUTS = ("lits", "msd")


@dataclass
class SyntheticCase:
    """One generated volume.

    Attributes:
        image: int16 array of Hounsfield units, shape (X, Y, Z) in the storage orientation.
        label: uint8 array of the same shape: 0 background, 1 liver, 2 tumour.
        affine: 4x4 voxel-to-world (RAS+ mm) matrix, as nibabel writes it.
        params: the drawn parameters (spacing, orientation, densities, tumour count ...), JSON-ready.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], nodes: Sequence[int]) -> np.ndarray:
    """A smooth random field of about unit standard deviation: Gaussian radial basis on a coarse grid, separable."""
    coarse = rng.standard_normal(tuple(nodes)).astype(np.float32)
    bases = []
    for n, k in zip(shape, nodes):
        x = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
        c = np.linspace(0.0, 1.0, k, dtype=np.float32)[None, :]
        basis = np.exp(-0.5 * ((x - c) * max(k - 1, 1)) ** 2)
        bases.append(basis / basis.sum(axis=1, keepdims=True))
    out = coarse @ bases[2].T  # (k0, k1, Z)
    out = np.einsum("yj,ijz->iyz", bases[1], out)  # (k0, Y, Z)
    out = (bases[0] @ out.reshape(nodes[0], -1)).reshape(tuple(shape))  # (X, Y, Z), contiguous
    sample = out[::3, ::3, ::2]
    out -= sample.mean()
    out *= 1.0 / (sample.std() + 1e-6)
    return out


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a non-empty boolean mask as slices (the whole array when the mask is empty)."""
    out = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(None))
    return tuple(out)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Squared normalised radius of (u, v) relative to an axis-aligned ellipse (broadcasting)."""
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def generate_case(
    seed: int | Sequence[int] | np.random.Generator = 0,
    size: int | Sequence[int] = 160,
    num_slices: int = 64,
    spacing: Sequence[float] = (0.75, 0.75, 2.5),
    orientation: str = "RAS",
    max_tumours: int = 3,
) -> SyntheticCase:
    """Generate one LiTS-like CT volume and its label in memory.

    Everything random (body and organ shapes, contrast phase, tumours, noise) is drawn from ``seed``;
    spacing, size and orientation are given (``generate_dataset`` draws them per case).

    Args:
        seed: an int, a sequence of ints (``[dataset_seed, case_index]``) or a numpy Generator.
        size: in-plane size, an int for a square slice or ``(X, Y)``.
        num_slices: number of axial slices Z.
        spacing: voxel size in mm, ``(x, y, z)``; z is the slice thickness.
        orientation: ``"RAS"`` or ``"LPS"``, the storage orientation of the array and affine.
        max_tumours: upper bound of the number of tumours (uniform in ``0..max_tumours``).

    Returns:
        a :class:`SyntheticCase` with an int16 HU image, a uint8 label (0/1/2) and the affine.

    Raises:
        ValueError: for an unknown orientation, a size under 32 or fewer than 8 slices.

    Example::

        case = generate_case(seed=[0, 3], size=160, num_slices=64, spacing=(0.7, 0.7, 2.5), orientation="LPS")
        case.image.dtype, case.label.max()  # (dtype('int16'), 2) when a tumour was drawn
    """
    if orientation not in _ORIENTATIONS:
        raise ValueError(f"orientation must be one of {_ORIENTATIONS}, got {orientation!r}.")
    nx, ny = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    nz = int(num_slices)
    if min(nx, ny) < 32 or nz < 8:
        raise ValueError(f"the volume must be at least 32x32 in-plane with 8 slices, got {(nx, ny, nz)}.")
    sx, sy, sz = (float(s) for s in spacing)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    f32 = np.float32

    # normalised coordinates in RAS voxel order: u to the patient's right, v anterior, t superior (0..1)
    u = np.linspace(-1, 1, nx, dtype=f32)[:, None, None]
    v = np.linspace(-1, 1, ny, dtype=f32)[None, :, None]
    t = np.linspace(0, 1, nz, dtype=f32)[None, None, :]
    u2, v2 = u[:, :, 0], v[:, :, 0]  # 2D (X, 1) and (1, Y)
    shape = (nx, ny, nz)

    # contrast phase: 0 unenhanced .. 1 portal-venous; densities follow it
    phase = float(rng.uniform(0.0, 1.0))
    hu = {
        "air": -1000.0,
        "lung": float(rng.uniform(-880, -820)),
        "fat": float(rng.uniform(-115, -85)),
        "muscle": float(rng.uniform(35, 50)),
        "soft": float(rng.uniform(25, 40)),
        "liver": float(55 + 50 * phase + rng.normal(0, 5)),
        "aorta": float(45 + 160 * phase),
        "ivc": float(40 + 90 * phase),
        "kidney": float(35 + 150 * phase),
        "bone": float(rng.uniform(650, 800)),
        "marrow": float(rng.uniform(200, 300)),
        "disc": float(rng.uniform(70, 100)),
        "fluid": float(rng.uniform(5, 20)),
        "gas": float(rng.uniform(-980, -900)),
    }
    hu["spleen"] = hu["liver"] + float(rng.uniform(-5, 15))
    hu["vessel"] = hu["liver"] + float(-20 + 80 * phase)

    # body outline: an irregular ellipse whose size drifts slowly along z
    a, b = float(rng.uniform(0.74, 0.88)), float(rng.uniform(0.55, 0.70))
    cu, cv = float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.10, 0.0))
    theta = np.arctan2((v2 - cv) / b, (u2 - cu) / a)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        wobble = wobble + rng.uniform(0, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rho = np.sqrt(_ellipse(u2, v2, cu, cv, a, b)) / wobble  # (X, Y), 1 on the skin
    scale_t = (1 + 0.05 * np.sin(2 * np.pi * (rng.uniform(0.3, 1.0) * t + rng.uniform(0, 1)))).astype(f32)
    body = rho[:, :, None] < scale_t
    fat_w = float(rng.uniform(0.06, 0.16))
    inner = rho[:, :, None] < scale_t - fat_w  # inside subcutaneous fat
    cavity = rho[:, :, None] < scale_t - fat_w - 0.06  # inside the muscle wall

    img = np.full(shape, hu["air"], dtype=f32)
    img[body] = hu["fat"]
    img[inner] = hu["muscle"]
    # abdominal cavity: soft tissue with visceral fat and, low down, bowel gas
    visc = _smooth_field(rng, shape, (7, 7, 5))
    cav = np.where(visc > 0.7, hu["fat"], hu["soft"] + 6 * visc).astype(f32)
    gas = _smooth_field(rng, shape, (9, 9, 6)) < -1.9
    cav[gas & (t < 0.45)] = hu["gas"]
    img = np.where(cavity, cav, img)

    # spine: vertebral bodies (cortex + marrow) separated by discs, spinal canal, posterior elements
    sv = cv - 0.62 * b
    rv = 0.12 * b
    vb = _ellipse(u2, v2, cu, sv, rv * 1.15, rv)
    period = float(rng.uniform(0.12, 0.2))
    disc = (np.mod(t / period + rng.uniform(0, 1), 1.0) < 0.2)[0, 0]
    bone = np.zeros(shape, dtype=bool)
    bone[np.broadcast_to((vb < 1.0)[:, :, None], shape)] = True
    vert = np.where(disc, hu["disc"], hu["marrow"]).astype(f32)
    img = np.where((vb < 0.72)[:, :, None], vert[None, None, :], img)
    img[np.broadcast_to(((vb < 1.0) & (vb >= 0.72))[:, :, None], shape)] = hu["bone"]
    canal = _ellipse(u2, v2, cu, sv - 1.55 * rv, 0.45 * rv, 0.4 * rv) < 1
    post = (_ellipse(u2, v2, cu, sv - 1.6 * rv, 1.1 * rv, 0.75 * rv) < 1) & ~canal
    img[post[:, :, None] & ~disc[None, None, :]] = hu["bone"]
    img[np.broadcast_to(canal[:, :, None], shape)] = hu["fluid"]

    # ribs: small dense ovals along the inner body wall, in the upper part, appearing slice by slice
    rib_start = float(rng.uniform(0.25, 0.45))
    ring = scale_t[0, 0] - fat_w - 0.03
    for angle in np.concatenate([np.linspace(0.15, 1.2, 4), np.linspace(np.pi - 1.2, np.pi - 0.15, 4)]):
        ang = angle + rng.uniform(-0.1, 0.1) + np.pi  # posterior-lateral and lateral arcs
        ang = ang if rng.uniform() < 0.5 else -ang
        present = (np.cos(2 * np.pi * (t[0, 0] / period + rng.uniform(0, 1))) > 0.2) & (t[0, 0] > rib_start)
        for k in np.flatnonzero(present):
            rcu = cu + a * ring[k] * np.cos(ang)
            rcv = cv + b * ring[k] * np.sin(ang)
            rib = _ellipse(u2, v2, rcu, rcv, 0.035, 0.03) < 1
            img[:, :, k][rib] = hu["bone"]
    bone |= img >= hu["bone"] - 1

    # liver: a deformed, tapering ellipsoid on the patient's right, with a left lobe reaching medially
    t0 = float(rng.uniform(0.12, 0.30))
    t1 = min(t0 + float(rng.uniform(0.40, 0.60)), 0.90)
    tc, rt = (t0 + t1) / 2, (t1 - t0) / 2
    rel = np.clip((t - t0) / (t1 - t0), 0, 1)  # 0 at the liver's lower tip, 1 at its dome
    lcu = cu + a * float(rng.uniform(0.30, 0.42)) - a * float(rng.uniform(0.10, 0.35)) * rel**2
    lcv = cv + b * float(rng.uniform(-0.05, 0.15))
    lru = a * float(rng.uniform(0.45, 0.60)) * (0.6 + 0.5 * rel)
    lrv = b * float(rng.uniform(0.60, 0.80)) * (0.75 + 0.3 * rel)
    rot = float(rng.uniform(-0.5, 0.5))  # in-plane tilt of the liver's long axis
    du, dv = u - lcu, v - lcv
    shape_noise = _smooth_field(rng, shape, (6, 6, 5))
    liver_f = (
        ((du * np.cos(rot) + dv * np.sin(rot)) / lru) ** 2
        + ((dv * np.cos(rot) - du * np.sin(rot)) / lrv) ** 2
        + ((t - tc) / rt) ** 4  # flat-topped profile along z: rounded tip and dome
        + float(rng.uniform(0.2, 0.4)) * shape_noise
    )
    liver = (liver_f < 1.0) & cavity

    # vessels, kidneys, spleen, stomach, lungs and heart; each carves its space out of the liver
    aorta = (_ellipse(u2, v2, cu - 0.06, sv + 1.7 * rv, 0.065, 0.065) < 1)[:, :, None]
    ivc_u = cu + float(rng.uniform(0.10, 0.16))
    ivc = (_ellipse(u2, v2, ivc_u, sv + 1.9 * rv, 0.06, 0.05) < 1)[:, :, None]
    kt = t0 + float(rng.uniform(-0.05, 0.1))
    kidneys = np.zeros(shape, dtype=bool)
    renal_pelvis = np.zeros(shape, dtype=bool)
    for side in (1.0, -1.0):
        kcu = cu + side * a * 0.38
        kcv = sv + 0.6 * rv
        kf = _ellipse(u, v, kcu, kcv, 0.11 * a, 0.17 * b) + ((t - kt) / 0.18) ** 2
        kidneys |= kf < 1
        renal_pelvis |= kf < 0.25
    spleen_f = (
        _ellipse(u, v, cu - 0.55 * a, cv - 0.2 * b, 0.17 * a, 0.28 * b) + ((t - (t1 - 0.6 * rt)) / (0.7 * rt)) ** 2
    )
    spleen = ((spleen_f + 0.3 * shape_noise) < 1) & cavity
    stomach_f = (
        _ellipse(u, v, cu - 0.3 * a, cv + 0.3 * b, 0.22 * a, 0.25 * b) + ((t - (t1 - 0.4 * rt)) / (0.6 * rt)) ** 2
    )
    stomach = (stomach_f < 1) & cavity
    stomach_gas = stomach & (v > cv + 0.42 * b)
    lung = np.zeros(shape, dtype=bool)
    for side in (1.0, -1.0):
        lr = _ellipse(u2, v2, cu + side * 0.45 * a, cv - 0.05 * b, 0.33 * a, 0.55 * b)[:, :, None]
        lung |= (lr < 1) & (t > t1 + 0.03 - 0.18 * lr)
    heart = (_ellipse(u2, v2, cu - 0.12 * a, cv + 0.3 * b, 0.3 * a, 0.3 * b)[:, :, None] < 1) & (t > t1 + 0.06)
    lung &= cavity & ~heart
    for organ in (aorta, ivc, kidneys, spleen, stomach, lung, heart):
        liver &= ~organ
    liver &= ~bone
    # keep the largest connected piece only (the noise field may detach crumbs)
    lab, n = ndimage.label(liver)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        liver = lab == int(np.argmax(sizes))

    img[spleen & ~liver] = hu["spleen"]
    img[kidneys] = hu["kidney"]
    img[renal_pelvis] = hu["fluid"]
    img[stomach] = hu["fluid"]
    img[stomach_gas] = hu["gas"]
    img[lung] = hu["lung"]
    img[heart & cavity] = hu["aorta"] * 0.6 + 20
    img[aorta & cavity] = hu["aorta"]
    img[ivc & cavity] = hu["ivc"]
    img[liver] = hu["liver"] + 4.0 * visc[liver]

    # work inside the liver's bounding box from here on: vessels and tumours never leave it
    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    bb = _bbox(liver)
    lu, lv, lt, lmask = u[bb[0]], v[:, bb[1]], t[:, :, bb[2]], liver[bb]
    sub_img, sub_label, sub_noise = img[bb], label[bb], shape_noise[bb]  # views

    # intrahepatic vessels: oblique tubes that wander through the liver (labelled liver, as in LiTS)
    for _ in range(int(rng.integers(3, 7))):
        p0 = np.array([float(np.mean(lcu)), lcv, tc]) + rng.uniform(-0.2, 0.2, 3)
        d = rng.uniform(-0.5, 0.5, 2)
        r = float(rng.uniform(0.025, 0.05))
        vu = p0[0] + d[0] * (lt - p0[2]) + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 3) * lt)
        vv = p0[1] + d[1] * (lt - p0[2])
        sub_img[((lu - vu) ** 2 + (lv - vv) ** 2 < r**2) & lmask] = hu["vessel"]

    # tumours: 0..max_tumours deformed balls centred deep inside the liver, darker or brighter than it
    num_tumours = int(rng.integers(0, max_tumours + 1))
    tumours: list[dict[str, float]] = []
    if num_tumours and lmask.any():
        # depth below the liver surface in normalised units, on a 2x in-plane subsampled grid (speed)
        depth = ndimage.distance_transform_edt(lmask[::2, ::2], sampling=(4.0 / nx, 4.0 / ny, 1.0 / nz))
        for _ in range(num_tumours):
            radius = float(rng.uniform(0.05, 0.15))
            candidates = np.flatnonzero(depth.ravel() > radius * 0.8)
            if candidates.size == 0:
                candidates = np.flatnonzero(depth.ravel() >= depth.max() * 0.7)
                radius = max(float(depth.max()) * 0.8, 0.02)
            ci, cj, ck = np.unravel_index(int(rng.choice(candidates)), depth.shape)
            tu, tv, tt = float(lu[2 * ci, 0, 0]), float(lv[0, 2 * cj, 0]), float(lt[0, 0, ck])
            tf = ((lu - tu) / radius) ** 2 + ((lv - tv) / radius) ** 2 + ((lt - tt) / (radius * 0.7)) ** 2
            tf += 0.25 * sub_noise
            tumour = (tf < 1.0) & lmask
            delta = float(-rng.uniform(25, 60)) if rng.uniform() < 0.7 else float(rng.uniform(20, 45))
            sub_img[tumour] = hu["liver"] + delta
            if delta < 0 and rng.uniform() < 0.5:
                sub_img[(tf < 0.3) & tumour] = hu["liver"] + delta - float(rng.uniform(10, 25))  # necrotic core
            sub_label[tumour] = 2
            tumours.append({"radius": round(radius, 4), "delta_hu": round(delta, 2), "voxels": int(tumour.sum())})

    # partial volume (in-plane blur, thicker along z for thick slices) and correlated noise
    sigma = (0.6, 0.6, 0.35)
    img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest")
    noise_std = float(rng.uniform(10, 22))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=f32), sigma=(0.7, 0.7, 0.0))
    noise *= noise_std / (noise[::3, ::3, ::2].std() + 1e-6)
    img += noise
    # some scanners store the outside of the circular reconstruction field as -2048 or -3024
    outside_value = None
    if rng.uniform() < 0.3:
        outside_value = float(rng.choice([-2048.0, -3024.0]))
        outside = (u2**2 + v2**2 > 0.985)[:, :, None] & ~body
        img[np.broadcast_to(outside, shape)] = outside_value
    image = np.clip(np.rint(img), -3024, 3071).astype(np.int16)

    # storage orientation: LPS flips the first two axes; the affine keeps world positions unchanged
    origin = np.array([-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, float(rng.uniform(-600, -200))])
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = origin
    if orientation == "LPS":
        image, label = image[::-1, ::-1].copy(), label[::-1, ::-1].copy()
        affine[0, 0], affine[1, 1] = -sx, -sy
        affine[0, 3] = origin[0] + sx * (nx - 1)
        affine[1, 3] = origin[1] + sy * (ny - 1)

    params = {
        "shape": [nx, ny, nz],
        "spacing": [sx, sy, sz],
        "orientation": orientation,
        "contrast_phase": round(phase, 4),
        "liver_hu": round(hu["liver"], 2),
        "muscle_hu": round(hu["muscle"], 2),
        "noise_std_hu": round(noise_std, 2),
        "liver_voxels": int((label > 0).sum()),
        "tumours": tumours,
        "outside_fov_value": outside_value,
    }
    return SyntheticCase(image=image, label=label, affine=affine, params=params)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.set_data_dtype(array.dtype)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _range(value: int | float | Sequence[int | float], name: str) -> tuple[float, float]:
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)  # type: ignore[misc]
    if lo > hi:
        raise ValueError(f"{name} must be a number or a (low, high) pair with low <= high, got {value!r}.")
    return float(lo), float(hi)


def generate_dataset(
    out_dir: str | os.PathLike,
    num_cases: int = 20,
    seed: int = 0,
    size: int | Sequence[int] = (128, 192),
    slices: int | Sequence[int] = (48, 96),
    spacing_xy: float | Sequence[float] = (0.6, 0.9),
    thickness: float | Sequence[float] = (1.0, 5.0),
    orientations: Sequence[str] = _ORIENTATIONS,
    layout: str = "lits",
    ext: str = ".nii.gz",
    max_tumours: int = 3,
    start_index: int = 0,
) -> list[dict[str, str]]:
    """Write a LiTS-like dataset (volumes and labels as NIfTI) and return its datalist.

    Case ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: its size, spacing and content
    do not depend on ``num_cases``, so a dataset of 5 cases is the first 5 cases of one of 20.
    Orientations cycle through ``orientations`` (case 0 RAS, case 1 LPS, ...). Every file is written
    through :func:`unet_monai.utils.io.atomic_path`. A ``generation.json`` beside the cases records
    the arguments and each case's drawn parameters.

    Args:
        out_dir: output folder (created if missing).
        num_cases: number of cases.
        seed: dataset seed; the same seed gives identical arrays.
        size: in-plane size in voxels, an int or a ``(low, high)`` range drawn per case (square slices).
            Up to 512 is supported.
        slices: number of slices, an int or a ``(low, high)`` range.
        spacing_xy: in-plane spacing in mm, a number or range.
        thickness: slice thickness in mm, a number or range.
        orientations: storage orientations to cycle through, from ``("RAS", "LPS")``.
        layout: ``"lits"`` (``volume-N`` / ``segmentation-N`` in one folder) or ``"msd"``
            (``imagesTr/liver_N``, ``labelsTr/liver_N`` and a ``dataset.json``, as Task03_Liver).
        ext: ``".nii.gz"`` or ``".nii"``.
        max_tumours: at most this many tumours per case (0 gives liver-only cases).
        start_index: number of the first case (``volume-<start_index>``).

    Returns:
        the datalist, ``[{"image": path, "label": path, "case": "volume-0"}, ...]`` with absolute paths
        (case ids ``liver_N`` for the MSD layout).

    Raises:
        ValueError: for an unknown layout, extension or orientation, or an empty range.

    Example::

        datalist = generate_dataset("data/synthetic_lits", num_cases=4, seed=1, size=96, slices=32)
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}.")
    if ext not in (".nii", ".nii.gz"):
        raise ValueError(f"ext must be '.nii' or '.nii.gz', got {ext!r}.")
    if not orientations or any(o not in _ORIENTATIONS for o in orientations):
        raise ValueError(f"orientations must be a non-empty list from {_ORIENTATIONS}, got {orientations!r}.")
    if num_cases < 1:
        raise ValueError(f"num_cases must be at least 1, got {num_cases}.")
    size_r, slices_r = _range(size, "size"), _range(slices, "slices")
    sxy_r, thick_r = _range(spacing_xy, "spacing_xy"), _range(thickness, "thickness")
    if size_r[1] > 512:
        raise ValueError(f"size is limited to 512 in-plane, got {size!r}.")

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "msd":
        (root / "imagesTr").mkdir(exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
    datalist: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(start_index, start_index + num_cases):
        rng = np.random.default_rng([seed, i])
        n = int(rng.integers(int(size_r[0]), int(size_r[1]) + 1))
        nz = int(rng.integers(int(slices_r[0]), int(slices_r[1]) + 1))
        sxy = round(float(rng.uniform(*sxy_r)), 3)
        sz = round(float(rng.uniform(*thick_r)), 2)
        orientation = orientations[(i - start_index) % len(orientations)]
        case = generate_case(
            rng, size=n, num_slices=nz, spacing=(sxy, sxy, sz), orientation=orientation, max_tumours=max_tumours
        )
        if layout == "lits":
            case_id = f"volume-{i}"
            image_path, label_path = root / f"volume-{i}{ext}", root / f"segmentation-{i}{ext}"
        else:
            case_id = f"liver_{i}"
            image_path, label_path = root / "imagesTr" / f"liver_{i}{ext}", root / "labelsTr" / f"liver_{i}{ext}"
        _save_nifti(case.image, case.affine, image_path)
        _save_nifti(case.label, case.affine, label_path)
        datalist.append({"image": str(image_path.resolve()), "label": str(label_path.resolve()), "case": case_id})
        records.append({"case": case_id, **case.params})
        logger.debug("wrote %s %s", case_id, case.params["shape"])
    elapsed = time.perf_counter() - start
    written = {Path(d[k]).name for d in datalist for k in ("image", "label")}
    stale = sorted(
        f.name
        for f in root.rglob("*.nii*")
        if f.name not in written
        and not f.name.startswith(".")
        and f.name.startswith(("volume-", "segmentation-", "liver_"))
    )
    if stale:
        logger.warning(
            "%s also holds %d case files from an earlier run (e.g. %s); discovery will list them",
            root,
            len(stale),
            stale[0],
        )

    if layout == "msd":
        dataset_json = {
            "name": "SyntheticLiver",
            "description": "Synthetic LiTS-like CT generated by unet_monai.data.synthetic",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "liver", "2": "cancer"},
            "numTraining": num_cases,
            "numTest": 0,
            "training": [
                {"image": f"./imagesTr/{Path(d['image']).name}", "label": f"./labelsTr/{Path(d['label']).name}"}
                for d in datalist
            ],
            "test": [],
        }
        save_json_atomic(dataset_json, root / "dataset.json")
    args = {
        "num_cases": num_cases,
        "seed": seed,
        "size": list(size_r),
        "slices": list(slices_r),
        "spacing_xy": list(sxy_r),
        "thickness": list(thick_r),
        "orientations": list(orientations),
        "layout": layout,
        "ext": ext,
        "max_tumours": max_tumours,
        "start_index": start_index,
    }
    save_json_atomic(
        {"generator": "unet_monai.data.synthetic", "arguments": args, "cases": records}, root / "generation.json"
    )
    logger.info("generated %d cases in %s (%.1f s)", num_cases, root, elapsed)
    return datalist


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m unet_monai.data.synthetic --out DIR --cases N --seed S``."""
    p = argparse.ArgumentParser(prog="python -m unet_monai.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--size", type=int, nargs="+", default=[128, 192], help="in-plane size or LOW HIGH (128 192)")
    p.add_argument("--slices", type=int, nargs="+", default=[48, 96], help="slices or LOW HIGH (48 96)")
    p.add_argument("--spacing-xy", type=float, nargs="+", default=[0.6, 0.9], help="in-plane mm or LOW HIGH")
    p.add_argument("--thickness", type=float, nargs="+", default=[1.0, 5.0], help="slice thickness mm or LOW HIGH")
    p.add_argument("--orientations", nargs="+", default=list(_ORIENTATIONS), choices=_ORIENTATIONS)
    p.add_argument("--layout", default="lits", choices=_LAYOUTS)
    p.add_argument("--ext", default=".nii.gz", choices=[".nii.gz", ".nii"])
    p.add_argument("--max-tumours", type=int, default=3)
    args = p.parse_args(argv)

    def pair(x: list) -> Any:
        if len(x) not in (1, 2):
            p.error(f"expected one value or LOW HIGH, got {x}")
        return x[0] if len(x) == 1 else tuple(x)

    start = time.perf_counter()
    datalist = generate_dataset(
        args.out,
        num_cases=args.cases,
        seed=args.seed,
        size=pair(args.size),
        slices=pair(args.slices),
        spacing_xy=pair(args.spacing_xy),
        thickness=pair(args.thickness),
        orientations=args.orientations,
        layout=args.layout,
        ext=args.ext,
        max_tumours=args.max_tumours,
    )
    meta = json.loads((Path(args.out) / "generation.json").read_text())["cases"]
    tumours = sum(len(c["tumours"]) for c in meta)
    print(
        f"wrote {len(datalist)} cases ({args.layout} layout, {tumours} tumours) to {Path(args.out).resolve()} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
