"""2D microscopy images in folders: discovery, colour-coded masks, MONAI pipelines, PNG predictions.

The data path of the UNet++ seed's use case (bacteria and blood cells in darkfield microscopy, RGB,
three classes), for any 2D RGB image-folder dataset with per-image masks.

Layout (:func:`find_image_pairs`)::

    dataset_dir/images/<stem>.png|.jpg|.jpeg|.tif|.tiff|.bmp   RGB (grey and RGBA are converted)
    dataset_dir/masks/<stem><mask_suffix>.png|...               class indices or colour-coded

Images and masks pair by file stem (``images/001.jpg`` with ``masks/001.png``); the Kaggle dataset of
the seed ("Bacteria detection with darkfield microscopy": ``images/001.png`` ... and ``masks/001.png``
..., grey masks holding 0/1/2) has exactly this layout, as has the synthetic generator
:mod:`unet_monai.data.synthetic_microscopy`. A folder holding a single sub-folder with this layout (an
unpacked archive) is accepted too.

Masks (:func:`decode_mask`): either class indices (8- or 16-bit grey, a palette PNG's indices, or RGB
with equal channels) or colours mapped to classes by ``colors``; the default :data:`SEED_COLORS` is the
seed's drawing convention, black background 0, red (255, 0, 0) blood cell 1, yellow (255, 255, 0)
bacterium 2. Colours must match exactly unless ``tolerance`` is given (lossy JPEG masks); an unknown
colour raises a ``ValueError`` naming the file, the colours and their pixel counts.

Tensors follow the image's row order: ``image`` (3, H, W) float32 in [0, 1], ``label`` (1, H, W) float32
class indices (MONAI's convention for label maps), axis 1 = rows (y), axis 2 = columns (x), as in
numpy, PIL and torchvision. (MONAI's ``PILReader`` is used with ``reverse_indexing=False`` for this; its
default would transpose to (x, y).)

Pipelines (:func:`microscopy_transforms`, for bundle configs through ``_target_``): ``spatial_mode="crop"``
(default) keeps the native resolution, which thin bacteria need: training draws ``spatial_size`` crops
centred on each class in turn, validation and inference use whole images with a sliding-window inferer
(:func:`microscopy_inferer`), whose output has the input's size. ``spatial_mode="resize"`` resizes to
``spatial_size`` (invertible: :func:`microscopy_postprocessing` maps predictions back with ``Invertd``).
:func:`segment_images` runs the whole inference path on files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureTyped,
    Invertd,
    InvertibleTransform,
    LoadImaged,
    MapTransform,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    Resized,
    ScaleIntensityRanged,
    SpatialPadd,
)
from PIL import Image

from unet_monai.data.lits import _listing, _natural_key, split_and_save
from unet_monai.data.pipelines import _check_probabilities
from unet_monai.utils.io import atomic_path

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SUFFIXES",
    "SEED_COLORS",
    "DecodeMaskd",
    "EnsureRGBd",
    "SaveMicroscopyPredictiond",
    "colorize_mask",
    "decode_mask",
    "find_image_pairs",
    "list_images",
    "microscopy_inferer",
    "microscopy_postprocessing",
    "microscopy_transforms",
    "overlay_mask",
    "prepare_microscopy_datalist",
    "read_mask",
    "save_mask",
    "save_overlay",
    "segment_images",
]

logger = logging.getLogger(__name__)

#: The seed's colour coding, class index -> RGB: black background, red blood cells, yellow bacteria.
SEED_COLORS: dict[int, tuple[int, int, int]] = {0: (0, 0, 0), 1: (255, 0, 0), 2: (255, 255, 0)}
#: Names of the seed's three classes, by index.
CLASS_NAMES: tuple[str, ...] = ("background", "blood_cell", "bacteria")
#: Image file suffixes that discovery lists (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_MASK_FORMATS = ("auto", "index", "color")
_SPATIAL_MODES = ("crop", "resize")
_MODES = ("train", "val", "infer")
_LOSSY = (".jpg", ".jpeg")

Colour = Sequence[int] | str
ColorMap = Mapping[int | str, Colour | Sequence[Colour]]


# --------------------------------------------------------------------------- colour maps


def _parse_colour(value: Any, cls: int) -> tuple[int, int, int]:
    if isinstance(value, str):
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})", value.strip())
        if not m:
            raise ValueError(f"colour {value!r} of class {cls} is not '#rrggbb'.")
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    rgb = tuple(value)
    if len(rgb) != 3 or any(isinstance(c, bool) or not float(c).is_integer() or not 0 <= c <= 255 for c in rgb):
        raise ValueError(f"colour {value!r} of class {cls} must be 3 integers in 0..255 or '#rrggbb'.")
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _is_single_colour(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, Sequence) and len(value) == 3 and all(isinstance(c, (int, float, np.integer)) for c in value)
    )


def _parse_colors(colors: ColorMap) -> tuple[np.ndarray, np.ndarray]:
    """``{class: colour or [colours]}`` -> (K, 3) int32 colours and (K,) class indices, in mapping order."""
    if not isinstance(colors, Mapping) or not colors:
        raise ValueError(f"colors must be a non-empty mapping {{class index: colour}}; got {colors!r}.")
    rgbs: list[tuple[int, int, int]] = []
    classes: list[int] = []
    for key, value in colors.items():
        cls = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or cls < 0:
            raise ValueError(f"colors keys must be class indices (int >= 0 or a digit string); got {key!r}.")
        values = [value] if _is_single_colour(value) else list(value)
        if not values:
            raise ValueError(f"class {cls} has no colour.")
        for v in values:
            rgbs.append(_parse_colour(v, int(cls)))
            classes.append(int(cls))
    seen: dict[tuple[int, int, int], int] = {}
    for rgb, cls in zip(rgbs, classes):
        if rgb in seen and seen[rgb] != cls:
            raise ValueError(f"colour {rgb} is given for classes {seen[rgb]} and {cls}.")
        seen[rgb] = cls
    return np.array(rgbs, dtype=np.int32), np.array(classes, dtype=np.int64)


def _class_palette(colors: ColorMap) -> np.ndarray:
    """(num_classes, 3) uint8: the first colour of each class (for drawing); classes without colour are grey."""
    rgbs, classes = _parse_colors(colors)
    palette = np.full((int(classes.max()) + 1, 3), 128, dtype=np.uint8)
    for rgb, cls in reversed(list(zip(rgbs, classes))):
        palette[cls] = rgb
    return palette


def _describe_colors(rgbs: np.ndarray, classes: np.ndarray) -> str:
    return ", ".join(f"{tuple(int(c) for c in rgb)} -> {int(k)}" for rgb, k in zip(rgbs, classes))


# --------------------------------------------------------------------------- mask decoding


def _counts_text(values: Sequence[Any], counts: np.ndarray, limit: int = 8) -> str:
    """``"v in n pixel(s), ..."`` for the ``limit`` most frequent values."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    items = [f"{values[i]} in {int(counts[i])} pixel(s)" for i in order[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(items) + more


