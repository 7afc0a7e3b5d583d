"""Input discovery, reading and output writing for the command line, with the input's geometry kept.

What ``unet-monai predict`` accepts, one *case* per input:

- a NIfTI file (``.nii``, ``.nii.gz``): any orientation, int16 with scaling, big-endian, 2D, or 3D
  with trailing singleton dimensions (``(X, Y, Z, 1)``);
- any single file SimpleITK reads (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, a single DICOM file ...);
- a folder holding one DICOM series (read with ``SimpleITK.ImageSeriesReader``);
- a folder of the above: its image files (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
  ``.mhd``) and its sub-folders that hold a DICOM series; a LiTS or MSD dataset folder gives its images
  only (not its segmentations), as :func:`unet_monai.bundle.find_images` does.

Non-NIfTI input is converted to a NIfTI file in a temporary folder. ITK describes the grid in LPS
coordinates, NIfTI in RAS, so the conversion is ``affine[:3, :3] = F @ direction @ diag(spacing)``
and ``affine[:3, 3] = F @ origin`` with ``F = diag(-1, -1, 1)``; the voxel array (``(z, y, x)`` in
SimpleITK's numpy view) is transposed to ``(x, y, z)``. The label written for such an input has the
input's size and that affine: read back with SimpleITK it has the input's origin, spacing and direction.

Every problem with one input is an :class:`InputError` carrying the path and a one-line description,
which the command prints as ``error: PATH: PROBLEM``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from nibabel.volumeutils import apply_read_scaling

from unet_monai.data.lits import case_id_from_path
from unet_monai.utils.io import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "InputError",
    "InputItem",
    "Volume",
    "case_name",
    "collect_inputs",
    "from_ras",
    "itk_to_nifti_affine",
    "natural_key",
    "nifti_to_itk_geometry",
    "open_volume",
    "ras_affine",
    "ras_shape",
    "readable_mode",
    "save_label",
    "save_probabilities",
    "squeezed_shape",
    "to_ras",
    "voxel_spacing",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class InputError(Exception):
    """One input that cannot be processed.

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it, on one line.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


def natural_key(text: str) -> tuple:
    """Sort key ordering ``volume-2`` before ``volume-10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def case_name(path: str | os.PathLike) -> str:
    """The case name of an input: the file name without its image extension, or the folder name."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name
    return case_id_from_path(p)


def squeezed_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third (``(X, Y, Z, 1)`` -> ``(X, Y, Z)``)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in mm along each array axis: the norms of the affine's first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0))


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class InputItem:
    """One input of ``predict``: a ``path`` (file or DICOM folder), its ``case`` name and ``kind``.

    ``kind`` is ``"nifti"``, ``"itk"`` (any other file, read by SimpleITK) or ``"dicom"`` (a folder).
    """

    path: Path
    case: str
    kind: str


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


@contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings on stderr (e.g. "No Series were found" when scanning a non-DICOM folder)."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _dicom_series(folder: Path) -> tuple[str, ...]:
    """The DICOM series ids of the files directly in ``folder`` (empty when there is none)."""
    import SimpleITK as sitk

    try:
        with _quiet_itk():
            return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return ()


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    return "nifti" if path.name.lower().endswith(NIFTI_SUFFIXES) else "itk"


