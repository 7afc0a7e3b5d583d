"""MONAI transform chains for LiTS-style CT: 3D patches, 2.5D volume preprocessing and 2D augmentation.

Every function returns a ``monai.transforms.Compose`` and takes plain numbers, lists and strings, so
bundle configs can build it with ``_target_``::

    "preprocessing": {"_target_": "unet_monai.data.lits_3d_transforms", "mode": "infer"}

Conventions shared by all chains:

- ``LoadImaged`` is a top-level element of the returned ``Compose.transforms`` (MONAI Label replaces
  it), preceded by :class:`~unet_monai.data.transforms.CheckCaseFilesd` (header checks) and followed by
  :class:`~unet_monai.data.transforms.ValidateCased` (data checks), so bad input fails with the case
  id and file named.
- ``Orientationd("RAS")`` makes the axial axis the last one, inferior to superior, whatever the
  storage orientation (LPS, LAS ...), so 2.5D neighbour slices have the same meaning for every case.
- HU window ``[-200, 250]`` scaled to ``[0, 1]`` with clipping (``hu_window`` to change it).
- In the ``"infer"`` (and ``"val"``) chains every spatial transform is invertible, so
  ``Invertd(keys="pred", transform=<this Compose>, orig_keys="image")`` maps predictions back to the
  input's grid, orientation and affine.
- Labels stay float32 MetaTensors with values 0/1/2, or 0/1 with ``merge_tumour=True`` (tumour
  counted as liver, the UNet 3+ paper's setup).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    Orientationd,
    RandAffined,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from unet_monai.data.anti_alias import AntiAliasedResized, SpacingAntiAliasd
from unet_monai.data.transforms import LABEL_VALUES, CheckCaseFilesd, ValidateCased

__all__ = ["lits_2d_augmentation", "lits_2d_preprocessing", "lits_3d_transforms", "lits_evaluation_transforms"]

_MODES = ("train", "val", "infer")
# patch centres kept per class and volume with class_ratios: 100,000 evenly spaced voxel indices (0.8 MB of
# int64) instead of every body voxel (about 7 million, 56 MB, in a LiTS volume at 1.5 x 1.5 x 2 mm)
_MAX_CENTRES_PER_CLASS = 100_000


def _check_window(hu_window: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(x) for x in hu_window)
    if not lo < hi:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {tuple(hu_window)}.")
    return lo, hi


def _check_probabilities(**probabilities: float) -> None:
    """Reject a probability outside [0, 1]: MONAI's random transforms would clip it silently."""
    for name, p in probabilities.items():
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.")


def _loading(
    keys: list[str],
    label_key: str,
    check_files: bool,
    label_values: Sequence[int],
    nan_policy: str,
    affine_tol: float,
    merge_tumour: bool,
) -> list:
    """CheckCaseFilesd, LoadImaged, ValidateCased, EnsureChannelFirstd, [merge], Orientationd RAS."""
    chain: list = []
    if check_files:
        chain.append(CheckCaseFilesd(keys, affine_tol=affine_tol))
    chain += [
        LoadImaged(keys, image_only=True),
        ValidateCased(
            keys, label_key=label_key, label_values=label_values, affine_tol=affine_tol, nan_policy=nan_policy
        ),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
    ]
    if merge_tumour and label_key in keys:
        chain.append(MapLabelValued(label_key, orig_labels=[2], target_labels=[1]))
    chain.append(Orientationd(keys, axcodes="RAS", labels=None))
    return chain


