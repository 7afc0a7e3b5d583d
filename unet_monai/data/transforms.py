"""Project-specific transforms: case validation with clear errors, and 2.5D neighbour-slice stacking.

Validation happens in two places so that bad input fails with a message naming the case and the file,
never deep inside a resampling transform:

- :class:`CheckCaseFilesd` runs *before* ``LoadImaged`` and reads headers only (cheap): missing,
  unreadable or truncated files, wrong dimensionality, image/label shape or affine mismatch.
- :class:`ValidateCased` runs right *after* ``LoadImaged``: the same geometric checks on the loaded
  arrays, plus label values and NaN/Inf voxels. It squeezes trailing singleton dimensions (a
  ``(X, Y, Z, 1)`` NIfTI becomes ``(X, Y, Z)``; the inverted output is then 3D).

:func:`validate_case` / :func:`validate_datalist` run the same checks with nibabel outside any
pipeline, e.g. once over a whole dataset before training.

Errors are :class:`InvalidCaseError` (a ``ValueError``) or ``FileNotFoundError``. Inside a MONAI
``Compose`` they arrive wrapped in MONAI's ``RuntimeError("applying transform ...")``; the original
error is its ``__cause__`` and is printed in the traceback.

NaN policy: ``nan_policy="error"`` (default) rejects images with NaN/Inf voxels; ``"fill"`` replaces
them by ``fill_value`` (-1024 HU, air) and logs a warning with the count. Labels with NaN always fail.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from unet_monai.data.lits import case_id_from_path

__all__ = [
    "CheckCaseFilesd",
    "InvalidCaseError",
    "ValidateCased",
    "check_case_files",
    "slice_neighbours",
    "slice_stack_to_volume",
    "validate_case",
    "validate_datalist",
    "volume_to_slice_stack",
]

logger = logging.getLogger(__name__)

LABEL_VALUES = (0, 1, 2)
NAN_POLICIES = ("error", "fill")


class InvalidCaseError(ValueError):
    """A case that cannot be used; the message names the case id and the offending file.

    Attributes:
        case: the case id (``"volume-3"``).
        path: the file at fault (``None`` when the problem involves two files, e.g. an affine mismatch).
    """

    def __init__(self, case: str, path: str | os.PathLike | None, problem: str) -> None:
        self.case, self.path = case, None if path is None else str(path)
        where = f"case {case!r}" + (f", file {self.path}" if path is not None else "")
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------- header-level checks


def _squeezed_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third (NIfTI (X, Y, Z, 1) -> (X, Y, Z))."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _check_ndim(case: str, path: Any, key: str, shape: Sequence[int]) -> None:
    if len(shape) != 3:
        kind = {2: "a 2D image", 4: "a 4D series"}.get(len(shape), f"{len(shape)}D data")
        raise InvalidCaseError(
            case,
            path,
            f"the {key} has shape {tuple(shape)} ({kind}); a 3D volume is expected "
            "(trailing singleton dimensions are squeezed, other 2D/4D data is not supported).",
        )


def _check_pair(case: str, shapes: dict[str, tuple], affines: dict[str, np.ndarray], paths: dict, tol: float) -> None:
    """Image vs label: same shape, same affine within ``tol`` (mm)."""
    if len(shapes) < 2:
        return
    (k1, s1), (k2, s2) = list(shapes.items())[:2]
    if tuple(s1) != tuple(s2):
        raise InvalidCaseError(
            case, None, f"{k1} {paths.get(k1)} has shape {tuple(s1)} but {k2} {paths.get(k2)} has shape {tuple(s2)}."
        )
    if k1 in affines and k2 in affines:
        diff = float(np.max(np.abs(np.asarray(affines[k1], float) - np.asarray(affines[k2], float))))
        if diff > tol:
            raise InvalidCaseError(
                case,
                None,
                f"the affines of {k1} {paths.get(k1)} and {k2} {paths.get(k2)} differ by up to {diff:.4g} "
                f"(tolerance {tol:g} mm):\n{np.round(np.asarray(affines[k1], float), 4)}\nvs\n"
                f"{np.round(np.asarray(affines[k2], float), 4)}",
            )


def _gzip_isize(path: Path) -> int | None:
    """The uncompressed size (mod 2**32) a gzip file's trailer announces, or None when unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int(struct.unpack("<I", f.read(4))[0])
    except OSError:
        return None