def collect_inputs(path: str | os.PathLike) -> list[InputItem]:
    """The inputs named by ``path``: one file, one DICOM series folder, or a folder of either.

    Raises:
        InputError: ``path`` does not exist, or is a folder holding no image nor DICOM series.
    """
    root = Path(path).expanduser()
    if not root.exists():
        what = "a broken symbolic link" if root.is_symlink() else "no such file or folder"
        raise InputError(root, f"does not exist ({what}).")
    if not root.is_dir():
        return [InputItem(root, case_name(root), _kind_of(root))]
    try:
        entries = sorted((p for p in root.iterdir() if not _is_hidden(p)), key=lambda p: natural_key(p.name))
    except OSError as e:
        raise InputError(root, f"cannot list the folder ({e.strerror or e}).") from e
    images = [p for p in entries if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
    if not images and _dicom_series(root):
        return [InputItem(root, case_name(root), "dicom")]
    try:  # a LiTS / MSD dataset: its images, not its segmentations
        from unet_monai.data.lits import find_cases

        dataset = [Path(r["image"]) for r in find_cases(root, require_labels=False)]
    except (ValueError, FileNotFoundError, KeyError):
        dataset = []
    if dataset:
        return [InputItem(p, case_name(p), _kind_of(p)) for p in dataset]
    items = [InputItem(p, case_name(p), _kind_of(p)) for p in images]
    items += [InputItem(d, case_name(d), "dicom") for d in entries if d.is_dir() and _dicom_series(d)]
    if not items:
        raise InputError(
            root, f"the folder holds no image ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series to predict on."
        )
    return sorted(items, key=lambda i: natural_key(i.path.name))


# --------------------------------------------------------------------------- geometry


def itk_to_nifti_affine(direction: Sequence[float], spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """The NIfTI (RAS) affine of an ITK (LPS) grid given by its direction (row-major), spacing and origin.

    A 2D grid is embedded in 3D (third axis along z, 1 mm): ``affine @ [i, j, 0, 1]`` is then the
    RAS position of pixel ``(i, j)``.
    """
    n = len(spacing)
    d = np.eye(3)
    d[:n, :n] = np.asarray(direction, float).reshape(n, n)
    s = np.ones(3)
    s[:n] = np.asarray(spacing, float)
    o = np.zeros(3)
    o[:n] = np.asarray(origin, float)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ d @ np.diag(s)
    affine[:3, 3] = _LPS_TO_RAS @ o
    return affine


def nifti_to_itk_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The inverse of :func:`itk_to_nifti_affine` for 3D grids: ``(direction, spacing, origin)`` in LPS."""
    affine = np.asarray(affine, float)
    lps = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = _LPS_TO_RAS @ affine[:3, 3]
    return tuple(direction.ravel().tolist()), tuple(spacing.tolist()), tuple(origin.tolist())


def _ras_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from the storage axes of ``affine`` to RAS (as ``Orientationd``)."""
    return ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))


def to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A view of ``array`` (storage order, first three axes spatial) with RAS axes: flips and a transpose."""
    return apply_orientation(array, _ras_ornt(affine))


def from_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_ras`: a view of a RAS-ordered ``array`` in the storage order of ``affine``."""
    return apply_orientation(array, ornt_transform(axcodes2ornt("RAS"), io_orientation(affine)))


def ras_shape(shape: Sequence[int], affine: np.ndarray) -> tuple[int, ...]:
    """The shape of the RAS view :func:`to_ras` gives of an array of ``shape`` (first three axes)."""
    ornt = _ras_ornt(affine)
    out = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = int(shape[axis])
    return tuple(out) + tuple(int(s) for s in shape[3:])