def decode_mask(
    mask: np.ndarray | torch.Tensor,
    colors: ColorMap = SEED_COLORS,
    mask_format: str = "auto",
    tolerance: int = 0,
    num_classes: int | None = None,
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Turn a loaded mask into a class-index map (H, W) uint8.

    Formats:

    - ``"index"``: one channel (or RGB with equal channels, or a palette image's indices) holding the class
      indices 0..num_classes-1 (the Kaggle dataset's grey masks).
    - ``"color"``: each pixel's RGB colour is looked up in ``colors`` (a single channel is read as grey
      ``(v, v, v)``, an alpha channel is ignored). With ``tolerance > 0`` a colour within ``tolerance`` of a
      known colour in every channel (Chebyshev distance) takes that colour's class: for lossy (JPEG) masks.
    - ``"auto"`` (default): ``"index"`` when the values are valid class indices in one channel (or equal
      channels), ``"color"`` otherwise. A mask holding only 0 reads the same either way.

    Args:
        mask: (H, W) or channel-last (H, W, C) array with C in 1..4 (RGBA/LA alpha ignored), integer-valued.
        colors: ``{class index: colour}``; a colour is ``(r, g, b)`` or ``"#rrggbb"`` (``"rrggbb"``), or a list
            of them when several colours mean one class. Digit-string keys are accepted (JSON configs; there
            write ``[r, g, b]`` or ``"rrggbb"``: MONAI's config parser rewrites ``"#"``). Default
            :data:`SEED_COLORS`.
        mask_format: ``"auto"``, ``"index"`` or ``"color"``.
        tolerance: largest per-channel difference to a known colour still accepted (0: exact). Must be
            below half the smallest distance between two known colours, so the nearest colour is unambiguous.
        num_classes: valid indices are ``0..num_classes-1``; defaults to the largest class in ``colors`` + 1.
        source: the file name, for error messages.

    Returns:
        uint8 array (H, W) of class indices.

    Raises:
        ValueError: an unknown colour (the file, each colour and its pixel count, the known colours), an
            index outside ``0..num_classes-1``, non-integer values, or a bad shape or argument.

    Example::

        >>> rgb = np.zeros((4, 4, 3), np.uint8); rgb[0, 0] = (255, 255, 0)
        >>> decode_mask(rgb)[0, 0]
        2
    """
    where = f"mask {os.fspath(source)}" if source is not None else "mask"
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {_MASK_FORMATS}; got {mask_format!r}.")
    rgbs, classes = _parse_colors(colors)
    n_classes = int(classes.max()) + 1 if num_classes is None else int(num_classes)
    if n_classes < 1 or n_classes > 256:
        raise ValueError(f"num_classes must be in 1..256; got {num_classes}.")
    tolerance = int(tolerance)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance}.")
    if tolerance > 0 and len(rgbs) > 1:
        gaps = np.abs(rgbs[:, None, :] - rgbs[None, :, :]).max(-1)
        min_gap = int(gaps[~np.eye(len(rgbs), dtype=bool)].min())
        if 2 * tolerance >= min_gap:
            raise ValueError(
                f"tolerance {tolerance} is too large: two known colours are only {min_gap} apart "
                f"(tolerance must be below {(min_gap + 1) // 2})."
            )

    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]  # grey (+ alpha)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]  # RGB + alpha
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"{where}: expected (H, W) or (H, W, C) with C in 1..4; got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{where} is empty (shape {array.shape}).")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{where}: values must be integers (class indices or 0..255 colours).")
    elif array.dtype.kind not in "uib":
        raise ValueError(f"{where}: unsupported dtype {array.dtype}.")
    array = array.astype(np.int64, copy=False)

    grey = array if array.ndim == 2 else None
    if grey is None and np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
        grey = array[..., 0]
    if mask_format in ("auto", "index") and grey is not None:
        lo, hi = int(grey.min()), int(grey.max())
        if lo >= 0 and hi < n_classes:
            return grey.astype(np.uint8)
        if mask_format == "index":
            values, counts = np.unique(grey, return_counts=True)
            bad = (values < 0) | (values >= n_classes)
            raise ValueError(
                f"{where}: values {_counts_text(values[bad].tolist(), counts[bad])} are not class indices "
                f"0..{n_classes - 1}. For colour-coded masks pass mask_format='color' (or 'auto') and colors."
            )
    elif mask_format == "index":
        raise ValueError(
            f"{where}: mask_format='index' needs one channel or equal RGB channels; this mask has colours. "
            "Pass mask_format='color' (or 'auto') and colors."
        )

    rgb = np.stack([grey] * 3, axis=-1) if array.ndim == 2 else array
    if rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"{where}: colour values must lie in 0..255; got [{rgb.min()}, {rgb.max()}].")
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inverse = np.unique(codes.ravel(), return_inverse=True)
    uniq_rgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=-1)
    dist = np.abs(uniq_rgb[:, None, :] - rgbs[None, :, :]).max(-1)  # (U, K) Chebyshev distances
    nearest = dist.argmin(1)
    ok = dist[np.arange(len(uniq)), nearest] <= tolerance
    if not ok.all():
        counts = np.bincount(inverse, minlength=len(uniq))[~ok]
        bad = [tuple(int(c) for c in v) for v in uniq_rgb[~ok]]
        if mask_format == "auto" and grey is not None:
            # a grey mask: most likely class indices with stray values; report those
            values, value_counts = np.unique(grey, return_counts=True)
            invalid = (values < 0) | (values >= n_classes)
            raise ValueError(
                f"{where}: values {_counts_text(values[invalid].tolist(), value_counts[invalid])} are neither class "
                f"indices 0..{n_classes - 1} nor grey levels of known colours ({_describe_colors(rgbs, classes)}). "
                "Pass colors={class: (r, g, b), ...} for another coding."
            )
        lossy = str(source).lower().endswith(_LOSSY) if source is not None else False
        tol = f"within tolerance {tolerance} of any known colour" if tolerance else "in the colour map"
        raise ValueError(
            f"{where}: {len(bad)} colour(s) not {tol}: "
            f"{_counts_text(bad, counts)}. Known colours: {_describe_colors(rgbs, classes)}. "
            "Pass colors={class: (r, g, b), ...} for another coding"
            + (", or tolerance=... for a lossy (JPEG) mask." if lossy or tolerance == 0 else ".")
        )
    return classes[nearest][inverse].reshape(codes.shape).astype(np.uint8)


def _pil_mask_array(img: Image.Image, mask_format: str) -> np.ndarray:
    if img.mode in ("P", "PA") and mask_format == "color":
        img = img.convert("RGB")
    return np.asarray(img)


def read_mask(
    path: str | os.PathLike,
    colors: ColorMap = SEED_COLORS,
    mask_format: str = "auto",
    tolerance: int = 0,
    num_classes: int | None = None,
) -> np.ndarray:
    """Read a mask file with PIL and decode it (see :func:`decode_mask`); (H, W) uint8 class indices.

    A palette (``P`` mode) PNG is read as its indices, except with ``mask_format="color"`` where its colours
    are decoded.
    """
    with Image.open(path) as img:
        array = _pil_mask_array(img, mask_format)
    return decode_mask(array, colors, mask_format, tolerance, num_classes, source=path)


class _MaskConverter:
    """PILReader converter: palette images to RGB when masks are decoded by colour (picklable)."""

    def __init__(self, mask_format: str) -> None:
        self.mask_format = mask_format

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode in ("P", "PA") and self.mask_format == "color":
            return img.convert("RGB")
        return img


def _source(x: Any, data: Mapping[Hashable, Any], key: Hashable) -> str | None:
    meta = x.meta if isinstance(x, MetaTensor) else data.get(f"{key}_meta_dict", {})
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return None if name is None else str(name)


class DecodeMaskd(MapTransform):
    """Decode a loaded mask (after ``LoadImaged(..., ensure_channel_first=True)``) into class indices (1, H, W).

    Runs :func:`decode_mask` on the channel-first mask loaded by ``LoadImaged`` with
    ``PILReader(reverse_indexing=False)``; errors name the mask file (from the MetaTensor's
    ``filename_or_obj``). With ``image_key``, also checks that image and mask have the same height and width.

    Args:
        keys: mask key(s).
        colors, mask_format, tolerance, num_classes: see :func:`decode_mask`.
        image_key: the image whose size the mask must match (None: no check).
        allow_missing_keys: skip missing keys.

    Returns:
        the mask as a float32 MetaTensor (1, H, W) of class indices, with the loaded meta data.

    Raises:
        ValueError: see :func:`decode_mask`; image and mask sizes differ (both files named).
    """

    def __init__(
        self,
        keys: KeysCollection,
        colors: ColorMap = SEED_COLORS,
        mask_format: str = "auto",
        tolerance: int = 0,
        num_classes: int | None = None,
        image_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        _parse_colors(colors)  # validate early
        if mask_format not in _MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {_MASK_FORMATS}; got {mask_format!r}.")
        self.colors, self.mask_format, self.tolerance = colors, mask_format, int(tolerance)
        self.num_classes, self.image_key = num_classes, image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            source = _source(x, d, key)
            array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            if array.ndim == 3:
                array = np.moveaxis(array, 0, -1)  # channel-first (C, H, W) -> (H, W, C)
            decoded = decode_mask(array, self.colors, self.mask_format, self.tolerance, self.num_classes, source)
            if self.image_key is not None and self.image_key in d:
                image = d[self.image_key]
                size = tuple(image.shape[-2:])
                if size != decoded.shape:
                    raise ValueError(
                        f"image {_source(image, d, self.image_key)} is {size[0]}x{size[1]} (HxW) but its mask "
                        f"{source} is {decoded.shape[0]}x{decoded.shape[1]}."
                    )
            out = torch.from_numpy(decoded[None].astype(np.float32))
            if isinstance(x, MetaTensor):
                out = MetaTensor(out, meta=dict(x.meta), applied_operations=list(x.applied_operations))
            d[key] = out
        return d


class EnsureRGBd(MapTransform):
    """Channel-first float32 RGB in [0, 1] from a loaded image (after ``LoadImaged(..., ensure_channel_first=True)``).

    Grey images (1 channel) are repeated to 3 channels, an alpha channel is dropped. Integer images are
    divided by ``max_value``, by default the range of their type: 255 for 8-bit, 65535 for 16-bit (PIL
    reads 16-bit TIFF/PNG as int32 or uint16). Floating-point images are taken as already in [0, 1].
    Load with ``dtype=None`` so that the type is still known here.

    Args:
        keys: image key(s).
        max_value: the value mapped to 1 (None: from the dtype, as above).
        allow_missing_keys: skip missing keys.

    Raises:
        ValueError: an image with more than 4 channels or fewer than 2 dimensions.
    """

    def __init__(self, keys: KeysCollection, max_value: float | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if max_value is not None and not max_value > 0:
            raise ValueError(f"max_value must be > 0 or None; got {max_value}.")
        self.max_value = max_value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            if t.ndim == 2:
                t = t[None]
            if t.ndim != 3 or t.shape[0] > 4:
                raise ValueError(
                    f"image {_source(x, d, key)}: expected a channel-first 2D image (C, H, W) with C <= 4; "
                    f"got shape {tuple(t.shape)}."
                )
            if self.max_value is not None:
                scale = float(self.max_value)
            elif t.dtype == torch.uint8:
                scale = 255.0
            elif t.dtype.is_floating_point:
                scale = 1.0
            else:
                scale = 65535.0
            c = t.shape[0]
            t = t[:3] if c >= 3 else t[:1].expand(3, *t.shape[1:])
            d[key] = (t.float() / scale).contiguous()
        return d


# --------------------------------------------------------------------------- discovery and splits


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (``IMAGE_SUFFIXES``, hidden files excluded) directly in ``folder``, sorted by name."""
    return sorted(
        f
        for f in Path(folder).iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )


def find_image_pairs(
    dataset_dir: str | os.PathLike,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    require_masks: bool = True,
) -> list[dict[str, str]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem><mask_suffix>.*`` and return a MONAI datalist.

    Files directly inside the two folders are listed (hidden files and other suffixes are skipped; suffixes
    from :data:`IMAGE_SUFFIXES`, any case). When ``dataset_dir`` has no ``images_dir`` but exactly one
    sub-folder that has, that sub-folder is used (an unpacked archive).

    Args:
        dataset_dir: the dataset folder.
        images_dir: name of the image folder inside it.
        masks_dir: name of the mask folder inside it.
        mask_suffix: text after the stem in mask names, e.g. ``"_mask"`` for ``masks/001_mask.png``.
        require_masks: raise when an image has no mask (training); False lists unpaired images without
            ``"label"`` (inference) and accepts a missing mask folder.

    Returns:
        ``[{"image": abs path, "label": abs path, "case": stem}, ...]`` in natural order of the stems
        (``"2"`` before ``"10"``).

    Raises:
        FileNotFoundError: the folder does not exist or holds no images.
        ValueError: the layout is not recognised (the message lists what the folder holds), two images or
            two masks share a stem, or images have no mask while ``require_masks``.

    Example::

        datalist = find_image_pairs("/data/bacteria-detection-with-darkfield-microscopy")
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder.")
    root = root.resolve()
    expected = f"expected {images_dir}/ and {masks_dir}/ holding images and masks with matching file names"
    if not (root / images_dir).is_dir():
        candidates = [
            d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / images_dir).is_dir()
        ]
        if len(candidates) != 1:
            raise ValueError(f"cannot find {images_dir}/ in {root}: it holds {_listing(root)}; {expected}.")
        root = candidates[0]
    images = list_images(root / images_dir)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root / images_dir}; {expected}.")
    by_stem: dict[str, list[Path]] = {}
    for f in images:
        by_stem.setdefault(f.stem, []).append(f)
    masks: dict[str, list[Path]] = {}
    mask_folder = root / masks_dir
    if mask_folder.is_dir():
        for f in list_images(mask_folder):
            stem = f.stem
            if mask_suffix:
                if not stem.endswith(mask_suffix):
                    continue
                stem = stem[: -len(mask_suffix)]
            masks.setdefault(stem, []).append(f)
    elif require_masks:
        raise ValueError(f"{root} has no {masks_dir}/ folder; {expected} (require_masks=False for images only).")
    duplicates = {s: p for d in (by_stem, masks) for s, p in d.items() if len(p) > 1}
    if duplicates:
        text = "; ".join(f"{s}: {', '.join(p.name for p in ps)}" for s, ps in sorted(duplicates.items())[:10])
        raise ValueError(f"{root}: more than one file per stem ({text}); images and masks pair by stem.")
    missing = sorted((s for s in by_stem if s not in masks), key=_natural_key)
    if missing and require_masks:
        names = ", ".join(by_stem[s][0].name for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{root}: {len(missing)} image(s) have no mask in {masks_dir}/ (looked for <stem>{mask_suffix}.*): "
            f"{names}. Pass require_masks=False to list images only (inference)."
        )
    orphans = sorted(set(masks) - set(by_stem), key=_natural_key)
    if orphans:
        logger.warning("%s: masks without an image are ignored: %s", root, orphans[:10])
    records = []
    for stem in sorted(by_stem, key=_natural_key):
        record = {"image": str(by_stem[stem][0])}
        if stem in masks:
            record["label"] = str(masks[stem][0])
        record["case"] = stem
        records.append(record)
    logger.info("found %d images (%d with masks) in %s", len(records), sum("label" in r for r in records), root)
    return records


def prepare_microscopy_datalist(
    dataset_dir: str | os.PathLike,
    output_json: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    fold: int | None = None,
    num_folds: int = 5,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
) -> dict[str, list[dict[str, Any]]]:
    """Discover image/mask pairs, split them by file, and optionally save the split (bundle-config friendly).

    The split is :func:`unet_monai.data.lits.split_cases` on the file stems: it depends only on the stems
    and the seed (SHA-256 order), so it is the same on every machine and adding images moves few others.

    Args:
        dataset_dir: the dataset folder (see :func:`find_image_pairs`).
        output_json: where to write ``{"training", "validation", "metadata"}`` (None: do not write).
        val_fraction, seed, fold, num_folds: see :func:`~unet_monai.data.lits.split_cases`.
        images_dir, masks_dir, mask_suffix: see :func:`find_image_pairs`.

    Returns:
        ``{"training": [...], "validation": [...]}``.

    Example (bundle config)::

        "datalist": "$unet_monai.data.microscopy.prepare_microscopy_datalist(@dataset_dir)",
        "train_data": "$@datalist['training']"
    """
    records = find_image_pairs(dataset_dir, images_dir=images_dir, masks_dir=masks_dir, mask_suffix=mask_suffix)
    return split_and_save(records, dataset_dir, output_json, val_fraction, seed, fold, num_folds)


# --------------------------------------------------------------------------- pipelines


def _size2d(spatial_size: int | Sequence[int]) -> tuple[int, int]:
    size = (int(spatial_size),) * 2 if np.isscalar(spatial_size) else tuple(int(s) for s in spatial_size)  # type: ignore[union-attr]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be (H, W) or an int; got {spatial_size!r}.")
    return size  # type: ignore[return-value]


def microscopy_transforms(
    mode: str = "train",
    spatial_size: int | Sequence[int] = (512, 512),
    spatial_mode: str = "crop",
    num_samples: int = 1,
    class_ratios: Sequence[float] | None = None,
    num_classes: int = 3,
    colors: ColorMap = SEED_COLORS,
    mask_format: str = "auto",
    tolerance: int = 0,
    max_value: float | None = None,
    flip_prob: float = 0.5,
    rotate90_prob: float = 0.5,
    intensity_prob: float = 0.5,
    brightness: float = 0.2,
    contrast: float = 0.2,
    color_shift: float = 0.05,
    noise_prob: float = 0.1,
    noise_std: float = 0.01,
    image_key: str = "image",
    label_key: str = "label",
) -> Compose:
    """MONAI chain for 2D RGB microscopy: loading, mask decoding, crops or resizing, augmentation.

    Chain: ``LoadImaged`` (PILReader, ``reverse_indexing=False``, channel first, native dtype; a top-level
    element, so MONAI Label can swap it), :class:`EnsureRGBd` (RGB float32 in [0, 1]), :class:`DecodeMaskd`
    (class indices (1, H, W), sizes checked against the image), then by ``spatial_mode``:

    - ``"crop"`` (default; native resolution). ``"train"``: ``SpatialPadd`` to ``spatial_size`` (zeros:
      black background), ``RandCropByLabelClassesd`` (``num_samples`` crops per image, centred on classes
      in the ratio ``class_ratios``, default equal: bacteria get as many crops as background).
      ``"val"``/``"infer"``: the whole image (any size; batch size 1, or the sliding-window inferer of
      :func:`microscopy_inferer`, whose output has the image's size).
    - ``"resize"``: ``Resized`` to ``spatial_size`` in every mode (image bilinear with anti-aliasing, mask
      nearest-exact). Invertible: :func:`microscopy_postprocessing` brings predictions back to the input
      size. Thin bacteria suffer when large images are shrunk; prefer ``"crop"`` for them.

    ``"train"`` then adds flips along both axes (``flip_prob`` each), a rotation by a random multiple of 90
    degrees (``rotate90_prob``; needs a square ``spatial_size``), and colour jitter on the image, each with
    probability ``intensity_prob``: brightness (all channels times ``1 +/- brightness``), contrast (about the
    image mean, ``1 +/- contrast``), colour balance (each channel times its own ``1 +/- color_shift``: a
    white-balance / hue shift), Gaussian noise (``noise_prob``, ``noise_std``), then clipping to [0, 1].

    Args:
        mode: ``"train"``, ``"val"`` (image and mask, deterministic) or ``"infer"`` (image only).
        spatial_size: network input size (H, W) or an int; 512 as the seed. Must suit the network (UNet++
            with 4 poolings: multiples of 16).
        spatial_mode: ``"crop"`` or ``"resize"``.
        num_samples: crops per image and epoch (train, crop mode).
        class_ratios: crop-centre ratio per class (train, crop mode); None: equal.
        num_classes: number of classes (valid mask indices ``0..num_classes-1``).
        colors, mask_format, tolerance: mask decoding, see :func:`decode_mask`.
        max_value: image value mapped to 1 (None: from the file's type, see :class:`EnsureRGBd`).
        flip_prob, rotate90_prob, intensity_prob, brightness, contrast, color_shift, noise_prob, noise_std:
            augmentation (train only).
        image_key, label_key: data keys.

    Returns:
        a ``Compose``: ``image`` (3, H, W) float32 in [0, 1] and ``label`` (1, H, W) float32 class indices
        (``"train"`` in crop mode yields a list of ``num_samples`` such dicts per image). Training samples are
        plain tensors; ``"val"`` and ``"infer"`` return MetaTensors (for inverting and saving).

    Raises:
        ValueError: unknown mode or spatial mode, a bad size, 90-degree rotations with a non-square size, or
            a probability outside [0, 1] (MONAI's random transforms would clip it silently).

    Example::

        train_ds = monai.data.CacheDataset(datalist["training"], microscopy_transforms("train", spatial_size=256))
        pre = microscopy_transforms("infer", spatial_size=512)
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
    if spatial_mode not in _SPATIAL_MODES:
        raise ValueError(f"spatial_mode must be one of {_SPATIAL_MODES}; got {spatial_mode!r}.")
    size = _size2d(spatial_size)
    if mode == "train" and rotate90_prob > 0 and size[0] != size[1]:
        raise ValueError(f"90-degree rotations need a square spatial_size; got {size} (set rotate90_prob=0).")
    if mask_format not in _MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {_MASK_FORMATS}; got {mask_format!r}.")
    _check_probabilities(
        flip_prob=flip_prob, rotate90_prob=rotate90_prob, intensity_prob=intensity_prob, noise_prob=noise_prob
    )
    keys = [image_key] if mode == "infer" else [image_key, label_key]
    chain: list = [
        LoadImaged(image_key, reader=PILReader(reverse_indexing=False), dtype=None, ensure_channel_first=True),
        EnsureRGBd(image_key, max_value=max_value),
    ]
    if mode != "infer":
        chain += [
            LoadImaged(
                label_key,
                reader=PILReader(converter=_MaskConverter(mask_format), reverse_indexing=False),
                dtype=None,
                ensure_channel_first=True,
            ),
            DecodeMaskd(
                label_key,
                colors=colors,
                mask_format=mask_format,
                tolerance=tolerance,
                num_classes=num_classes,
                image_key=image_key,
            ),
        ]
    if spatial_mode == "resize":
        chain.append(Resized(image_key, spatial_size=size, mode="bilinear", anti_aliasing=True))
        if mode != "infer":
            chain.append(Resized(label_key, spatial_size=size, mode="nearest-exact"))
    elif mode == "train":
        chain += [
            SpatialPadd(keys, spatial_size=size),
            RandCropByLabelClassesd(
                keys,
                label_key=label_key,
                spatial_size=size,
                ratios=None if class_ratios is None else [float(r) for r in class_ratios],
                num_classes=num_classes,
                num_samples=int(num_samples),
                warn=False,
            ),
        ]
    if mode == "train":
        chain += [RandFlipd(keys, prob=flip_prob, spatial_axis=0), RandFlipd(keys, prob=flip_prob, spatial_axis=1)]
        if rotate90_prob > 0:
            chain.append(RandRotate90d(keys, prob=rotate90_prob, max_k=3, spatial_axes=(0, 1)))
        chain += [
            RandScaleIntensityd(image_key, factors=brightness, prob=intensity_prob),
            RandScaleIntensityFixedMeand(image_key, factors=contrast, prob=intensity_prob),
            RandScaleIntensityd(image_key, factors=color_shift, prob=intensity_prob, channel_wise=True),
            RandGaussianNoised(image_key, prob=noise_prob, std=noise_std),
            ScaleIntensityRanged(image_key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    # training samples as plain tensors (see lits_3d_transforms): metadata is only needed to invert and save
    chain.append(EnsureTyped(keys, dtype=torch.float32, track_meta=mode != "train"))
    return Compose(chain)


def microscopy_inferer(
    spatial_size: int | Sequence[int] = (512, 512),
    spatial_mode: str = "crop",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
) -> Inferer:
    """The inferer matching :func:`microscopy_transforms`: whole images in ``spatial_size`` windows, or plain.

    ``"crop"``: ``SlidingWindowInferer(roi_size=spatial_size, mode="gaussian")``: windows of the training
    crop size over the whole image; images smaller than a window are padded and the output cropped back,
    so the output always has the image's size. ``"resize"``: ``SimpleInferer`` (the image already has the
    network size).
    """
    if spatial_mode not in _SPATIAL_MODES:
        raise ValueError(f"spatial_mode must be one of {_SPATIAL_MODES}; got {spatial_mode!r}.")
    if spatial_mode == "resize":
        return SimpleInferer()
    return SlidingWindowInferer(
        roi_size=_size2d(spatial_size), sw_batch_size=int(sw_batch_size), overlap=float(overlap), mode="gaussian"
    )


# --------------------------------------------------------------------------- writing predictions


def _as_label2d(label: np.ndarray | torch.Tensor) -> np.ndarray:
    array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"a label map must be (H, W) or (1, H, W); got shape {array.shape}.")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"class indices must lie in 0..255 to be written as 8-bit PNG; got [{array.min()}, {array.max()}]."
        )
    return np.rint(array).astype(np.uint8)


def colorize_mask(label: np.ndarray | torch.Tensor, colors: ColorMap = SEED_COLORS) -> np.ndarray:
    """Class indices (H, W) or (1, H, W) -> RGB (H, W, 3) uint8 with each class's (first) colour.

    Raises:
        ValueError: a class without colour in ``colors``.
    """
    array = _as_label2d(label)
    palette = _class_palette(colors)
    known = set(_parse_colors(colors)[1].tolist())
    unknown = sorted(set(np.unique(array).tolist()) - known)
    if unknown:
        raise ValueError(f"classes {unknown} have no colour in colors (classes {sorted(known)}).")
    return palette[array]


def _rgb_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., : 1 if array.shape[-1] == 2 else 3]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be (H, W) or channel-last (H, W, C); got shape {array.shape}.")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        return np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    return np.rint(np.clip(array, 0, 65535) / 257.0).astype(np.uint8)


def overlay_mask(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    colors: ColorMap = SEED_COLORS,
    alpha: float = 0.5,
    background: int = 0,
) -> np.ndarray:
    """Blend class colours into an image: ``(1 - alpha) image + alpha colour`` where the class is not background.

    The seed's visualisation (``cv2.addWeighted`` of the image with red/yellow painted pixels, 0.5 each).

    Args:
        image: (H, W) or channel-last (H, W, C) image, uint8, 16-bit, or float in [0, 1].
        label: class indices (H, W) or (1, H, W) of the same size.
        colors: class colours (default :data:`SEED_COLORS`).
        alpha: opacity of the colours in [0, 1].
        background: the class left untinted.

    Returns:
        RGB uint8 (H, W, 3).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    rgb = _rgb_uint8(image)
    lab = _as_label2d(label)
    if rgb.shape[:2] != lab.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label {lab.shape} sizes differ (HxW).")
    coloured = colorize_mask(lab, colors).astype(np.float32)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * coloured
    out = np.where((lab != background)[..., None], np.rint(blend), rgb)
    return out.astype(np.uint8)


def _check_lossless(path: Path) -> None:
    if path.suffix.lower() in _LOSSY:
        raise ValueError(f"{path}: masks must be written losslessly (.png, .tif, .bmp), not JPEG.")


def save_mask(
    label: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    colored: bool = False,
    colors: ColorMap = SEED_COLORS,
) -> Path:
    """Write a class-index map as an 8-bit grey PNG (indices, the Kaggle format) or colour-coded RGB, atomically.

    Args:
        label: (H, W) or (1, H, W) class indices in 0..255.
        path: output file (``.png`` recommended; JPEG refused).
        colored: write colours from ``colors`` instead of indices.
        colors: class colours for ``colored``.

    Returns:
        the path written.
    """
    out = Path(path)
    _check_lossless(out)
    array = colorize_mask(label, colors) if colored else _as_label2d(label)
    with atomic_path(out) as tmp:
        Image.fromarray(array).save(tmp)
    return out


def save_overlay(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    colors: ColorMap = SEED_COLORS,
    alpha: float = 0.5,
) -> Path:
    """Write :func:`overlay_mask` of ``image`` and ``label`` to ``path`` (RGB, any PIL format), atomically."""
    out = Path(path)
    array = overlay_mask(image, label, colors, alpha)
    with atomic_path(out) as tmp:
        Image.fromarray(array).save(tmp)
    return out


def _read_rgb(path: str | os.PathLike) -> np.ndarray:
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB") if img.mode in ("P", "PA", "CMYK", "YCbCr") else img)
    if array.dtype != np.uint8 and array.dtype.kind in "iu":
        array = np.rint(np.clip(array, 0, 65535) / 257.0).astype(np.uint8)
    return _rgb_uint8(array)


class SaveMicroscopyPredictiond(MapTransform):
    """Write predicted class maps as PNG masks and colour overlays next to the source image's name.

    For every item, with ``stem`` the source image's file stem (from ``image_key``'s MetaTensor meta data):

    - ``output_dir/<stem>_mask.png``: 8-bit grey class indices (the Kaggle mask format), if ``write_mask``;
    - ``output_dir/<stem>_mask_color.png``: colour-coded RGB, if ``write_color``;
    - ``output_dir/<stem>_overlay.png``: the source image (re-read at its own size) with the classes
      blended in, if ``write_overlay``.

    Every file is written atomically. The prediction must already have the source image's size (apply
    ``Invertd`` first, as :func:`microscopy_postprocessing` does) and hold class indices (after argmax).

    Args:
        keys: prediction key(s), (1, H, W) or (H, W) class indices.
        output_dir: output folder (created if missing).
        image_key: key of the loaded image, whose meta data name the source file.
        colors: class colours for the colour mask and the overlay.
        write_mask, write_color, write_overlay: which files to write.
        alpha: overlay opacity.
        allow_missing_keys: skip missing keys.

    Raises:
        ValueError: the source file is unknown, or the prediction's size differs from the source image's.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        colors: ColorMap = SEED_COLORS,
        write_mask: bool = True,
        write_color: bool = False,
        write_overlay: bool = True,
        alpha: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        _parse_colors(colors)
        self.output_dir = Path(output_dir)
        self.image_key, self.colors, self.alpha = image_key, colors, float(alpha)
        self.write_mask, self.write_color, self.write_overlay = write_mask, write_color, write_overlay

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = _source(d.get(self.image_key), d, self.image_key)
        for key in self.key_iterator(d):
            src = source or _source(d[key], d, key)
            if not src:
                raise ValueError(
                    f"cannot name the output of {key!r}: no source file in the meta data of {self.image_key!r}."
                )
            label = _as_label2d(d[key])
            src_path = Path(src)
            if src_path.is_file():
                with Image.open(src_path) as img:
                    width, height = img.size  # header only
                if (height, width) != label.shape:
                    raise ValueError(
                        f"prediction {key!r} is {label.shape[0]}x{label.shape[1]} but the source image {src} is "
                        f"{height}x{width} (HxW): invert the preprocessing first (Invertd)."
                    )
            elif self.write_overlay:
                raise ValueError(f"cannot draw the overlay of {key!r}: the source image {src} is not a file.")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            stem = src_path.stem
            if self.write_mask:
                save_mask(label, self.output_dir / f"{stem}_mask.png")
            if self.write_color:
                save_mask(label, self.output_dir / f"{stem}_mask_color.png", colored=True, colors=self.colors)
            if self.write_overlay:
                save_overlay(
                    _read_rgb(src_path), label, self.output_dir / f"{stem}_overlay.png", self.colors, self.alpha
                )
        return d


def microscopy_postprocessing(
    preprocessing: Compose | None = None,
    output_dir: str | os.PathLike | None = None,
    softmax: bool = True,
    colors: ColorMap = SEED_COLORS,
    write_mask: bool = True,
    write_color: bool = False,
    write_overlay: bool = True,
    alpha: float = 0.5,
    pred_key: str = "pred",
    image_key: str = "image",
) -> Compose:
    """Post-processing of one decollated prediction: softmax, back to the input size, argmax, optional files.

    Chain: ``Activationsd(softmax)`` (if ``softmax``), ``Invertd(pred_key, preprocessing, orig_keys=image_key,
    nearest_interp=False)`` (if ``preprocessing`` is given and holds an invertible transform: undoes a
    ``"resize"`` chain's ``Resized`` on the probabilities, bilinear; ``"crop"`` chains need nothing),
    ``AsDiscreted(argmax=True)`` -> (1, H, W) class indices, and :class:`SaveMicroscopyPredictiond` (if
    ``output_dir``).

    Args:
        preprocessing: the ``"infer"`` (or ``"val"``) chain of :func:`microscopy_transforms` that produced the
            input, for ``Invertd``.
        output_dir: where to write PNG masks/overlays (None: write nothing).
        softmax: apply a softmax to the logits first (False: the prediction already holds probabilities).
        colors, write_mask, write_color, write_overlay, alpha: see :class:`SaveMicroscopyPredictiond`.
        pred_key, image_key: data keys.

    Returns:
        a ``Compose`` for ``{"image": ..., "pred": (C, h, w) logits}`` items (e.g. a bundle's ``postprocessing``).
    """
    chain: list = []
    if softmax:
        chain.append(Activationsd(pred_key, softmax=True))
    if preprocessing is not None and any(
        isinstance(t, InvertibleTransform) for t in preprocessing.flatten().transforms
    ):
        chain.append(Invertd(pred_key, transform=preprocessing, orig_keys=image_key, nearest_interp=False))
    chain.append(AsDiscreted(pred_key, argmax=True))
    if output_dir is not None:
        chain.append(
            SaveMicroscopyPredictiond(
                pred_key,
                output_dir=output_dir,
                image_key=image_key,
                colors=colors,
                write_mask=write_mask,
                write_color=write_color,
                write_overlay=write_overlay,
                alpha=alpha,
            )
        )
    return Compose(chain)


def segment_images(
    network: torch.nn.Module,
    images: Sequence[str | os.PathLike],
    spatial_size: int | Sequence[int] = (512, 512),
    spatial_mode: str = "crop",
    output_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    max_value: float | None = None,
    colors: ColorMap = SEED_COLORS,
    write_color: bool = False,
    write_overlay: bool = True,
) -> list[np.ndarray]:
    """Segment image files with a trained network: the inference path of a bundle, as one call.

    Builds ``microscopy_transforms("infer")``, :func:`microscopy_inferer` and
    :func:`microscopy_postprocessing` with the same ``spatial_size`` / ``spatial_mode`` as training, runs the
    network in eval mode without gradients (restoring its mode afterwards), and returns each image's class
    map at the image's own size. A deep-supervision list output is reduced to its first (final) element.

    Args:
        network: a 2D network, RGB in, logits (B, C, H, W) out.
        images: image files (PNG/JPEG/TIFF/BMP).
        spatial_size, spatial_mode: as used for training (see :func:`microscopy_transforms`).
        output_dir: write ``<stem>_mask.png`` (+ overlays) there (None: return arrays only).
        device: where to run (default: the network's device).
        sw_batch_size, overlap: sliding-window settings (crop mode).
        max_value: image value mapped to 1 (see :class:`EnsureRGBd`).
        colors, write_color, write_overlay: output files, see :class:`SaveMicroscopyPredictiond`.

    Returns:
        one uint8 array (H, W) of class indices per image, H and W those of the image file.

    Example::

        masks = segment_images(net, ["slide_01.png"], spatial_size=512, output_dir="predictions")
    """
    pre = microscopy_transforms("infer", spatial_size=spatial_size, spatial_mode=spatial_mode, max_value=max_value)
    inferer = microscopy_inferer(spatial_size, spatial_mode, sw_batch_size=sw_batch_size, overlap=overlap)
    post = microscopy_postprocessing(
        pre, output_dir=output_dir, colors=colors, write_color=write_color, write_overlay=write_overlay
    )
    if device is None:
        param = next(network.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = network.training
    network.eval()
    results = []
    try:
        with torch.no_grad():
            for path in images:
                item = pre({"image": os.fspath(path)})
                logits = inferer(item["image"][None].to(device), network)
                if isinstance(logits, (list, tuple)):
                    logits = logits[0]
                item["pred"] = logits[0].cpu()
                item["image"] = item["image"].cpu()
                item = post(item)
                results.append(_as_label2d(item["pred"]))
    finally:
        network.train(was_training)
    return results