def _read_header(case: str, key: str, path: Path) -> tuple[tuple[int, ...], np.ndarray | None]:
    """Shape and affine of one image file from its header; detects truncated NIfTI files."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".img", ".img.gz")):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            header = img.header
            shape = tuple(int(s) for s in header.get_data_shape())
            affine = np.asarray(img.affine, dtype=float)
            offset = int(header.get_data_offset())
        except Exception as e:  # nibabel raises many types for a broken header
            raise InvalidCaseError(case, path, f"cannot read the {key} header ({type(e).__name__}: {e}).") from e
        nbytes = int(np.prod(shape)) * header.get_data_dtype().itemsize
        if name.endswith(".nii"):
            size = path.stat().st_size
            if size < offset + nbytes:
                raise InvalidCaseError(
                    case, path, f"the {key} file is truncated: {size} bytes, the header needs {offset + nbytes}."
                )
        elif name.endswith(".nii.gz") and _gzip_isize(path) != (offset + nbytes) % 2**32:
            # the trailer disagrees: truncated, or a multi-member gzip; decompress to know for sure
            try:
                with gzip.open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass
            except (OSError, EOFError, ValueError) as e:
                raise InvalidCaseError(
                    case, path, f"the {key} file is truncated or corrupt ({type(e).__name__}: {e})."
                ) from e
        return shape, affine
    if name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        import SimpleITK as sitk

        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise InvalidCaseError(case, path, f"cannot read the {key} header ({e}).".replace("\n", " ")) from e
        return tuple(int(s) for s in reader.GetSize()), None  # ITK affines (LPS) are not compared here
    return (), None


def check_case_files(
    record: Mapping[str, Any],
    keys: Sequence[str] = ("image", "label"),
    affine_tol: float = 1e-3,
    case_key: str = "case",
) -> dict[str, tuple[int, ...]]:
    """Header-level checks of one case's files, without reading the voxel data.

    Args:
        record: ``{"image": path, "label": path, "case": id}``; keys absent from it are skipped, and
            values that are not paths (already loaded arrays) are skipped.
        keys: the keys holding file paths; the first two are compared (image vs label).
        affine_tol: largest allowed absolute difference between the two affines (mm).
        case_key: key of the case id (derived from the file name when absent).

    Returns:
        the (squeezed) spatial shape of each checked file, by key.

    Raises:
        FileNotFoundError: a file is missing (the message names the case and the path).
        InvalidCaseError: unreadable header, truncated data, not 3D, or an image/label mismatch.
    """
    paths = {k: Path(record[k]) for k in keys if isinstance(record.get(k), str | os.PathLike)}
    if not paths:
        return {}
    case = str(record.get(case_key) or case_id_from_path(next(iter(paths.values()))))
    shapes: dict[str, tuple] = {}
    affines: dict[str, np.ndarray] = {}
    for key, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"case {case!r}: the {key} file {path} does not exist.")
        if path.is_dir():
            continue  # e.g. a DICOM series folder: left to the reader
        shape, affine = _read_header(case, key, path)
        if not shape:
            continue
        shape = _squeezed_shape(shape)
        _check_ndim(case, path, key, shape)
        shapes[key] = shape
        if affine is not None:
            affines[key] = affine
    _check_pair(case, shapes, affines, {k: str(p) for k, p in paths.items()}, affine_tol)
    return shapes


# --------------------------------------------------------------------------- data-level checks


def _check_finite(case: str, path: Any, key: str, x: torch.Tensor, nan_policy: str, fill_value: float):
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return x
    bad = int((~finite).sum())
    nans = int(torch.isnan(x).sum())
    what = f"{bad} non-finite voxel(s) ({nans} NaN, {bad - nans} Inf)"
    if nan_policy == "error" or key != "image":
        hint = " (nan_policy='fill' replaces them in images)" if key == "image" else ""
        raise InvalidCaseError(case, path, f"the {key} holds {what}{hint}.")
    logger.warning("case %r, file %s: %s replaced by %g", case, path, what, fill_value)
    return torch.where(finite, x, torch.as_tensor(fill_value, dtype=x.dtype))


def _check_label_values(case: str, path: Any, x: torch.Tensor, label_values: Sequence[int]) -> None:
    allowed = sorted(int(v) for v in label_values)
    lo, hi = float(x.min()), float(x.max())
    contiguous = allowed == list(range(allowed[0], allowed[-1] + 1))
    if contiguous and lo >= allowed[0] and hi <= allowed[-1]:
        if x.is_floating_point() and bool(torch.any(torch.frac(x) != 0)):
            values = torch.unique(x[torch.frac(x) != 0])[:8].tolist()
            raise InvalidCaseError(case, path, f"the label holds non-integer values, e.g. {values}.")
        return
    values = torch.unique(x).tolist()
    outside = [v for v in values if v not in allowed]
    if outside:
        shown = ", ".join(f"{int(v) if float(v).is_integer() else v}" for v in outside[:10])
        more = f" ... ({len(outside)} in all)" if len(outside) > 10 else ""
        raise InvalidCaseError(
            case, path, f"the label holds values {{{shown}}}{more} outside the expected {set(allowed)}."
        )


def _meta_path(d: Mapping, key: str) -> str | None:
    x = d.get(key)
    meta = x.meta if isinstance(x, MetaTensor) else d.get(f"{key}_meta_dict", {})
    p = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return None if p is None else str(p)


def _meta_affine(d: Mapping, key: str) -> np.ndarray | None:
    x = d.get(key)
    if isinstance(x, MetaTensor):
        return x.affine.detach().cpu().numpy()
    meta = d.get(f"{key}_meta_dict")
    if isinstance(meta, Mapping) and "affine" in meta:
        return np.asarray(meta["affine"])
    return None


class CheckCaseFilesd(MapTransform):
    """Check a case's files from their headers before ``LoadImaged`` reads them.

    Place it right before ``LoadImaged``: missing, unreadable or truncated files, non-3D volumes and
    image/label shape or affine mismatches then fail with a message naming the case and the file,
    instead of a reader or resampling error. Values that are not paths (already loaded data, as
    MONAI Label may pass) are left alone. See :func:`check_case_files`.

    Args:
        keys: keys of the file paths, image first then label.
        affine_tol: allowed affine difference between image and label, in mm.
        case_key: key of the case id in the data dict.
        allow_missing_keys: skip keys absent from the data (inference has no label).

    Example::

        Compose([CheckCaseFilesd(["image", "label"], allow_missing_keys=True), LoadImaged(["image", "label"]), ...])
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        affine_tol: float = 1e-3,
        case_key: str = "case",
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.affine_tol = float(affine_tol)
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = [str(k) for k in self.key_iterator(d)]
        check_case_files(d, keys=keys, affine_tol=self.affine_tol, case_key=self.case_key)
        return d


