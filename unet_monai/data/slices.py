"""2.5D training data for the slice networks: a slice dataset over cached volumes, and the matching inferer.

:class:`LiTSSliceDataset` preprocesses each volume ONCE with
:func:`~unet_monai.data.lits_2d_preprocessing` (load, validate, RAS, HU window, in-plane resize),
keeps the result as an axial-first ``(D, H, W)`` array (float16 by default) and serves single
slices with their neighbours as channels. The volumes are cached either in memory or, with
``cache_dir``, as ``.npy`` files on disk that later runs and other processes reuse; those files are
memory-mapped, so a sample reads only its ``num_slices`` slices and the operating system's page cache
is shared by DataLoader workers and DDP ranks.

:class:`SliceStackInferer` applies a 2D network to a whole preprocessed volume with exactly the same
neighbour stacking (:func:`~unet_monai.data.transforms.volume_to_slice_stack`), in batches of slices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import apply_transform

from unet_monai.data.lits import case_id_from_path
from unet_monai.data.pipelines import lits_2d_preprocessing
from unet_monai.data.transforms import (
    LABEL_VALUES,
    InvalidCaseError,
    slice_neighbours,
)
from unet_monai.utils.io import atomic_path, save_json_atomic

try:  # POSIX advisory locks let concurrent processes share the work of building a disk cache
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LiTSSliceDataset"]

logger = logging.getLogger(__name__)

# bumped when the preprocessing's output changes: 2 = in-plane anti-aliasing with replicated borders
CACHE_VERSION = 2


def _root_error(e: BaseException) -> BaseException:
    """The original error behind MONAI's ``RuntimeError("applying transform ...")`` wrappers."""
    while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
        e = e.__cause__
    return e


@dataclass
class _Volume:
    case: str
    shape: tuple[int, int, int]  # (D, H, W)
    foreground: np.ndarray  # slices whose label is not all background
    image: np.ndarray | None = None  # (D, H, W), in memory or memory-mapped
    label: np.ndarray | None = None  # (D, H, W) uint8
    files: tuple[str, str] | None = None  # disk cache: (image.npy, label.npy)
    extra: dict[str, Any] = field(default_factory=dict)