def lits_3d_transforms(
    mode: str = "train",
    spacing: Sequence[float] | None = (1.5, 1.5, 2.0),
    anti_aliasing: bool = True,
    hu_window: Sequence[float] = (-200.0, 250.0),
    patch_size: Sequence[int] = (96, 96, 96),
    pos: float = 1.0,
    neg: float = 1.0,
    num_samples: int = 4,
    class_ratios: Sequence[float] | None = None,
    merge_tumour: bool = False,
    crop_foreground: bool = True,
    crop_margin: int = 8,
    augment: bool = True,
    flip_prob: float = 0.2,
    affine_prob: float = 0.2,
    rotate_range: float = 0.26,
    scale_range: float = 0.1,
    intensity_prob: float = 0.15,
    intensity_shift: float = 0.1,
    intensity_scale: float = 0.1,
    label_values: Sequence[int] = LABEL_VALUES,
    nan_policy: str = "error",
    affine_tol: float = 1e-3,
    check_files: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> Compose:
    """3D preprocessing (and, for ``"train"``, patch sampling and augmentation) of LiTS-style CT.

    Chain: CheckCaseFilesd, LoadImaged, ValidateCased, EnsureChannelFirstd, [MapLabelValued 2->1],
    Orientationd RAS, [SpacingAntiAliasd], Spacingd (``spacing`` mm; bilinear image, nearest label),
    ScaleIntensityRanged (``hu_window`` -> [0, 1], clipped), CropForegroundd (the body: voxels above the window's lower
    bound, plus ``crop_margin``). ``"train"`` adds SpatialPadd to ``patch_size``,
    RandCropByPosNegLabeld (``num_samples`` patches per volume centred on foreground/background in
    the ratio ``pos:neg``; background centres inside the body) or, with ``class_ratios``,
    ClassesToIndicesd (cached) + RandCropByLabelClassesd (centres drawn per class), random flips on each axis, a random
    affine (rotation up to ``rotate_range`` rad about each axis, scaling by ``1 +/- scale_range``),
    random intensity scaling and shifting (these three unless ``augment=False``). A ``CacheDataset`` caches
    everything before the random crop.

    The defaults suit real LiTS on a GPU (1.5x1.5x2 mm, 96^3 patches, 4 per volume); shrink
    ``patch_size`` and coarsen ``spacing`` for CPU tests.

    Args:
        mode: ``"train"`` (image + label, random patches), ``"val"`` (image + label, whole volume) or
            ``"infer"`` (image only, whole volume, all spatial steps invertible).
        spacing: target voxel size in mm, or ``None`` to keep the native spacing.
        anti_aliasing: Gaussian-smooth the image along the axes it is downsampled on before ``Spacingd``
            (:class:`~unet_monai.data.anti_alias.SpacingAntiAliasd`, sigma as ``Resize(anti_aliasing=True)``),
            as the 2D pipeline's ``Resized`` does. Defaults to True.
        hu_window: HU range mapped to [0, 1] (values outside clipped).
        patch_size: training patch size in voxels.
        pos, neg: foreground : background ratio of patch centres.
        num_samples: patches drawn per loaded volume.
        class_ratios: ratio of patch centres per label class (background inside the body, liver[, tumour]),
            e.g. ``(1, 1, 1)``: a third of the patches centred on tumour, which a 50 : 50 ``pos:neg`` draw
            almost never does (tumour is about 3% of the foreground). A class absent from a volume gets
            no centre there. One value per class: 3, or 2 with ``merge_tumour``. ``None`` (default):
            ``pos:neg``.
        merge_tumour: map tumour (2) to liver (1).
        crop_foreground: crop to the body's bounding box.
        crop_margin: margin around the body in voxels.
        augment: ``"train"`` applies the random flips, affine and intensity changes below; ``False``: the
            patches only (e.g. for data known to be of one contrast phase; the 3D bundles' demos keep it on, their
            READMEs measure both).
        flip_prob: probability of a flip along each spatial axis (train). A flip mirrors the anatomy (the liver
            onto the patient's left, or upside down in RAS); the 2D pipeline has none, and without them the UNet 3+
            3D demo stopped missing the ends of the liver (validation liver Dice 0.882 -> 0.904 over three
            training seeds, its bundle's README).
        affine_prob: probability of the random rotation/scaling (train).
        rotate_range: maximal rotation about each axis in radians (train).
        scale_range: maximal relative scaling (train).
        intensity_prob: probability of each of the intensity scaling and shifting (train). 0.15, nnU-Net's
            probability for its brightness and contrast changes: intensity changes on most patches (0.5 each, up
            to 0.1.11 of the 3D bundles) blur the absolute density that separates an unenhanced liver from muscle,
            and without them the network misses brightly enhanced livers (the UNet++ 3D bundle's README).
        intensity_shift: maximal intensity offset, in the [0, 1] scaled units (train).
        intensity_scale: maximal relative intensity scaling (train).
        label_values: allowed label values, checked on load.
        nan_policy: ``"error"`` or ``"fill"`` (see :class:`~unet_monai.data.transforms.ValidateCased`).
        affine_tol: allowed image/label affine difference in mm.
        check_files: run the header checks before loading.
        image_key, label_key: data keys.

    Returns:
        a ``Compose``. ``"train"`` yields a list of ``num_samples`` dicts per volume with
        ``image`` (1, *patch_size) float32 in about [0, 1] and ``label`` (1, *patch_size) float32, plain
        tensors (no metadata); ``"val"`` and ``"infer"`` return MetaTensors (affine, inverse transforms).

    Raises:
        ValueError: for an unknown mode, an invalid window or a probability outside [0, 1].

    Example::

        train_ds = monai.data.CacheDataset(train_list, lits_3d_transforms("train", patch_size=(64, 64, 64)))
        pre = lits_3d_transforms("infer")
        post = Compose([Activationsd("pred", softmax=True), Invertd("pred", pre, orig_keys="image"),
                        AsDiscreted("pred", argmax=True), SaveImaged("pred", ...)])
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    lo, hi = _check_window(hu_window)
    _check_probabilities(flip_prob=flip_prob, affine_prob=affine_prob, intensity_prob=intensity_prob)
    keys = [image_key] if mode == "infer" else [image_key, label_key]
    interp = ["bilinear", "nearest"][: len(keys)]
    chain = _loading(keys, label_key, check_files, label_values, nan_policy, affine_tol, merge_tumour)
    if spacing is not None:
        pixdim = tuple(float(s) for s in spacing)
        if anti_aliasing:
            chain.append(SpacingAntiAliasd(image_key, pixdim=pixdim))
        chain.append(Spacingd(keys, pixdim=pixdim, mode=interp))
    chain.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if crop_foreground:
        # after clipping, voxels > 0 are above the window's lower bound: the body, not the air around it
        chain.append(CropForegroundd(keys, source_key=image_key, margin=int(crop_margin), allow_smaller=True))
    if mode == "train":
        patch = tuple(int(p) for p in patch_size)
        chain.append(SpatialPadd(keys, spatial_size=patch))
        chain += _patch_sampling(
            keys, image_key, label_key, patch, pos, neg, int(num_samples), class_ratios, merge_tumour
        )
        if augment:
            chain += [
                RandFlipd(keys, prob=flip_prob, spatial_axis=0),
                RandFlipd(keys, prob=flip_prob, spatial_axis=1),
                RandFlipd(keys, prob=flip_prob, spatial_axis=2),
                RandAffined(
                    keys,
                    prob=affine_prob,
                    rotate_range=(rotate_range,) * 3,
                    scale_range=(scale_range,) * 3,
                    mode=interp,
                    padding_mode="zeros",
                    spatial_size=patch,
                    cache_grid=True,
                ),
                RandScaleIntensityd(image_key, factors=intensity_scale, prob=intensity_prob),
                RandShiftIntensityd(image_key, offsets=intensity_shift, prob=intensity_prob),
            ]
    # training patches leave as plain tensors: nothing downstream reads their metadata, and a MetaTensor
    # input makes every network op pay for metadata propagation (5-8% of a 3D demo's training step)
    chain.append(EnsureTyped(keys, dtype=torch.float32, track_meta=mode != "train"))
    return Compose(chain)


def _patch_sampling(
    keys: list[str],
    image_key: str,
    label_key: str,
    patch: tuple[int, ...],
    pos: float,
    neg: float,
    num_samples: int,
    class_ratios: Sequence[float] | None,
    merge_tumour: bool,
) -> list:
    """The random patch crop: foreground/background centres (``pos:neg``) or centres per class (``class_ratios``)."""
    # background centres inside the body (image above the window's lower bound) in both samplers
    crop = {"spatial_size": patch, "num_samples": num_samples, "image_key": image_key, "image_threshold": 0.0}
    if class_ratios is None:
        return [RandCropByPosNegLabeld(keys, label_key=label_key, pos=pos, neg=neg, **crop)]
    classes = 2 if merge_tumour else 3
    try:
        ratios = [float(r) for r in class_ratios] if not isinstance(class_ratios, str) else []
    except (TypeError, ValueError):
        ratios = []
    if len(ratios) != classes or any(not (math.isfinite(r) and r >= 0) for r in ratios) or sum(ratios) <= 0:
        raise ValueError(
            f"class_ratios must hold {classes} finite numbers >= 0, not all 0 (background, liver"
            f"{'' if merge_tumour else ', tumour'}), got {class_ratios!r}."
        )
    return [
        # cached by CacheDataset: the class indices of each volume are found once, not per draw; at most
        # _MAX_CENTRES_PER_CLASS of them (evenly spaced) are kept, so the cache stays small on real volumes
        ClassesToIndicesd(
            label_key,
            num_classes=classes,
            indices_postfix="_cls_indices",
            image_key=image_key,
            max_samples_per_class=_MAX_CENTRES_PER_CLASS,
        ),
        RandCropByLabelClassesd(
            keys,
            label_key=label_key,
            ratios=ratios,
            num_classes=classes,
            indices_key=f"{label_key}_cls_indices",
            warn=False,
            **crop,
        ),
    ]


def lits_2d_preprocessing(
    mode: str = "val",
    spatial_size: Sequence[int] | None = (256, 256),
    hu_window: Sequence[float] = (-200.0, 250.0),
    merge_tumour: bool = False,
    crop_foreground: bool = False,
    crop_margin: int = 8,
    label_values: Sequence[int] = LABEL_VALUES,
    nan_policy: str = "error",
    affine_tol: float = 1e-3,
    check_files: bool = True,
    image_key: str = "image",
    label_key: str = "label",
) -> Compose:
    """Volume-level preprocessing for the 2.5D slice networks: the same for training, validation and inference.

    Chain: CheckCaseFilesd, LoadImaged, ValidateCased, EnsureChannelFirstd, [MapLabelValued 2->1],
    Orientationd RAS (axial axis last), ScaleIntensityRanged (``hu_window`` -> [0, 1], clipped),
    [CropForegroundd to the body], Resized in-plane to ``spatial_size`` keeping every slice (image:
    bilinear with Gaussian anti-aliasing when shrinking, :class:`~unet_monai.data.AntiAliasedResized`: MONAI's
    ``Resized(anti_aliasing=True)`` needs about 20x the volume's memory; label: nearest-exact), EnsureTyped
    float32.
    The output is ``(1, H, W, D)``; :func:`~unet_monai.data.transforms.volume_to_slice_stack` (or
    :class:`~unet_monai.inferers.SliceStackInferer`) turns it into ``(D, num_slices, H, W)`` network inputs.
    :class:`~unet_monai.data.LiTSSliceDataset` runs this chain once per volume and caches the result.

    Undoing the resize: every spatial step is invertible, so ``Invertd`` applied to the network's
    probabilities (``nearest_interp=False``) resizes them back to the input's in-plane size
    (bilinear) and orientation; take the argmax after inverting.

    Args:
        mode: ``"val"`` (image and label) or ``"infer"`` (image only). ``"train"`` is accepted and
            equals ``"val"``: 2D training augmentation is per slice, see :func:`lits_2d_augmentation`.
        spatial_size: in-plane network size (256 or 320 in the UNet 3+ paper); ``None`` keeps the
            native size.
        hu_window: HU range mapped to [0, 1].
        merge_tumour: map tumour (2) to liver (1).
        crop_foreground: crop the volume to the body's bounding box before resizing (changes the aspect
            ratio; off by default, as in the paper).
        crop_margin: margin of that crop, in voxels.
        label_values, nan_policy, affine_tol, check_files, image_key, label_key: see
            :func:`lits_3d_transforms`.

    Returns:
        a ``Compose`` producing ``image`` (1, H, W, D) float32 in [0, 1] (and ``label`` (1, H, W, D)).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    lo, hi = _check_window(hu_window)
    keys = [image_key] if mode == "infer" else [image_key, label_key]
    chain = _loading(keys, label_key, check_files, label_values, nan_policy, affine_tol, merge_tumour)
    chain.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if crop_foreground:
        chain.append(CropForegroundd(keys, source_key=image_key, margin=int(crop_margin), allow_smaller=True))
    if spatial_size is not None:
        size = (*(int(s) for s in spatial_size), -1)
        if len(size) != 3:
            raise ValueError(f"spatial_size must be (H, W), got {spatial_size}.")
        chain.append(AntiAliasedResized(image_key, spatial_size=size, mode="bilinear"))
        if label_key in keys:
            chain.append(Resized(label_key, spatial_size=size, mode="nearest-exact"))
    chain.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    return Compose(chain)


def lits_2d_augmentation(
    keys: Sequence[str] = ("image", "label"),
    affine_prob: float = 0.5,
    rotate_range: float = 0.26,
    scale_range: float = 0.1,
    flip_prob: float = 0.0,
    intensity_prob: float = 0.5,
    intensity_shift: float = 0.1,
    intensity_scale: float = 0.1,
    noise_prob: float = 0.1,
    noise_std: float = 0.02,
) -> Compose:
    """Random 2D augmentation of a 2.5D sample: the ``transform`` of :class:`~unet_monai.data.LiTSSliceDataset`.

    Operates on ``{"image": (num_slices, H, W), "label": (1, H, W)}``: a random in-plane rotation
    (up to ``rotate_range`` rad) and scaling (``1 +/- scale_range``) applied identically to all the
    neighbour channels and the label (bilinear / nearest, zero padding = air after windowing),
    optional flips, then intensity scaling, shifting and Gaussian noise on the image.

    Flips are off by default: the liver lies on the patient's right in every RAS-oriented slice, a
    prior a left-right flip would remove.

    Args:
        keys: image key then label key.
        affine_prob: probability of the rotation/scaling.
        rotate_range: maximal rotation in radians (0.26 = 15 degrees).
        scale_range: maximal relative scaling.
        flip_prob: probability of a flip along each in-plane axis.
        intensity_prob: probability of each of the intensity scaling and shifting.
        intensity_shift: maximal offset in [0, 1] units (0.1 = 45 HU with the default window).
        intensity_scale: maximal relative scaling.
        noise_prob: probability of additive Gaussian noise.
        noise_std: its standard deviation in [0, 1] units.

    Returns:
        a ``Compose`` of MONAI random transforms.

    Raises:
        ValueError: for a probability outside [0, 1].
    """
    _check_probabilities(
        affine_prob=affine_prob, flip_prob=flip_prob, intensity_prob=intensity_prob, noise_prob=noise_prob
    )
    image_key, label_key = keys[0], keys[1]
    chain: list = [
        RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=(rotate_range,),
            scale_range=(scale_range, scale_range),
            mode=["bilinear", "nearest"],
            padding_mode="zeros",
        ),
    ]
    if flip_prob > 0:
        chain += [RandFlipd(keys, prob=flip_prob, spatial_axis=0), RandFlipd(keys, prob=flip_prob, spatial_axis=1)]
    chain += [
        RandScaleIntensityd(image_key, factors=intensity_scale, prob=intensity_prob),
        RandShiftIntensityd(image_key, offsets=intensity_shift, prob=intensity_prob),
        RandGaussianNoised(image_key, prob=noise_prob, std=noise_std),
        EnsureTyped(image_key, dtype=torch.float32, track_meta=False),
        EnsureTyped(label_key, dtype=torch.int64, track_meta=False),
    ]
    return Compose(chain)


