"""The two prediction paths of ``unet-monai predict``: slice streaming for 2D bundles, whole volume otherwise.

**Whole volume** (3D bundles; 2D bundles with ``--no-stream``): exactly the bundle's inference
pipeline: ``preprocessing`` on the NIfTI file, ``inferer`` with the network, softmax,
``Invertd(transform=preprocessing)`` back to the input's grid and orientation, argmax, and the
bundle's label filters (``OpenForegroundd``, ``KeepLargestConnectedComponentd``, see :func:`label_filters`).

**Slice streaming** (2D bundles, default): the same transforms, applied to slabs of axial slices. A 2D
bundle's preprocessing (:func:`unet_monai.data.lits_2d_preprocessing`) is: checks, ``LoadImaged``,
``Orientationd("RAS")``, then per-slice steps only (HU window, in-plane ``Resized`` that keeps every
slice, ``EnsureTyped``). So the volume is read once in its stored type (int16 stays int16: no
float64 or float32 copy of the whole volume), viewed in RAS order without a copy, and cut into slabs of
about 64 slices (a multiple of ``sw_batch_size``), each holding the neighbour slices its first and last
slices need as 2.5D input (``num_slices // 2`` on each side: the outputs of those border slices are
dropped, 2 of 64 slices computed twice with 3-slice inputs). Each
slab goes through the bundle's per-slice transforms, the bundle's ``SliceStackInferer``, the softmax,
``Invertd`` of those transforms and the argmax; only uint8 labels (and uint8 probabilities with
``--save-probabilities``) are kept for the whole volume. The result equals the whole-volume path
(tested), while the peak memory no longer grows with C x H x W x D float32 probabilities.

Streaming is used when the bundle's preprocessing has that shape; anything else (e.g.
``crop_foreground=True``, whose crop depends on the whole volume) falls back to the whole-volume path,
with the reason logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unet_monai.cli.bundle import FlipTTA, LoadedBundle
from unet_monai.cli.io import InputError, Volume, from_ras, ras_affine, ras_shape, to_ras

__all__ = [
    "Prediction",
    "SliceStreamPredictor",
    "WholeVolumePredictor",
    "label_filters",
    "make_predictor",
    "streaming_plan",
]

logger = logging.getLogger(__name__)

_LOADING = ("CheckCaseFilesd", "LoadImaged", "ValidateCased", "EnsureChannelFirstd")
_POINTWISE = ("ScaleIntensityRanged", "ThresholdIntensityd", "EnsureTyped", "CastToTyped")


@dataclass
class Prediction:
    """The result for one volume.

    Attributes:
        labels: uint8 labels ``(X, Y, Z)`` in the input's storage order.
        probabilities: uint8 probabilities ``(X, Y, Z, C)`` (value / 255), or ``None``.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass


def _quantise(prob: torch.Tensor) -> torch.Tensor:
    """Probabilities in [0, 1] to uint8 steps of 1/255."""
    return torch.round(prob.float().clamp(0, 1) * 255).to(torch.uint8)