class LiTSSliceDataset(Dataset):
    """2.5D slices of LiTS-style volumes: each sample is an axial slice with its neighbours as channels.

    Each volume is preprocessed once by :func:`~unet_monai.data.lits_2d_preprocessing` ("val" mode
    with this dataset's ``spatial_size``, ``hu_window``, ``merge_tumour`` ...) and cached. The dataset
    indexes every slice that contains liver (label > 0) plus, per volume, a seeded random
    ``neg_fraction`` of the liver-free slices (negatives for the classification-guided module);
    ``neg_fraction=1`` gives all slices (validation). :meth:`set_epoch` redraws the negatives.

    Caching (measured in ``scripts/benchmark_data.py`` and ``docs/data.md``):

    - ``cache_dir=None``: the preprocessed volumes stay in memory (float16: 2 bytes per voxel at the
      network size). Fastest; every process holds its own copy.
    - ``cache_dir=path``: each volume is written once as ``<case>.<key>.image.npy`` / ``.label.npy``
      plus a ``.json`` index (all through ``atomic_path``), and memory-mapped. The key hashes the
      source files (path, size, modification time) and the preprocessing arguments, so a changed
      file or argument rebuilds that case, and an interrupted build leaves no partial entry. Several
      processes (DDP ranks) building the same cache share the work through per-case file locks.
      Use this for real LiTS and for multi-process training.

    Args:
        data: records ``{"image": path, "label": path, "case": id}`` (see :func:`~unet_monai.data.find_cases`).
        num_slices: channels per sample, odd (1, 3 or 5); border slices are replicated.
        spatial_size: in-plane size (H, W) the volumes are resized to, or ``None`` for the native size.
        hu_window: HU range mapped to [0, 1].
        neg_fraction: share of each volume's liver-free slices to include, in [0, 1].
        merge_tumour: map tumour (2) to liver (1), giving labels 0/1.
        cache_dir: folder of the disk cache, or ``None`` for the in-memory cache.
        transform: applied to each sample dict (e.g. :func:`~unet_monai.data.lits_2d_augmentation`).
        seed: seed of the negative-slice draw.
        crop_foreground: crop each volume to the body before resizing (see the preprocessing).
        label_values: allowed label values (checked on load).
        nan_policy: ``"error"`` or ``"fill"`` (see :class:`~unet_monai.data.transforms.ValidateCased`).
        cache_dtype: ``"float16"`` (default; at most 2.5e-4 off in [0, 1], about 0.1 HU) or ``"float32"``.
        num_workers: threads preprocessing volumes in parallel when building the cache.

    Each sample is ``{"image": (num_slices, H, W) float32 in [0, 1], "label": (1, H, W) int64,
    "case": id, "slice": z}`` before ``transform``.

    Raises:
        InvalidCaseError, FileNotFoundError: a case fails validation (the message names case and file).
        ValueError: invalid arguments or a record without a label.

    Example::

        train_ds = LiTSSliceDataset(train_list, num_slices=3, spatial_size=(256, 256), neg_fraction=0.1,
                                    cache_dir="cache/lits_2d", transform=lits_2d_augmentation())
        loader = monai.data.DataLoader(train_ds, batch_size=8, shuffle=True, num_workers=4)
    """

    def __init__(
        self,
        data: Sequence[dict[str, Any]],
        num_slices: int = 3,
        spatial_size: Sequence[int] | None = (256, 256),
        hu_window: Sequence[float] = (-200.0, 250.0),
        neg_fraction: float = 0.1,
        merge_tumour: bool = False,
        cache_dir: str | os.PathLike | None = None,
        transform: Callable | None = None,
        seed: int = 0,
        crop_foreground: bool = False,
        label_values: Sequence[int] = LABEL_VALUES,
        nan_policy: str = "error",
        cache_dtype: str = "float16",
        num_workers: int = 0,
    ) -> None:
        slice_neighbours([0], 1, num_slices)  # validates num_slices
        if not 0.0 <= float(neg_fraction) <= 1.0:
            raise ValueError(f"neg_fraction must be in [0, 1], got {neg_fraction}.")
        if cache_dtype not in ("float16", "float32"):
            raise ValueError(f"cache_dtype must be 'float16' or 'float32', got {cache_dtype!r}.")
        records = [dict(r) for r in data]
        for r in records:
            if "image" not in r or "label" not in r:
                raise ValueError(f"every record needs 'image' and 'label' for slice training, got {r!r}.")
            r.setdefault("case", case_id_from_path(str(r["image"])))
        super().__init__(data=records, transform=transform)
        self.num_slices = int(num_slices)
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.hu_window = tuple(float(h) for h in hu_window)
        self.neg_fraction = float(neg_fraction)
        self.merge_tumour = bool(merge_tumour)
        self.seed = int(seed)
        self.crop_foreground = bool(crop_foreground)
        self.label_values = tuple(int(v) for v in label_values)
        self.nan_policy = nan_policy
        self.cache_dtype = cache_dtype
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.preprocessing = lits_2d_preprocessing(
            "val",
            spatial_size=self.spatial_size,
            hu_window=self.hu_window,
            merge_tumour=self.merge_tumour,
            crop_foreground=self.crop_foreground,
            label_values=self.label_values,
            nan_policy=nan_policy,
        )
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.epoch = 0
        self._index = np.zeros((0, 2), dtype=np.int64)
        # first pass skips cases another process is building (per-case lock held), second pass waits for them
        if num_workers > 0 and len(records) > 1:
            with ThreadPoolExecutor(max_workers=int(num_workers)) as pool:
                volumes = list(pool.map(lambda i: self._prepare(i, blocking=False), range(len(records))))
        else:
            volumes = [self._prepare(i, blocking=False) for i in range(len(records))]
        self._volumes: list[_Volume] = [v if v is not None else self._prepare(i) for i, v in enumerate(volumes)]
        self.set_epoch(0)

    # ------------------------------------------------------------------ cache

    def _params(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "spatial_size": self.spatial_size,
            "hu_window": self.hu_window,
            "merge_tumour": self.merge_tumour,
            "crop_foreground": self.crop_foreground,
            "label_values": self.label_values,
            "nan_policy": self.nan_policy,
            "cache_dtype": self.cache_dtype,
        }

    def _cache_key(self, record: dict[str, Any]) -> str:
        sources = {}
        for k in ("image", "label"):
            p = Path(str(record[k]))
            st = p.stat() if p.exists() else None
            sources[k] = [str(p.resolve()), st.st_size if st else -1, st.st_mtime_ns if st else -1]
        blob = json.dumps({"sources": sources, "params": self._params()}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _preprocess(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Run the volume chain on one record and return axial-first (D, H, W) image and label arrays."""
        try:
            out = self.preprocessing(dict(record))
        except Exception as e:
            root = _root_error(e)
            if isinstance(root, InvalidCaseError | FileNotFoundError):
                raise root from None
            raise InvalidCaseError(
                str(record.get("case")), record.get("image"), f"preprocessing failed ({type(root).__name__}: {root})."
            ) from e
        image = out["image"].detach().cpu().numpy()[0]  # (H, W, D)
        label = out["label"].detach().cpu().numpy()[0]
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=self.cache_dtype)
        label = np.ascontiguousarray(np.moveaxis(np.rint(label), -1, 0).astype(np.uint8))
        return image, label

    @contextmanager
    def _lock(self, name: str, blocking: bool) -> Iterator[bool]:
        if fcntl is None or self.cache_dir is None:
            yield True
            return
        with open(self.cache_dir / f".{name}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_cached(self, stem: Path, case: str) -> _Volume | None:
        meta_path = stem.with_name(stem.name + ".json")
        if not meta_path.is_file():
            return None
        files = (str(stem.with_name(stem.name + ".image.npy")), str(stem.with_name(stem.name + ".label.npy")))
        try:
            meta = json.loads(meta_path.read_text())
            shape = tuple(int(s) for s in meta["shape"])
            for f in files:
                if np.load(f, mmap_mode="r").shape != shape:
                    raise ValueError(f"{f} does not hold shape {shape}")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            logger.warning("case %r: ignoring a broken cache entry %s (%s); rebuilding it", case, meta_path, e)
            return None
        fg = np.asarray(meta["foreground_slices"], dtype=np.int64)
        return _Volume(case=case, shape=shape, foreground=fg, files=files)  # type: ignore[arg-type]

    def _write_cached(self, stem: Path, record: dict[str, Any], image: np.ndarray, label: np.ndarray) -> _Volume:
        files = (str(stem.with_name(stem.name + ".image.npy")), str(stem.with_name(stem.name + ".label.npy")))
        for arr, f in zip((image, label), files):
            with atomic_path(f) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        fg = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        meta = {
            "case": record["case"],
            "shape": list(image.shape),
            "foreground_slices": fg.tolist(),
            "image": str(record["image"]),
            "label": str(record["label"]),
            "params": self._params(),
        }
        save_json_atomic(meta, stem.with_name(stem.name + ".json"))  # written last: marks the entry complete
        return _Volume(case=record["case"], shape=image.shape, foreground=fg, files=files)  # type: ignore[arg-type]

    def _prepare(self, i: int, blocking: bool = True) -> _Volume | None:
        record = self.data[i]
        case = str(record["case"])
        if self.cache_dir is None:
            image, label = self._preprocess(record)
            fg = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
            return _Volume(case=case, shape=image.shape, foreground=fg, image=image, label=label)  # type: ignore[arg-type]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in case)
        stem = self.cache_dir / f"{safe}.{self._cache_key(record)}"
        vol = self._read_cached(stem, case)
        if vol is not None:
            return vol
        with self._lock(stem.name, blocking=blocking) as locked:
            if not locked:
                return None  # another process is building this case
            vol = self._read_cached(stem, case)
            if vol is None:
                image, label = self._preprocess(record)
                vol = self._write_cached(stem, record, image, label)
                logger.info("cached %s %s in %s", case, image.shape, self.cache_dir)
        return vol

    def _arrays(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        vol = self._volumes[v]
        if vol.image is None or vol.label is None:
            assert vol.files is not None
            vol.image = np.load(vol.files[0], mmap_mode="r")
            vol.label = np.load(vol.files[1], mmap_mode="r")
        return vol.image, vol.label

    def __getstate__(self) -> dict[str, Any]:
        # memory-mapped arrays are re-opened in the receiving process instead of being copied
        state = self.__dict__.copy()
        state["_volumes"] = [
            _Volume(v.case, v.shape, v.foreground, None, None, v.files, v.extra) if v.files else v
            for v in self._volumes
        ]
        return state

    # ------------------------------------------------------------------ indexing

    def set_epoch(self, epoch: int) -> None:
        """Redraw each volume's liver-free slices with the seed ``(seed, epoch, volume)``; the length is unchanged."""
        self.epoch = int(epoch)
        rows = []
        for v, vol in enumerate(self._volumes):
            depth = vol.shape[0]
            bg = np.setdiff1d(np.arange(depth), vol.foreground)
            k = round(self.neg_fraction * bg.size)
            rng = np.random.default_rng([self.seed, self.epoch, v])
            neg = rng.choice(bg, size=k, replace=False) if 0 < k < bg.size else (bg if k else bg[:0])
            z = np.sort(np.concatenate([vol.foreground, neg]))
            rows.append(np.stack([np.full_like(z, v), z], axis=1))
        self._index = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)

    @property
    def cases(self) -> list[str]:
        """Case ids, one per volume."""
        return [v.case for v in self._volumes]

    @property
    def num_foreground_slices(self) -> int:
        """Slices with liver (label > 0) over all volumes."""
        return int(sum(v.foreground.size for v in self._volumes))

    def volume_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Preprocessed ``(D, H, W)`` per case."""
        return {v.case: tuple(v.shape) for v in self._volumes}  # type: ignore[misc]

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def _transform(self, index: int) -> dict[str, Any]:
        v, z = (int(x) for x in self._index[index])
        image, label = self._arrays(v)
        nb = slice_neighbours([z], image.shape[0], self.num_slices)[0]
        item: dict[str, Any] = {
            # torch converts float16 -> float32 about 7x faster than numpy
            "image": torch.from_numpy(image[nb]).float(),
            "label": torch.from_numpy(label[[z]]).long(),  # fancy indexing copies out of the read-only map
            "case": self._volumes[v].case,
            "slice": z,
        }
        return apply_transform(self.transform, item) if self.transform is not None else item