def lits_evaluation_transforms(
    pipeline: str = "2d",
    merge_tumour: bool = False,
    label_values: Sequence[int] = LABEL_VALUES,
    affine_tol: float = 1e-3,
    image_key: str = "image",
    label_key: str = "label",
    **kwargs: Any,
) -> Compose:
    """Evaluation input: the image preprocessed as for inference, the label kept as stored on disk.

    Metrics are then computed in the original voxel space and spacing (LiTS-style): the prediction is
    mapped back with ``Invertd(keys="pred", transform=<this Compose>, orig_keys="image")`` and compared
    with the label as it was loaded, never with a resampled (and so altered) copy of it.

    Chain: CheckCaseFilesd (image and label headers agree), LoadImaged + ValidateCased + EnsureChannelFirstd
    for the label ([MapLabelValued 2->1]), then the ``"infer"`` chain of :func:`lits_2d_preprocessing`
    (``pipeline="2d"``) or :func:`lits_3d_transforms` (``pipeline="3d"``) for the image.

    Args:
        pipeline: ``"2d"`` or ``"3d"``.
        merge_tumour: map tumour (2) to liver (1) in the label (and the image chain's argument).
        label_values, affine_tol, image_key, label_key: as in :func:`lits_3d_transforms`.
        kwargs: further arguments of the image chain (``spatial_size``, ``spacing``, ``hu_window``, ...).
    """
    if pipeline not in ("2d", "3d"):
        raise ValueError(f"pipeline must be '2d' or '3d', got {pipeline!r}.")
    build = lits_2d_preprocessing if pipeline == "2d" else lits_3d_transforms
    image_chain = build(
        "infer",
        merge_tumour=merge_tumour,
        label_values=label_values,
        affine_tol=affine_tol,
        check_files=False,
        image_key=image_key,
        label_key=label_key,
        **kwargs,
    )
    chain: list = [
        CheckCaseFilesd([image_key, label_key], affine_tol=affine_tol),
        LoadImaged(label_key, image_only=True),
        ValidateCased([label_key], label_key=label_key, label_values=label_values, affine_tol=affine_tol),
        EnsureChannelFirstd(label_key, channel_dim="no_channel"),
    ]
    if merge_tumour:
        chain.append(MapLabelValued(label_key, orig_labels=[2], target_labels=[1]))
    return Compose(chain + list(image_chain.transforms))