def _input_error(volume: Volume, error: BaseException) -> InputError | None:
    """The InvalidCaseError / FileNotFoundError inside a MONAI "applying transform" error, as an InputError."""
    from unet_monai.data.transforms import InvalidCaseError

    seen = error
    while seen is not None:
        if isinstance(seen, InvalidCaseError):
            text = str(seen)
            prefix = f"case {seen.case!r}, file {seen.path}: " if seen.path else f"case {seen.case!r}: "
            return InputError(volume.source, text[len(prefix) :] if text.startswith(prefix) else text)
        if isinstance(seen, FileNotFoundError):
            return InputError(volume.source, str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def streaming_plan(bundle: LoadedBundle) -> tuple[Any, dict[str, Any]] | str:
    """The per-slice part of a 2D bundle's preprocessing, or why slices cannot be streamed.

    Returns:
        ``(tail, options)``: ``tail`` a ``Compose`` of the transforms after ``Orientationd("RAS")``, all
        per-slice; ``options`` the loading settings to mimic (``dtype``, ``nan_policy``,
        ``fill_value``). Or a string giving the reason streaming is not possible.
    """
    from monai.transforms import Compose, Orientationd, Resized

    from unet_monai.inferers import SliceStackInferer

    if bundle.spatial_dims != 2:
        return "the bundle is 3D"
    if not isinstance(bundle.inferer, SliceStackInferer):
        return f"its inferer is a {type(bundle.inferer).__name__}, not a SliceStackInferer"
    pre = bundle.preprocessing
    transforms = list(getattr(pre, "transforms", []))
    names = [type(t).__name__ for t in transforms]
    if "Orientationd" not in names:
        return "its preprocessing has no Orientationd"
    cut = names.index("Orientationd")
    orientation = transforms[cut]
    if not isinstance(orientation, Orientationd) or orientation.ornt_transform.axcodes != "RAS":
        return "its preprocessing does not orient to RAS"
    if any(n not in _LOADING for n in names[:cut]):
        return f"its preprocessing does more than load before Orientationd ({names[:cut]})"
    for t in transforms[cut + 1 :]:
        name = type(t).__name__
        if isinstance(t, Resized):
            size = list(t.resizer.spatial_size)
            if len(size) != 3 or size[-1] not in (-1, 0) or getattr(t.resizer, "size_mode", "all") != "all":
                return f"its Resized changes the number of slices (spatial_size {size})"
        elif name not in _POINTWISE:
            return f"its preprocessing step {name} is not per-slice"
    options: dict[str, Any] = {"dtype": np.float32, "nan_policy": "error", "fill_value": -1024.0}
    for t in transforms[:cut]:
        if type(t).__name__ == "LoadImaged":
            options["dtype"] = getattr(getattr(t, "_loader", None), "dtype", np.float32) or np.float32
        if type(t).__name__ == "ValidateCased":
            options["nan_policy"], options["fill_value"] = t.nan_policy, t.fill_value
    return Compose(transforms[cut + 1 :]), options


#: post-argmax steps of a bundle's ``postprocessing`` that act on the label map (looked up by class name)
LABEL_FILTERS = ("OpenForegroundd", "KeepLargestConnectedComponentd")


def label_filters(bundle: LoadedBundle) -> list[Any]:
    """The bundle's label filters of ``postprocessing`` (:data:`LABEL_FILTERS`), in order, to apply to the labels.

    The predictors compute the argmax themselves (streamed, or without keeping float probabilities), so
    the post-argmax label filters of the bundle's own ``postprocessing`` are looked up and applied to
    the whole label volume: the result stays the bundle's. The probabilities saved with
    ``--save-probabilities`` are the network's, before the filter.
    """
    parser = bundle.parser
    if parser is None:
        return []
    items = parser.get("postprocessing#transforms", []) or []
    filters = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and str(item.get("_target_", "")).endswith(LABEL_FILTERS):
            filters.append(parser.get_parsed_content(f"postprocessing#transforms#{i}"))
    return filters


class _Base:
    def __init__(self, bundle: LoadedBundle, tta: bool = False) -> None:
        self.bundle = bundle
        self.network: torch.nn.Module = FlipTTA(bundle.network) if tta else bundle.network
        self.filters = label_filters(bundle)

    def _filter(self, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """``labels`` (X, Y, Z) uint8 with voxel-to-RAS ``affine`` through the bundle's label filters.

        The affine gives the opening its voxel size in mm; the filters change no geometry.
        """
        from monai.data import MetaTensor

        if not self.filters:
            return labels
        out = MetaTensor(torch.from_numpy(labels)[None], affine=torch.as_tensor(affine, dtype=torch.float64))
        for f in self.filters:
            out = f({"pred": out})["pred"]
        return np.asarray(out[0].cpu().numpy() if isinstance(out, torch.Tensor) else out[0], dtype=np.uint8)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.no_grad():
            if self.bundle.amp:
                with torch.autocast(self.bundle.device.type):
                    yield
            else:
                yield

    def _inverter(self, transform: Any) -> Any:
        from monai.transforms import Invertd

        return Invertd(keys="pred", transform=transform, orig_keys="image", nearest_interp=False, to_tensor=True)

    def progress_total(self, volume: Volume) -> int:
        raise NotImplementedError

    def __call__(self, volume: Volume, probabilities: bool = False, progress: Any = None) -> Prediction:
        raise NotImplementedError


class WholeVolumePredictor(_Base):
    """The bundle's own pipeline on the whole volume: preprocessing, inferer, softmax, ``Invertd``, argmax.

    Args:
        bundle: the loaded bundle.
        tta: average the softmax over in-plane flips (:class:`~unet_monai.cli.bundle.FlipTTA`).
    """

    def __init__(self, bundle: LoadedBundle, tta: bool = False) -> None:
        super().__init__(bundle, tta)
        self.inverter = self._inverter(bundle.preprocessing)

    def progress_total(self, volume: Volume) -> int:
        return 3

    def __call__(self, volume: Volume, probabilities: bool = False, progress: Any = None) -> Prediction:
        bar = progress or _NullBar()
        try:
            data = self.bundle.preprocessing({"image": str(volume.nifti)})
        except Exception as e:
            error = _input_error(volume, e)
            if error is not None:
                raise error from e
            raise
        image = data["image"]
        bar.update(1)
        with self._inference():
            logits = self.bundle.inferer(image[None].to(self.bundle.device), self.network)
        prob = torch.softmax(logits[0].float(), dim=0)
        del logits
        bar.update(1)
        pred = self.inverter({"image": image, "pred": prob})["pred"]
        del prob
        labels = self._filter(torch.argmax(pred, dim=0).to(torch.uint8).cpu().numpy(), volume.affine)
        probs = _quantise(pred).permute(1, 2, 3, 0).cpu().numpy() if probabilities else None
        bar.update(1)
        return Prediction(labels.reshape(volume.spatial_shape), probs)


class SliceStreamPredictor(_Base):
    """A 2D bundle's pipeline applied to slabs of axial slices (see the module docstring).

    Args:
        bundle: a loaded 2D bundle whose preprocessing :func:`streaming_plan` accepts.
        tta: average the softmax over in-plane flips.
        slab_slices: slices per slab (rounded up to a multiple of the inferer's ``sw_batch_size``);
            memory per slab grows with it, the share of border slices computed twice shrinks.

    Raises:
        ValueError: the bundle's preprocessing cannot be streamed (the reason is given).
    """

    def __init__(self, bundle: LoadedBundle, tta: bool = False, slab_slices: int = 64) -> None:
        super().__init__(bundle, tta)
        plan = streaming_plan(bundle)
        if isinstance(plan, str):
            raise ValueError(f"cannot stream slices for {bundle.name}: {plan}.")
        self.tail, self.options = plan
        self.inverter = self._inverter(self.tail)
        self.half = int(bundle.inferer.num_slices) // 2
        batch = max(1, int(bundle.inferer.sw_batch_size))
        slab = batch * -(-max(slab_slices, 2 * self.half + 1) // batch)  # a multiple of the batch size
        self.step = max(1, slab - 2 * self.half)  # slices kept per slab

    def progress_total(self, volume: Volume) -> int:
        return ras_shape(volume.spatial_shape, volume.affine)[2]

    def _slab(self, volume: Volume, ras: np.ndarray, a: int, b: int) -> np.ndarray:
        slab = volume.scaled(np.ascontiguousarray(ras[:, :, a:b])).astype(self.options["dtype"], copy=False)
        if np.issubdtype(slab.dtype, np.floating):
            finite = np.isfinite(slab)
            if not finite.all():
                bad = int((~finite).sum())
                if self.options["nan_policy"] != "fill":
                    raise InputError(
                        volume.source,
                        f"the image holds non-finite voxels ({bad} NaN/Inf in slices {a}..{b - 1} of the RAS "
                        "volume); the bundle's nan_policy is 'error'.",
                    )
                logger.warning(
                    "%s: %d non-finite voxel(s) replaced by %g", volume.source, bad, self.options["fill_value"]
                )
                slab = np.where(finite, slab, np.asarray(self.options["fill_value"], slab.dtype))
        return slab

    def __call__(self, volume: Volume, probabilities: bool = False, progress: Any = None) -> Prediction:
        from monai.data import MetaTensor

        bar = progress or _NullBar()
        raw = volume.raw()
        ras = to_ras(raw, volume.affine)  # a view: flips and a transpose, no copy
        affine = ras_affine(volume.affine, raw.shape)
        nx, ny, depth = ras.shape
        labels = np.empty((nx, ny, depth), dtype=np.uint8)
        probs = np.empty((nx, ny, depth, self.bundle.num_classes), dtype=np.uint8) if probabilities else None
        for z0 in range(0, depth, self.step):
            z1 = min(depth, z0 + self.step)
            a, b = max(0, z0 - self.half), min(depth, z1 + self.half)
            shift = np.eye(4)
            shift[2, 3] = a
            image = MetaTensor(
                torch.from_numpy(self._slab(volume, ras, a, b))[None],
                affine=torch.as_tensor(affine @ shift, dtype=torch.float64),
                meta={"filename_or_obj": str(volume.source)},
            )
            x = self.tail({"image": image})["image"]
            with self._inference():
                logits = self.bundle.inferer(x[None], self.network)
            prob = torch.softmax(logits[0].float(), dim=0)
            pred = self.inverter({"image": x, "pred": prob})["pred"][..., z0 - a : z1 - a]
            labels[:, :, z0:z1] = torch.argmax(pred, dim=0).to(torch.uint8).cpu().numpy()
            if probs is not None:
                probs[:, :, z0:z1] = _quantise(pred).permute(1, 2, 3, 0).cpu().numpy()
            del image, x, logits, prob, pred
            bar.update(z1 - z0)
        out_labels = from_ras(self._filter(labels, affine), volume.affine)
        out_probs = from_ras(probs, volume.affine) if probs is not None else None
        return Prediction(out_labels, out_probs)


def make_predictor(bundle: LoadedBundle, tta: bool = False, stream: bool = True, slab_slices: int = 64) -> _Base:
    """The slice-streaming predictor for a 2D bundle that allows it (and ``stream``), else the whole-volume one."""
    if stream and bundle.spatial_dims == 2:
        plan = streaming_plan(bundle)
        if not isinstance(plan, str):
            return SliceStreamPredictor(bundle, tta, slab_slices)
        logger.info("streaming slices is not possible (%s): predicting whole volumes", plan)
    return WholeVolumePredictor(bundle, tta)