def ras_affine(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The affine of the RAS view :func:`to_ras` gives of an array of ``shape`` with ``affine``."""
    ornt = _ras_ornt(affine)
    return np.asarray(affine, float) @ inv_ornt_aff(ornt, tuple(shape)[:3])


# --------------------------------------------------------------------------- reading


@dataclass
class Volume:
    """An input volume ready for prediction.

    Attributes:
        source: the input (file or DICOM folder).
        case: the case name (output files are ``<case>_seg.nii.gz`` ...).
        nifti: a 3D NIfTI file holding the same voxels and geometry (the input itself, or a conversion
            in a temporary folder for non-NIfTI and 2D input).
        image: the nibabel image of ``nifti`` (its data is read lazily).
        shape: the input's own array shape; outputs get exactly this shape.
        affine: the input's voxel-to-RAS affine; outputs get exactly this affine.
        header: the input's NIfTI header (outputs copy it: qform/sform codes, units), ``None`` otherwise.
        is_2d: the input is a single 2D image (processed as a one-slice volume ``(X, Y, 1)``).
    """

    source: Path
    case: str
    nifti: Path
    image: nib.Nifti1Image
    shape: tuple[int, ...]
    affine: np.ndarray
    header: Any = None
    is_2d: bool = False
    _raw: np.ndarray | None = field(default=None, repr=False)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The 3D shape the networks see: ``(X, Y, Z)``, ``(X, Y, 1)`` for a 2D image."""
        return tuple(int(s) for s in self.image.shape[:3])  # type: ignore[return-value]

    def raw(self) -> np.ndarray:
        """The stored (unscaled) voxel values, ``(X, Y, Z)``, read once: int16 stays int16 (no float64 copy).

        Raises:
            InputError: the data cannot be read (truncated or corrupt file).
        """
        if self._raw is None:
            try:
                data = self.image.dataobj.get_unscaled()
            except Exception as e:  # nibabel/gzip/zlib raise many types for truncated data
                raise InputError(
                    self.source, f"cannot read the voxel data: truncated or corrupt file ({_why(e)})."
                ) from e
            self._raw = np.asarray(data).reshape(self.spatial_shape)
        return self._raw

    def scaled(self, part: np.ndarray) -> np.ndarray:
        """Stored values ``part`` (a piece of :meth:`raw`) in float32 with the NIfTI scaling applied.

        The scaling is nibabel's own (``apply_read_scaling``, float64 for scaled integers) followed by
        the float32 cast ``LoadImaged`` does, so a piece equals the same piece of the whole volume as
        the bundle pipeline loads it, while only the piece ever exists in float64.
        """
        proxy = self.image.dataobj
        return np.asarray(apply_read_scaling(part, proxy.slope, proxy.inter)).astype(np.float32)

    def release(self) -> None:
        """Drop the cached voxel data."""
        self._raw = None


def _why(error: BaseException, limit: int = 240) -> str:
    """A short one-line description of an exception (ITK's file/line/class prefixes removed)."""
    text = " ".join(str(error).split())
    for marker in ("sitk::ERROR:", "itk::ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    text = re.sub(r"^\w+\(0x[0-9a-f]+\):\s*", "", text)
    if "[nrrd]" in text:  # teem's error stack: the last entry is the cause
        text = text.rsplit("[nrrd]", 1)[1].strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def readable_mode(path: str | os.PathLike) -> None:
    """Give a file written through ``atomic_path`` (created 0600 by ``mkstemp``) the usual mode: 0666 minus umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _check_readable(path: Path) -> None:
    """Fail with a clear message for a missing, empty or unreadable file (or an unreadable folder)."""
    if not path.exists():
        raise InputError(path, "does not exist.")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputError(path, "cannot be read: permission denied.")
        return
    if not path.is_file():
        raise InputError(path, "is not a regular file.")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read: permission denied.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as e:
        raise InputError(path, "cannot be read: permission denied.") from e
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e}).") from e
    if size == 0:
        raise InputError(path, "empty file (0 bytes).")


def _check_dims(path: Path, shape: Sequence[int], spatial_dims: int, bundle: str) -> bool:
    """Reject 4D+ data, and 2D images for a 3D bundle; return whether the input is a 2D image."""
    shape = squeezed_shape(shape)
    if len(shape) > 3:
        raise InputError(
            path,
            f"a {len(shape)}D volume (shape {shape}): one 3D volume per file is expected "
            "(split a 4D series into 3D volumes first).",
        )
    if len(shape) < 2:
        raise InputError(path, f"{len(shape)}D data (shape {shape}): a 2D image or a 3D volume is expected.")
    is_2d = len(shape) == 2 or shape[2] == 1
    if is_2d and spatial_dims == 3:
        raise InputError(
            path,
            f"a 2D image (shape {shape}), but {bundle} is a 3D bundle that needs a volume of several slices.",
        )
    return is_2d


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, header: Any = None) -> None:
    img = nib.Nifti1Image(array, affine, header=header)
    if header is None:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    img.set_data_dtype(array.dtype)
    nib.save(img, str(path))


def _open_nifti(item: InputItem, spatial_dims: int, bundle: str, tmpdir: Path) -> Volume:
    path = item.path
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.header.get_data_shape())
        dtype = img.header.get_data_dtype()
    except Exception as e:
        raise InputError(path, f"not a readable NIfTI file ({_why(e)}).") from e
    if dtype.fields is not None or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(path, f"unsupported voxel type {dtype}: a scalar (grey-level) image is expected.")
    is_2d = _check_dims(path, shape, spatial_dims, bundle)
    affine = np.asarray(img.affine, float)
    if len(squeezed_shape(shape)) == 3:
        from unet_monai.data.transforms import InvalidCaseError, check_case_files

        try:  # header-level checks of the data pipeline: truncated .nii / .nii.gz, size vs header
            check_case_files({"image": str(path), "case": item.case}, keys=("image",))
        except InvalidCaseError as e:
            problem = str(e)
            prefix = f"case {e.case!r}, file {e.path}: " if e.path else f"case {e.case!r}: "
            raise InputError(path, problem[len(prefix) :] if problem.startswith(prefix) else problem) from e
        nifti = path
    else:  # a 2D image: stored as a one-slice volume for the bundle's 3D pipeline
        try:
            data = np.asanyarray(img.dataobj.get_unscaled())
        except Exception as e:
            raise InputError(path, f"cannot read the voxel data: truncated or corrupt file ({_why(e)}).") from e
        nifti = tmpdir / f"{item.case}.nii"
        header = img.header.copy()
        header.set_data_shape((*shape[:2], 1))
        out = nib.Nifti1Image(data.reshape(*shape[:2], 1), affine, header=header)
        out.header.set_slope_inter(img.dataobj.slope, img.dataobj.inter)
        nib.save(out, str(nifti))
    converted = nib.load(str(nifti))
    return Volume(path, item.case, nifti, converted, shape, affine, img.header, is_2d)


def _open_itk(item: InputItem, spatial_dims: int, bundle: str, tmpdir: Path) -> Volume:
    import SimpleITK as sitk

    path = item.path
    try:
        with _quiet_itk():
            if item.kind == "dicom":
                series = _dicom_series(path)
                if not series:
                    raise InputError(path, "the folder holds no DICOM series (nor any image file).")
                if len(series) > 1:
                    raise InputError(
                        path,
                        f"the folder holds {len(series)} DICOM series ({', '.join(series[:3])} ...); "
                        "pass one series folder at a time.",
                    )
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
                image = reader.Execute()
            else:
                info = sitk.ImageFileReader()
                info.SetFileName(str(path))
                try:
                    info.ReadImageInformation()
                except RuntimeError as e:
                    raise InputError(path, f"not an image SimpleITK can read ({_why(e)}).") from e
                _check_dims(path, info.GetSize(), spatial_dims, bundle)
                try:
                    image = info.Execute()
                except RuntimeError as e:
                    raise InputError(path, f"cannot read the voxel data: truncated or corrupt file ({_why(e)}).") from e
    except RuntimeError as e:
        raise InputError(path, f"cannot read the DICOM series ({_why(e)}).") from e
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel (a colour or vector image): "
            "a scalar (grey-level) image is expected.",
        )
    size = tuple(int(s) for s in image.GetSize())
    is_2d = _check_dims(path, size, spatial_dims, bundle)
    if len(size) > 3:  # (X, Y, Z, 1 ...): drop the singleton axes
        image = image[(slice(None),) * 3 + (0,) * (len(size) - 3)]
    affine = itk_to_nifti_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    array = sitk.GetArrayViewFromImage(image).T  # (z, y, x) C-order -> (x, y, z) view, no copy
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == np.float64 or array.dtype.kind not in "iuf":
        array = array.astype(np.float32)
    nifti = tmpdir / f"{item.case}.nii"
    _save_nifti(np.asarray(array), affine, nifti)
    del array, image
    shape = size[:2] if len(squeezed_shape(size)) == 2 else squeezed_shape(size)
    return Volume(path, item.case, nifti, nib.load(str(nifti)), tuple(shape), affine, None, is_2d)


def open_volume(item: InputItem, spatial_dims: int, tmpdir: str | os.PathLike, bundle: str = "the bundle") -> Volume:
    """Check and open one input: NIfTI directly, anything else converted to NIfTI in ``tmpdir``.

    Args:
        item: the input.
        spatial_dims: 2 for a 2D (2.5D) bundle, which also accepts 2D images; 3 for a 3D bundle.
        tmpdir: a temporary folder for conversions (the caller removes it).
        bundle: the bundle's name, for messages.

    Raises:
        InputError: missing, unreadable, empty, truncated or unrecognised file, 4D data, a 2D image for
            a 3D bundle, a colour image, or a folder without (exactly one) DICOM series.
    """
    _check_readable(item.path)
    if item.kind == "nifti":
        return _open_nifti(item, spatial_dims, bundle, Path(tmpdir))
    return _open_itk(item, spatial_dims, bundle, Path(tmpdir))


# --------------------------------------------------------------------------- writing


def _output_header(volume: Volume, dtype: np.dtype) -> Any:
    if volume.header is None:
        return None
    header = volume.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    header["descrip"] = b""
    return header


def save_label(volume: Volume, labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``labels`` (``(X, Y, Z)`` in the input's storage order) as uint8 NIfTI with the input's geometry.

    The array is reshaped to the input's own shape (a 2D input gives a 2D label, ``(X, Y, Z, 1)`` stays
    4D), the affine is the input's, a NIfTI input's header (qform/sform codes, units) is kept, and the
    file is written through :func:`~unet_monai.utils.io.atomic_path`.
    """
    array = np.asarray(labels, dtype=np.uint8).reshape(volume.shape)
    header = _output_header(volume, np.dtype(np.uint8))
    with atomic_path(path) as tmp:
        _save_nifti(array, volume.affine, tmp, header)
        readable_mode(tmp)
    return Path(path)


def save_probabilities(volume: Volume, probabilities: np.ndarray, path: str | os.PathLike) -> Path:
    """Write class probabilities ``(X, Y, Z, C)`` quantised to uint8 (``scl_slope = 1/255``) with the input's geometry.

    Readers that apply the NIfTI scaling (nibabel's ``get_fdata``, ITK, MONAI's ``LoadImage``) get
    values in [0, 1] in steps of 1/255; the last axis is the class (0 background, 1 liver, 2 tumour).
    2D inputs give ``(X, Y, 1, C)``.
    """
    array = np.asarray(probabilities)
    if array.dtype != np.uint8:
        raise TypeError(f"expected probabilities quantised to uint8, got {array.dtype}.")
    header = _output_header(volume, np.dtype(np.uint8))
    if header is not None:
        header.set_data_shape(array.shape)
        header.set_xyzt_units(*volume.header.get_xyzt_units()[:1], "unknown")
    with atomic_path(path) as tmp:
        img = nib.Nifti1Image(array, volume.affine, header=header)
        if header is None:
            img.set_qform(volume.affine, code=1)
            img.set_sform(volume.affine, code=1)
            img.header.set_xyzt_units("mm")
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1.0 / 255.0, 0.0)
        img.header.set_intent("estimate", name="probability")
        nib.save(img, str(tmp))
        readable_mode(tmp)
    return Path(path)