class ValidateCased(MapTransform):
    """Validate a loaded case right after ``LoadImaged`` (before ``EnsureChannelFirstd``).

    Checks, naming the case id and the file in every error:

    - dimensionality: trailing singleton dimensions are squeezed (``(X, Y, Z, 1)`` -> ``(X, Y, Z)``,
      meta data kept); anything else that is not 3D is rejected (2D slices, 4D series);
    - image and label shapes are equal and their affines agree within ``affine_tol`` mm;
    - label values are integers within ``label_values`` (the message lists the offending values);
    - NaN/Inf: an error (``nan_policy="error"``), or replaced by ``fill_value`` with a logged warning
      (``nan_policy="fill"``, images only).

    Args:
        keys: the image key then the label key (the label may be absent with ``allow_missing_keys``).
        label_key: which of ``keys`` is the label (value checks apply to it only).
        label_values: allowed label values.
        affine_tol: allowed affine difference between image and label, in mm.
        nan_policy: ``"error"`` or ``"fill"``.
        fill_value: replacement for non-finite image voxels with ``nan_policy="fill"`` (HU).
        case_key: key of the case id (the file name stands in when absent).
        allow_missing_keys: skip absent keys.

    Raises:
        InvalidCaseError: see above.

    Example::

        Compose([LoadImaged(["image", "label"]), ValidateCased(["image", "label"]), EnsureChannelFirstd(...)])
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_key: str = "label",
        label_values: Sequence[int] = LABEL_VALUES,
        affine_tol: float = 1e-3,
        nan_policy: str = "error",
        fill_value: float = -1024.0,
        case_key: str = "case",
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}.")
        if not label_values:
            raise ValueError("label_values must not be empty.")
        self.label_key = label_key
        self.label_values = tuple(int(v) for v in label_values)
        self.affine_tol = float(affine_tol)
        self.nan_policy = nan_policy
        self.fill_value = float(fill_value)
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        paths = {str(k): _meta_path(d, k) for k in keys}
        first = next((p for p in paths.values() if p), None)
        case = str(d.get(self.case_key) or (case_id_from_path(first) if first else "<unnamed>"))
        shapes: dict[str, tuple] = {}
        affines: dict[str, np.ndarray] = {}
        for key in keys:
            x = d[key]
            path = paths[str(key)]
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            shape = _squeezed_shape(t.shape)
            if shape != tuple(t.shape):
                t = t.reshape(shape)
                logger.debug("case %r: squeezed %s from %s to %s", case, key, tuple(x.shape), shape)
            _check_ndim(case, path, str(key), shape)
            t = _check_finite(case, path, str(key), t, self.nan_policy, self.fill_value)
            if key == self.label_key:
                _check_label_values(case, path, t, self.label_values)
            if isinstance(x, MetaTensor) and not isinstance(t, MetaTensor):
                t = MetaTensor(t, meta=x.meta, applied_operations=x.applied_operations)
            d[key] = t if isinstance(x, torch.Tensor) else t.numpy()
            shapes[str(key)] = shape
            affine = _meta_affine(d, key)
            if affine is not None:
                affines[str(key)] = affine
        _check_pair(case, shapes, affines, paths, self.affine_tol)
        return d


def validate_case(
    record: Mapping[str, Any],
    label_values: Sequence[int] = LABEL_VALUES,
    affine_tol: float = 1e-3,
    check_data: bool = True,
    nan_policy: str = "error",
) -> dict[str, Any]:
    """Check one case with nibabel, outside any pipeline.

    Args:
        record: ``{"image": path, "label": path, "case": id}`` (``label`` optional).
        label_values: allowed label values.
        affine_tol: allowed image/label affine difference (mm).
        check_data: also read the voxels (label values, NaN/Inf); headers only when False.
        nan_policy: ``"error"`` reports non-finite image voxels; ``"fill"`` accepts them (they will be
            replaced in the pipelines).

    Returns:
        ``{"case", "shape", "spacing", "orientation"}`` of the image.

    Raises:
        FileNotFoundError, InvalidCaseError: see :func:`check_case_files` and :class:`ValidateCased`.
    """
    import nibabel as nib

    keys = [k for k in ("image", "label") if k in record]
    check_case_files(record, keys=keys, affine_tol=affine_tol)
    case = str(record.get("case") or case_id_from_path(record["image"]))
    img = nib.load(str(record["image"]))
    info = {
        "case": case,
        "shape": list(_squeezed_shape(img.shape)),
        "spacing": [round(float(z), 4) for z in img.header.get_zooms()[:3]],
        "orientation": "".join(nib.aff2axcodes(img.affine)),
    }
    if check_data:
        for key in keys:
            path = str(record[key])
            try:
                arr = np.asanyarray(nib.load(path).dataobj)
            except Exception as e:
                raise InvalidCaseError(case, path, f"cannot read the {key} data ({type(e).__name__}: {e}).") from e
            t = torch.as_tensor(np.asarray(arr).reshape(_squeezed_shape(arr.shape)))
            if t.is_floating_point():
                _check_finite(case, path, key, t, nan_policy if key == "image" else "error", 0.0)
            if key == "label":
                _check_label_values(case, path, t, label_values)
    return info


def validate_datalist(
    datalist: Sequence[Mapping[str, Any]],
    label_values: Sequence[int] = LABEL_VALUES,
    affine_tol: float = 1e-3,
    check_data: bool = False,
    nan_policy: str = "error",
) -> list[dict[str, Any]]:
    """Check every case of a datalist and report all problems at once.

    Args:
        datalist: records as returned by :func:`unet_monai.data.find_cases`.
        label_values, affine_tol, nan_policy: see :func:`validate_case`.
        check_data: read voxel data too (slower: every volume is decompressed once).

    Returns:
        one summary per case (see :func:`validate_case`).

    Raises:
        ValueError: listing every invalid case with its reason (one line each).
    """
    infos, errors = [], []
    for record in datalist:
        try:
            infos.append(validate_case(record, label_values, affine_tol, check_data, nan_policy))
        except (InvalidCaseError, FileNotFoundError) as e:
            errors.append(str(e).replace("\n", " "))
    if errors:
        raise ValueError(f"{len(errors)} of {len(datalist)} cases are invalid:\n" + "\n".join(errors))
    return infos


# --------------------------------------------------------------------------- 2.5D slice stacking


def slice_neighbours(indices: Sequence[int] | np.ndarray, depth: int, num_slices: int = 3) -> np.ndarray:
    """Indices of each slice's neighbourhood along the axial axis, border slices replicated.

    Args:
        indices: centre slice indices, shape (N,).
        depth: number of slices of the volume.
        num_slices: odd neighbourhood size (1, 3, 5, ...); the centre slice is in the middle.

    Returns:
        int64 array (N, num_slices): ``[z - k, ..., z, ..., z + k]`` clipped to ``0..depth-1``.
    """
    if num_slices < 1 or num_slices % 2 == 0:
        raise ValueError(f"num_slices must be an odd positive number (1, 3, 5 ...), got {num_slices}.")
    half = num_slices // 2
    z = np.asarray(indices, dtype=np.int64).reshape(-1, 1)
    return np.clip(z + np.arange(-half, half + 1, dtype=np.int64)[None, :], 0, depth - 1)


def volume_to_slice_stack(
    volume: torch.Tensor | np.ndarray, num_slices: int = 3, indices: Sequence[int] | None = None
) -> torch.Tensor | np.ndarray:
    """Turn a preprocessed volume into 2.5D network inputs: each axial slice with its neighbours as channels.

    This is exactly what :class:`unet_monai.data.LiTSSliceDataset` feeds the 2D networks in training,
    so inference on a whole volume must go through it (or :class:`unet_monai.inferers.SliceStackInferer`,
    which calls it in batches).

    Args:
        volume: ``(1, H, W, D)`` or ``(H, W, D)``, axial axis last (after ``Orientationd("RAS")``).
        num_slices: odd number of slices per input (1, 3 or 5); channel ``i`` is slice
            ``z + i - num_slices // 2`` (inferior to superior in RAS), the border slice replicated at
            the ends.
        indices: the centre slices to build (default: all ``D``).

    Returns:
        ``(N, num_slices, H, W)`` of the same type (torch or numpy) and dtype as ``volume``.

    Example::

        stack = volume_to_slice_stack(image, num_slices=3)  # (1, 256, 256, 80) -> (80, 3, 256, 256)
    """
    if volume.ndim == 4:
        if volume.shape[0] != 1:
            raise ValueError(f"expected a single-channel volume (1, H, W, D), got shape {tuple(volume.shape)}.")
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(f"expected a volume (1, H, W, D) or (H, W, D), got shape {tuple(volume.shape)}.")
    depth = int(volume.shape[-1])
    idx = slice_neighbours(np.arange(depth) if indices is None else indices, depth, num_slices)
    if isinstance(volume, torch.Tensor):
        out = volume[..., torch.as_tensor(idx, device=volume.device)]  # (H, W, N, S)
        return out.permute(2, 3, 0, 1).contiguous()
    return np.ascontiguousarray(np.moveaxis(np.asarray(volume)[..., idx], (2, 3), (0, 1)))


def slice_stack_to_volume(stack: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Inverse layout of :func:`volume_to_slice_stack` for network outputs: ``(D, C, H, W)`` -> ``(C, H, W, D)``."""
    if stack.ndim != 4:
        raise ValueError(f"expected per-slice outputs (D, C, H, W), got shape {tuple(stack.shape)}.")
    if isinstance(stack, torch.Tensor):
        return stack.permute(1, 2, 3, 0).contiguous()
    return np.ascontiguousarray(np.moveaxis(stack, 0, -1))
